// Clusters: the list and the form (a checklist of servers, a balancer).

import { resources } from "../api.js";
import { h, mount, uniqueId, DASH } from "../dom.js";
import { poller } from "../stats.js";
import { inputField, selectField, section, readText, assign } from "../forms.js";
import { pageHeader, loading, errorState, linkButton, emptyState, resourceTable, formPage, clone, chips } from "./common.js";

export const LOAD_BALANCERS = [
  ["round-robin", "Round robin"],
  ["weighted-round-robin", "Weighted round robin"],
  ["least-connections", "Least connections"],
  ["ip-hash", "IP hash (sticky)"],
  ["random", "Random"],
  ["p2c-ewma", "Power of two choices (latency EWMA)"],
];

function serverTone(name) {
  const s = poller.latest?.data?.servers?.[name];
  if (!s) return null;
  if (s.healthy === false || s.breaker?.state === "open") return "chip-bad";
  if (s.ejected || s.breaker?.state === "half-open") return "chip-warn";
  return "chip-ok";
}

export async function renderClusterList(outlet) {
  const header = pageHeader("Clusters", {
    subtitle: "Sets of servers that serve the same thing, and how one is picked.",
    actions: [linkButton("New cluster", "#/clusters/new", "btn-primary")],
  });
  mount(outlet, header, loading());
  let clusters;
  let apis;
  let routings;
  try {
    [clusters, apis, routings] = await Promise.all([resources.list("clusters"), resources.list("apis"), resources.list("routings")]);
  } catch (e) {
    mount(outlet, header, errorState(e, () => renderClusterList(outlet)));
    return;
  }
  if (!clusters.length) {
    mount(outlet, header, emptyState("No clusters yet. A cluster groups servers behind one name that APIs send to.", "Create a cluster", "#/clusters/new"));
    return;
  }
  const usedBy = (name) => [
    ...apis.filter((a) => (a.nodes || []).some((n) => n.cluster === name)).map((a) => ["apis", a.name]),
    ...routings.filter((r) => r.cluster === name).map((r) => ["routings", r.name]),
  ];
  const balancer = Object.fromEntries(LOAD_BALANCERS);
  mount(
    outlet,
    header,
    resourceTable({
      kind: "clusters",
      items: clusters,
      columns: [
        { label: "Name", cell: (c) => h("a", { class: "strong", href: `#/clusters/${encodeURIComponent(c.name)}/edit` }, c.name) },
        { label: "Load balancing", cell: (c) => balancer[c.loadBalance] || c.loadBalance || DASH },
        { label: "Servers", cell: (c) => chips(c.servers, (s) => `#/servers/${encodeURIComponent(s)}`, serverTone) },
        {
          label: "Used by",
          cell: (c) => {
            const users = usedBy(c.name);
            if (!users.length) return h("span", { class: "muted" }, "unused");
            return h("span", { class: "chips" }, users.map(([k, n]) => h("a", { class: "chip chip-plain", href: `#/${k}/${encodeURIComponent(n)}/edit` }, `${k === "apis" ? "API" : "routing"} ${n}`)));
          },
        },
      ],
    }),
  );
}

export function renderClusterForm(outlet, params) {
  return formPage({
    outlet,
    kind: "clusters",
    name: params.name,
    description: "The servers behind one name, and the algorithm that picks one per request.",
    loadExtra: async () => ({ servers: await resources.list("servers") }),
    build(item, extra) {
      const editing = !!item;
      const name = inputField({ label: "Name", field: "name", value: item?.name, required: true, disabled: editing, help: editing ? "The name cannot change." : "Letters, digits, - _ and ." });
      const lb = selectField({ label: "Load balancing", field: "loadBalance", value: item?.loadBalance || "round-robin", options: LOAD_BALANCERS });
      const selected = new Set(item?.servers || []);
      const known = extra.servers.map((s) => s.name);
      const names = [...known, ...[...selected].filter((n) => !known.includes(n))];
      const addrOf = Object.fromEntries(extra.servers.map((s) => [s.name, s.addr]));
      const boxes = names.map((n) => {
        const id = uniqueId("srv");
        const box = h("input", { id, type: "checkbox", value: n, checked: selected.has(n), dataset: { field: selected.has(n) ? `servers[${[...selected].indexOf(n)}]` : "" } });
        return {
          name: n,
          box,
          el: h("label", { class: "check-card", for: id }, box, h("span", null, h("strong", null, n), h("span", { class: "muted" }, addrOf[n] || "missing server"))),
        };
      });
      const errId = uniqueId("err");
      const serverList = h(
        "fieldset",
        { class: "field field-wide checklist", dataset: { field: "servers", errorScope: "" }, "aria-describedby": errId },
        h("legend", null, "Servers"),
        boxes.length ? h("div", { class: "check-grid" }, boxes.map((b) => b.el)) : h("p", { class: "muted" }, "No servers yet: ", h("a", { href: "#/servers/new" }, "create one first"), "."),
        h("p", { class: "field-error", id: errId, hidden: true }),
      );
      const fields = [section("Cluster", null, name.el, lb.el, serverList)];
      const collect = () => {
        const out = clone(item);
        assign(out, "name", readText(name.input));
        assign(out, "loadBalance", lb.input.value);
        out.servers = boxes.filter((b) => b.box.checked).map((b) => b.name);
        // The API names servers by their index in the list sent.
        for (const b of boxes) b.box.dataset.field = "";
        out.servers.forEach((n, i) => {
          boxes.find((b) => b.name === n).box.dataset.field = `servers[${i}]`;
        });
        return out;
      };
      return { fields, collect };
    },
  });
}
