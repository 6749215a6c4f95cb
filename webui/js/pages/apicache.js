// An API's response cache in the API form: its settings, what it did
// (hits, misses, the hit ratio, from the stats) and a button that purges it.

import { call, fetchStats } from "../api.js";
import { h, mount, toast, fmtPct, isNum } from "../dom.js";
import { numberField, selectField, textareaField, optionalSection, readNumber, readList, assign } from "../forms.js";
import { clone } from "./common.js";

const STORES = [
  ["memory", "memory (per proxy process)"],
  ["redis", "Redis (every gateway)"],
];

const REQUEST_DIRECTIVES = [
  ["ignore", "ignore (as CDNs do)"],
  ["honour", "honour no-cache, max-age=0, no-store"],
];

/** Hits and the hit ratio of an API's cache, from its stats entry, as text. */
export function cacheSummary(counts) {
  if (!counts) return "No answer counted yet.";
  const ratio = isNum(counts.hitRatio) ? fmtPct(counts.hitRatio * 100) : "\u2013";
  const parts = [`hit ratio ${ratio}`, `${counts.hit} hits`, `${counts.collapsed} collapsed`, `${counts.miss} misses`, `${counts.stale} stale (${counts.revalidated} revalidated)`, `${counts.bypass} bypassed`, `${counts.stored} stored`];
  return parts.join(", ");
}

/** Purge an API's cache through the admin; says what was done in a toast. */
async function purge(name, button) {
  button.disabled = true;
  try {
    const done = await call("DELETE", `/apis/${encodeURIComponent(name)}/cache`);
    const where = done.redis ? "and in Redis, for every gateway" : "(no Redis: this gateway only)";
    toast(`Purged the cache of ${name}: ${done.entries} entries in memory ${where}`);
  } catch (e) {
    if (e.status !== 401) toast(`Cannot purge the cache of ${name}: ${e.message}`, "error");
  } finally {
    button.disabled = false;
  }
}

/**
 * The "Response cache" section of the API form.
 * @param item the API as stored, or null for a new one.
 */
export function cacheSection(item) {
  const c = item?.cache || { ttl: 60, maxBodySize: 1048576, varyOn: [], store: "memory", keepStale: 300, collapseTimeout: 5, requestCacheControl: "ignore" };
  const ttl = numberField({ label: "TTL (s)", field: "cache.ttl", value: c.ttl, help: "fresh this long when the backend gives no max-age, s-maxage or Expires" });
  const maxBodySize = numberField({ label: "Max body size (bytes)", field: "cache.maxBodySize", value: c.maxBodySize, help: "larger answers are sent on, not stored" });
  const store = selectField({ label: "Store", field: "cache.store", value: c.store, options: STORES });
  const varyOn = textareaField({ label: "Vary on", field: "cache.varyOn", value: (c.varyOn || []).join("\n"), rows: 2, placeholder: "header:Accept-Language\nquery:page\nconsumer", help: "what else keys an entry besides the URL, one per line: header:NAME, query:NAME, consumer" });
  const keepStale = numberField({ label: "Keep stale (s)", field: "cache.keepStale", value: c.keepStale, help: "a stale entry with an ETag or Last-Modified is revalidated this long" });
  const collapseTimeout = numberField({ label: "Collapse wait (s)", field: "cache.collapseTimeout", value: c.collapseTimeout, help: "concurrent misses wait this long for the first one's answer; 0: no collapsing" });
  const requestCC = selectField({ label: "Client's Cache-Control", field: "cache.requestCacheControl", value: c.requestCacheControl, options: REQUEST_DIRECTIVES });
  const children = [ttl.el, maxBodySize.el, store.el, varyOn.el, keepStale.el, collapseTimeout.el, requestCC.el];
  if (item?.cache) {
    const summary = h("p", { class: "help", dataset: { cacheSummary: "" } }, "Loading what the cache did\u2026");
    const button = h("button", { type: "button", class: "btn", onClick: () => purge(item.name, button) }, "Purge cache");
    children.push(h("div", { class: "field-wide editor-footer" }, button, summary));
    fetchStats()
      .then((stats) => mount(summary, cacheSummary(stats?.apis?.[item.name]?.cache)))
      .catch(() => mount(summary, "The statistics are not available."));
  }
  const sec = optionalSection({
    title: "Response cache",
    field: "cache",
    enabled: !!item?.cache,
    description: "Answers to GET (and HEAD) kept and served again while fresh, as a shared HTTP cache (RFC 9111): after authentication and limits, the backend's Cache-Control and Vary obeyed, concurrent misses collapsed. Each answer says what the cache did in its Cache-Status header.",
    children,
  });
  const collect = () => {
    if (!sec.enabled) return null;
    const out = clone(item?.cache);
    assign(out, "ttl", readNumber(ttl.input));
    assign(out, "maxBodySize", readNumber(maxBodySize.input));
    out.store = store.input.value;
    out.varyOn = readList(varyOn.input);
    assign(out, "keepStale", readNumber(keepStale.input));
    assign(out, "collapseTimeout", readNumber(collapseTimeout.input));
    out.requestCacheControl = requestCC.input.value;
    return out;
  };
  return { el: sec.el, collect };
}
