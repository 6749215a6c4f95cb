// Servers found by DNS discovery, as the stats show them: each address of a
// server's host name ("users@10.0.0.5"), each server of a cluster's SRV
// records ("users@10.0.0.5:8080"). They are no resources of the store: the
// UI shows them under the server or the cluster they come from.

import { h, fmtNum, badge, DASH } from "../dom.js";
import { healthBadge, breakerBadge } from "./common.js";

/**
 * The discovered servers of a server (A) or of a cluster (SRV), from a stats
 * sample's data, sorted (an SRV cluster's by priority).
 * @param {object|undefined} data the /api/v1/stats answer.
 * @param {{server?: string, cluster?: string}} owner
 * @returns {Array<[string, object]>}
 */
export function discoveredOf(data, { server, cluster }) {
  const found = Object.entries(data?.servers || {}).filter(([, s]) => {
    const d = s?.discovered;
    if (!d) return false;
    return server !== undefined ? d.server === server : d.cluster === cluster;
  });
  const rank = ([name, s]) => [s.discovered.priority ?? 0, name];
  return found.sort((a, b) => {
    const [pa, na] = rank(a);
    const [pb, nb] = rank(b);
    return pa - pb || na.localeCompare(nb);
  });
}

/** The worst tone of several servers' states, for a chip. */
export function worstTone(entries) {
  let tone = entries.length ? "chip-ok" : null;
  for (const [, s] of entries) {
    if (s.healthy === false || s.breaker?.state === "open") return "chip-bad";
    if (s.ejected || s.breaker?.state === "half-open") tone = "chip-warn";
  }
  return tone;
}

/** Chips of discovered servers (no link: they have no page of their own). */
export function discoveredChips(entries) {
  if (!entries.length) return h("span", { class: "muted" }, "none found yet");
  return h(
    "span",
    { class: "chips" },
    entries.map(([name, s]) => h("span", { class: ["chip", worstTone([[name, s]])], title: s.addr || "", dataset: { discovered: name } }, name)),
  );
}

/** A table of discovered servers with their live state. */
export function discoveredTable(entries, { srv = false } = {}) {
  if (!entries.length) return h("p", { class: "muted" }, "No address found yet (or the DNS has none).");
  const head = ["Server", "Address", ...(srv ? ["Target", "Priority", "Weight"] : []), "Health", "Circuit breaker", "Requests"];
  return h(
    "table",
    { class: "table table-compact", dataset: { discoveredTable: "" } },
    h("thead", null, h("tr", null, head.map((x) => h("th", { scope: "col" }, x)))),
    h(
      "tbody",
      null,
      entries.map(([name, s]) =>
        h(
          "tr",
          { dataset: { discovered: name } },
          h("td", null, h("strong", null, name)),
          h("td", null, h("code", null, s.addr || DASH)),
          srv ? [h("td", null, s.discovered.target || DASH), h("td", { class: "num" }, fmtNum(s.discovered.priority)), h("td", { class: "num" }, fmtNum(s.discovered.weight))] : null,
          h("td", null, healthBadge(s)),
          h("td", null, breakerBadge(s)),
          h("td", { class: "num" }, fmtNum(s.requests)),
        ),
      ),
    ),
  );
}

/** What the DNS said of a name: its TTL and whether its lookups fail. */
export function lookupLine(data, kind, dns) {
  const state = data?.discovery?.[kind]?.[dns?.replace(/\.$/, "").toLowerCase()];
  if (!state) return h("span", { class: "muted" }, "not looked up yet");
  if (state.failingSince) {
    return badge(`lookups failing (${state.failures}), keeping the last answer`, "warn", state.error || "");
  }
  return h("span", { class: "muted" }, `TTL ${fmtNum(state.ttl, state.ttl < 10 ? 1 : 0)} s`);
}
