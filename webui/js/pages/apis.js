// APIs: the list and the form, with the editor of dispatch nodes (one node
// is plain proxying; several are an aggregation run in batches).

import { resources } from "../api.js";
import { h, mount, uniqueId, fmtRate, fmtPct, fmtMs, fmtNum, isNum, badge, DASH } from "../dom.js";
import { poller } from "../stats.js";
import {
  inputField,
  numberField,
  checkboxField,
  selectField,
  selectInput,
  textareaField,
  optionalSection,
  section,
  readText,
  readNumber,
  readList,
  assign,
  LocalError,
} from "../forms.js";
import { pageHeader, loading, errorState, linkButton, emptyState, resourceTable, formPage, clone, chips } from "./common.js";
import { breakerSection } from "./servers.js";
import { corsSection, transformSection, mockSection } from "./apiedge.js";
import { authSections } from "./apiauth.js";
import { cacheSection } from "./apicache.js";

const METHODS = ["*", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

export async function renderApiList(outlet) {
  const header = pageHeader("APIs", {
    subtitle: "The URLs the gateway exposes and the clusters behind them.",
    actions: [linkButton("New API", "#/apis/new", "btn-primary")],
  });
  mount(outlet, header, loading());
  let apis;
  try {
    apis = await resources.list("apis");
  } catch (e) {
    mount(outlet, header, errorState(e, () => renderApiList(outlet)));
    return;
  }
  if (!apis.length) {
    mount(outlet, header, emptyState("No APIs yet. An API maps a URL pattern to one cluster, or aggregates several.", "Create an API", "#/apis/new"));
    return;
  }
  const live = {};
  const liveCell = (name, key) => {
    live[name] = live[name] || {};
    return (live[name][key] = h("span", null, DASH));
  };
  mount(
    outlet,
    header,
    resourceTable({
      kind: "apis",
      items: apis,
      columns: [
        { label: "Name", cell: (a) => h("a", { class: "strong", href: `#/apis/${encodeURIComponent(a.name)}/edit` }, a.name) },
        { label: "Route", cell: (a) => h("span", { class: "route" }, h("span", { class: "method" }, a.method || "*"), h("code", null, a.urlPattern), a.host ? h("span", { class: "muted" }, ` on ${a.host}`) : null) },
        {
          label: "Nodes",
          cell: (a) => [
            a.response ? badge(`mock ${a.response.status}`, "info") : null,
            (a.nodes || []).length > 1 ? badge(`aggregation \u00D7${a.nodes.length}`, "info") : null,
            a.websocket ? badge("WebSocket", "info", "relays WebSocket connections") : null,
            " ",
            chips([...new Set((a.nodes || []).map((n) => n.cluster))], (c) => `#/clusters/${encodeURIComponent(c)}/edit`),
          ],
        },
        {
          label: "Protection",
          cell: (a) => {
            const marks = [];
            if (a.rateLimit) marks.push(badge(`${a.rateLimit.rate}/s`, "muted", "rate limit"));
            if (a.maxQPS) marks.push(badge(`max ${a.maxQPS} QPS`, "muted"));
            if (a.ipAccess && ((a.ipAccess.allow || []).length || (a.ipAccess.deny || []).length)) marks.push(badge("IP rules", "muted"));
            if (a.circuitBreaker) marks.push(badge("breaker", "muted"));
            if (a.cors) marks.push(badge("CORS", "muted"));
            if (a.transform) marks.push(badge("transform", "muted"));
            if (a.cache) marks.push(badge(`cache ${a.cache.ttl}s${a.cache.store === "redis" ? " (Redis)" : ""}`, "muted", "response cache"));
            return marks.length ? h("span", { class: "chips" }, marks) : h("span", { class: "muted" }, "none");
          },
        },
        { label: "Requests/s", cell: (a) => liveCell(a.name, "rps"), className: "num" },
        { label: "Error rate", cell: (a) => liveCell(a.name, "errors"), className: "num" },
        { label: "p99", cell: (a) => liveCell(a.name, "p99"), className: "num" },
        // -- WebSocket pass-through: the API's tunnels (only when one has websocket) --
        ...(apis.some((a) => a.websocket) ? [{ label: "WebSockets", cell: (a) => liveCell(a.name, "ws"), className: "num" }] : []),
        { label: "Cache hits", cell: (a) => liveCell(a.name, "hits"), className: "num" },
      ],
    }),
  );
  return poller.subscribe((p) => {
    for (const a of apis) {
      const r = p.latest?.apis?.[a.name];
      const c = p.latest?.cum.apis[a.name];
      live[a.name].rps.textContent = fmtRate(r?.rps);
      live[a.name].errors.textContent = fmtPct(r?.errorRate);
      live[a.name].p99.textContent = fmtMs(r?.p99 ?? c?.latency.p99);
      if (live[a.name].ws) wsCell(live[a.name].ws, p, a.name);
      const ratio = p.latest?.data?.apis?.[a.name]?.cache?.hitRatio;
      live[a.name].hits.textContent = a.cache && typeof ratio === "number" ? fmtPct(ratio * 100) : DASH;
    }
  });
}

// -- WebSocket pass-through ------------------------------------------------------------

/** "12 KB/s", "3.4 MB/s": a byte rate for humans. */
function fmtBytesRate(x) {
  if (!isNum(x)) return DASH;
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (x >= 1000 && i < units.length - 1) {
    x /= 1000;
    i += 1;
  }
  return `${fmtNum(x, x < 10 ? 1 : 0)} ${units[i]}/s`;
}

/** The open tunnels of an API, with the bytes each way per second as the title. */
function wsCell(el, p, name) {
  const samples = p.samples || [];
  const cur = samples[samples.length - 1];
  const prev = samples[samples.length - 2];
  const ws = cur?.data?.apis?.[name]?.websocket;
  const before = prev?.data?.apis?.[name]?.websocket;
  el.textContent = ws ? fmtNum(ws.open) : DASH;
  const dt = cur && prev ? cur.t - prev.t : 0;
  const rate = (key) => (ws && before && dt > 0 && ws[key] >= before[key] ? (ws[key] - before[key]) / dt : undefined);
  el.title = ws
    ? `open tunnels; ${fmtNum(ws.opened)} opened, ${fmtNum(ws.overCap)} refused over the cap; ` +
      `up ${fmtBytesRate(rate("bytesUp"))}, down ${fmtBytesRate(rate("bytesDown"))}`
    : "";
}

/** The API form's WebSocket fields. */
function websocketSection(item) {
  const on = checkboxField({ label: "Relay WebSocket connections", field: "websocket", checked: !!item?.websocket, help: "Handshakes (Upgrade: websocket) go to the backend; after its 101, bytes flow both ways. Off: Upgrade is stripped." });
  const idle = numberField({ label: "Idle timeout (s)", field: "websocketIdleTimeout", value: item?.websocketIdleTimeout ?? 300, help: "without a byte either way; 0 = never" });
  const max = numberField({ label: "Max open", field: "maxWebsockets", value: item?.maxWebsockets ?? 0, help: "tunnels per proxy process; 0 = no limit" });
  const sync = () => {
    idle.el.hidden = max.el.hidden = !on.input.checked;
  };
  on.input.addEventListener("change", sync);
  sync();
  const el = section("WebSocket", null, on.el, idle.el, max.el);
  const collect = (out) => {
    out.websocket = on.input.checked;
    assign(out, "websocketIdleTimeout", readNumber(idle.input));
    assign(out, "maxWebsockets", readNumber(max.input));
  };
  return { el, collect };
}

// -- the node editor ---------------------------------------------------------------

const NODE_DEFAULTS = { cluster: "", urlRewrite: null, attrName: null, timeout: 30, required: true, batch: 0, retries: 1, retryOn: [], default: null };

/** "502, 503" -> [502, 503]; what is not a number is kept as text, for the admin to refuse. */
function readStatuses(input) {
  return input.value
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((x) => (/^\d+$/.test(x) ? Number(x) : x));
}

/**
 * Rows of nodes: cluster, URL rewrite, attribute name, timeout, required,
 * batch, retries, the statuses retried; add, remove and reorder them.
 */
function nodeEditor(initial, clusterNames) {
  const nodes = (initial && initial.length ? initial : [{ ...NODE_DEFAULTS, cluster: clusterNames[0] || "" }]).map((n) => ({ data: clone(n), key: uniqueId("node") }));
  const errId = uniqueId("err");
  const tbody = h("tbody");
  const plan = h("div", { class: "plan", "aria-live": "polite" });
  const clusterOptions = [["", "Choose a cluster\u2026"], ...clusterNames];

  function cell(control) {
    return h("td", { dataset: { errorScope: "" } }, control, h("p", { class: "field-error", hidden: true }));
  }

  function render() {
    const rows = nodes.map((node, i) => {
      const n = node.data;
      const label = `Node ${i + 1}`;
      const bind = (input, key, read) => {
        input.addEventListener("input", () => {
          try {
            n[key] = read(input);
          } catch {
            // Checked again on submit.
          }
          renderPlan();
        });
        input.addEventListener("change", () => renderPlan());
        return input;
      };
      const cluster = bind(selectInput({ field: `nodes[${i}].cluster`, value: n.cluster, options: clusterOptions, label: `${label} cluster` }), "cluster", (x) => x.value);
      const rewrite = bind(h("input", { type: "text", value: n.urlRewrite ?? "", placeholder: "/same path", "aria-label": `${label} URL rewrite`, dataset: { field: `nodes[${i}].urlRewrite` }, spellcheck: "false" }), "urlRewrite", (x) => x.value.trim() || null);
      const attr = bind(h("input", { type: "text", value: n.attrName ?? "", placeholder: nodes.length > 1 ? "required" : "optional", "aria-label": `${label} attribute name`, dataset: { field: `nodes[${i}].attrName` }, spellcheck: "false" }), "attrName", (x) => x.value.trim() || null);
      const timeout = bind(h("input", { type: "number", step: "any", class: "narrow", value: n.timeout ?? "", "aria-label": `${label} timeout in seconds`, dataset: { field: `nodes[${i}].timeout` } }), "timeout", readNumber);
      const required = bind(h("input", { type: "checkbox", checked: n.required !== false, "aria-label": `${label} required`, dataset: { field: `nodes[${i}].required` } }), "required", (x) => x.checked);
      const batch = bind(h("input", { type: "number", step: "1", class: "narrow", value: n.batch ?? 0, "aria-label": `${label} batch`, dataset: { field: `nodes[${i}].batch` } }), "batch", readNumber);
      const retries = bind(h("input", { type: "number", step: "1", class: "narrow", value: n.retries ?? 1, "aria-label": `${label} retries`, dataset: { field: `nodes[${i}].retries` } }), "retries", readNumber);
      const retryOn = bind(h("input", { type: "text", class: "narrow", value: (n.retryOn || []).join(", "), placeholder: "502, 503", "aria-label": `${label} statuses retried`, dataset: { field: `nodes[${i}].retryOn` }, spellcheck: "false" }), "retryOn", readStatuses);
      const fallback = h("input", { type: "text", value: n.default === null || n.default === undefined ? "" : JSON.stringify(n.default), placeholder: "null", "aria-label": `${label} default (JSON) when it fails`, dataset: { field: `nodes[${i}].default` }, spellcheck: "false" });
      const move = (delta) => {
        const j = i + delta;
        [nodes[i], nodes[j]] = [nodes[j], nodes[i]];
        render();
        tbody.querySelectorAll("tr")[j]?.querySelector(delta < 0 ? ".move-up" : ".move-down")?.focus();
      };
      return h(
        "tr",
        { dataset: { node: String(i) } },
        h("td", { class: "idx" }, String(i + 1)),
        cell(cluster),
        cell(rewrite),
        cell(attr),
        cell(timeout),
        h("td", { class: "center", dataset: { errorScope: "" } }, required, h("p", { class: "field-error", hidden: true })),
        cell(batch),
        cell(retries),
        cell(retryOn),
        cell(fallback),
        h(
          "td",
          { class: "row-buttons" },
          h("button", { type: "button", class: "btn btn-icon move-up", disabled: i === 0, "aria-label": `Move ${label} up`, title: "Move up", onClick: () => move(-1) }, "\u2191"),
          h("button", { type: "button", class: "btn btn-icon move-down", disabled: i === nodes.length - 1, "aria-label": `Move ${label} down`, title: "Move down", onClick: () => move(1) }, "\u2193"),
          h(
            "button",
            {
              type: "button",
              class: "btn btn-small btn-ghost-danger",
              disabled: nodes.length === 1,
              "aria-label": `Remove ${label}`,
              onClick: () => {
                nodes.splice(i, 1);
                render();
              },
            },
            "Remove",
          ),
        ),
      );
    });
    tbody.replaceChildren(...rows);
    renderPlan();
  }

  function renderPlan() {
    if (nodes.length === 1) {
      const n = nodes[0].data;
      mount(plan, h("span", { class: "plan-label" }, "Plain proxying"), " to ", h("strong", null, n.cluster || "?"), n.urlRewrite ? [" as ", h("code", null, n.urlRewrite)] : " (same path)");
      return;
    }
    const batches = new Map();
    for (const { data: n } of nodes) {
      const b = Number.isFinite(Number(n.batch)) ? Number(n.batch) : 0;
      if (!batches.has(b)) batches.set(b, []);
      batches.get(b).push(n);
    }
    const order = [...batches.keys()].sort((a, b) => a - b);
    mount(
      plan,
      h("span", { class: "plan-label" }, "Aggregation plan"),
      h(
        "ol",
        { class: "plan-steps" },
        order.map((b) =>
          h(
            "li",
            null,
            h("span", { class: "plan-batch" }, `Batch ${b}`),
            batches.get(b).map((n) => h("span", { class: ["plan-node", n.required === false && "optional"], title: n.required === false ? "optional: a failure gives null" : "required" }, h("strong", null, n.attrName || "?"), ` \u2190 ${n.cluster || "?"}`)),
          ),
        ),
      ),
    );
  }

  render();
  const el = h(
    "fieldset",
    { class: "section section-on nodes-editor", dataset: { field: "nodes", errorScope: "" }, "aria-describedby": errId },
    h("legend", null, "Dispatch nodes"),
    h("p", { class: "help" }, "One node proxies to a cluster. Several nodes make an aggregation: their JSON answers are merged under each node's attribute name. Nodes of the same batch run concurrently; lower batches run first. A failed optional node becomes its default (null when it has none)."),
    h("p", { class: "field-error", id: errId, hidden: true }),
    h(
      "div",
      { class: "table-scroll" },
      h(
        "table",
        { class: "table table-edit" },
        h(
          "thead",
          null,
          h(
            "tr",
            null,
            h("th", { scope: "col" }, "#"),
            h("th", { scope: "col" }, "Cluster"),
            h("th", { scope: "col" }, "URL rewrite"),
            h("th", { scope: "col" }, "Attribute name"),
            h("th", { scope: "col" }, "Timeout (s)"),
            h("th", { scope: "col" }, "Required"),
            h("th", { scope: "col" }, "Batch"),
            h("th", { scope: "col" }, "Retries"),
            h("th", { scope: "col", title: "statuses that send the request to another server" }, "Retry on"),
            h("th", { scope: "col", title: "JSON an optional node gives when it fails (instead of null)" }, "Default"),
            h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Row actions")),
          ),
        ),
        tbody,
      ),
    ),
    h(
      "div",
      { class: "editor-footer" },
      h(
        "button",
        {
          type: "button",
          class: "btn",
          onClick: () => {
            const last = nodes[nodes.length - 1]?.data;
            nodes.push({ data: { ...NODE_DEFAULTS, cluster: "", batch: last ? last.batch : 0 }, key: uniqueId("node") });
            render();
            tbody.lastElementChild?.querySelector("select")?.focus();
          },
        },
        "Add node",
      ),
      plan,
    ),
  );

  const collect = () =>
    Array.from(tbody.querySelectorAll("tr")).map((tr, i) => {
      const out = clone(nodes[i].data);
      const q = (key) => tr.querySelector(`[data-field="nodes[${i}].${key}"]`);
      assign(out, "cluster", q("cluster").value || undefined);
      out.urlRewrite = readText(q("urlRewrite")) ?? null;
      out.attrName = readText(q("attrName")) ?? null;
      assign(out, "timeout", readNumber(q("timeout")));
      out.required = q("required").checked;
      assign(out, "batch", readNumber(q("batch")));
      assign(out, "retries", readNumber(q("retries")));
      out.retryOn = readStatuses(q("retryOn"));
      const fallback = q("default").value.trim();
      try {
        out.default = fallback ? JSON.parse(fallback) : null;
      } catch (e) {
        throw new LocalError(`nodes[${i}].default`, `invalid JSON: ${e.message}`);
      }
      return out;
    });
  return { el, collect };
}

// -- filters ---------------------------------------------------------------------------

function filterEditor(initial) {
  const rows = (initial || []).map((f) => clone(f));
  const list = h("div", { class: "filter-rows" });
  function render() {
    list.replaceChildren(
      ...rows.map((f, i) => {
        const name = inputField({ label: `Filter ${i + 1} plugin name`, field: `filters[${i}].name`, value: f.name });
        const config = textareaField({ label: "Config (JSON object)", field: `filters[${i}].config`, value: JSON.stringify(f.config || {}, null, 2), rows: 2, wide: false });
        name.input.addEventListener("input", () => (f.name = name.input.value.trim()));
        config.input.addEventListener("input", () => (f._configText = config.input.value));
        return h(
          "div",
          { class: "filter-row" },
          name.el,
          config.el,
          h("button", { type: "button", class: "btn btn-small btn-ghost-danger", "aria-label": `Remove filter ${i + 1}`, onClick: () => { rows.splice(i, 1); render(); } }, "Remove"),
        );
      }),
    );
  }
  render();
  const el = h(
    "fieldset",
    { class: "section section-on", dataset: { field: "filters", errorScope: "" } },
    h("legend", null, "Filters"),
    h("p", { class: "help" }, "Filter plugins run for this API only, in order, after the global ones."),
    h("p", { class: "field-error", hidden: true }),
    list,
    h("button", { type: "button", class: "btn", onClick: () => { rows.push({ name: "", config: {} }); render(); list.lastElementChild?.querySelector("input")?.focus(); } }, "Add filter"),
  );
  const collect = () =>
    rows.map((f, i) => {
      const out = clone(f);
      delete out._configText;
      let config = f.config || {};
      if (f._configText !== undefined) {
        try {
          config = f._configText.trim() ? JSON.parse(f._configText) : {};
        } catch (e) {
          throw new LocalError(`filters[${i}].config`, `invalid JSON: ${e.message}`);
        }
      }
      out.config = config;
      return out;
    });
  return { el, collect };
}

// -- the form ------------------------------------------------------------------------------

export function renderApiForm(outlet, params) {
  return formPage({
    outlet,
    kind: "apis",
    name: params.name,
    description: "A URL pattern the gateway exposes, and where its requests go.",
    loadExtra: async () => ({ clusters: await resources.list("clusters") }),
    build(item, extra) {
      const editing = !!item;
      const name = inputField({ label: "Name", field: "name", value: item?.name, required: true, disabled: editing, help: editing ? "The name cannot change." : "Letters, digits, - _ and ." });
      const pattern = inputField({ label: "URL pattern", field: "urlPattern", value: item?.urlPattern, required: true, placeholder: "/users/{id}", help: "/users/{id}, /users/{id:int}, /files/*" });
      const method = selectField({ label: "Method", field: "method", value: item?.method || "*", options: METHODS.map((m) => [m, m === "*" ? "* (any)" : m]) });
      const host = inputField({ label: "Host", field: "host", value: item?.host, placeholder: "any host", help: "example.com or *.example.com" });
      const maxQPS = numberField({ label: "Max QPS", field: "maxQPS", value: item?.maxQPS ?? 0, help: "0 = no limit" });
      const nodes = nodeEditor(item?.nodes, extra.clusters.map((c) => c.name));

      const rl = item?.rateLimit || { rate: 10, burst: null, key: "none", onLimit: "reject", maxWait: 1 };
      const keyKind = rl.key && rl.key.startsWith("header:") ? "header" : rl.key || "none";
      const rf = {
        rate: numberField({ label: "Rate (per second)", field: "rateLimit.rate", value: rl.rate }),
        burst: numberField({ label: "Burst", field: "rateLimit.burst", value: rl.burst, help: "default: the rate" }),
        key: selectField({ label: "Per", field: "rateLimit.key", value: keyKind, options: [["none", "whole API"], ["ip", "client IP"], ["consumer", "consumer (needs authentication)"], ["header", "header value"]] }),
        header: inputField({ label: "Header name", field: "rateLimit.keyHeader", value: keyKind === "header" ? rl.key.slice(7) : "", placeholder: "X-API-Key" }),
        onLimit: selectField({ label: "Over the limit", field: "rateLimit.onLimit", value: rl.onLimit, options: [["reject", "reject (429)"], ["queue", "queue (wait)"]] }),
        maxWait: numberField({ label: "Max wait (s)", field: "rateLimit.maxWait", value: rl.maxWait }),
      };
      const syncKey = () => {
        rf.header.el.hidden = rf.key.input.value !== "header";
        rf.maxWait.el.hidden = rf.onLimit.input.value !== "queue";
      };
      rf.key.input.addEventListener("change", syncKey);
      rf.onLimit.input.addEventListener("change", syncKey);
      syncKey();
      const rate = optionalSection({ title: "Rate limit", field: "rateLimit", enabled: !!item?.rateLimit, description: "A token bucket; over the limit answers 429 with Retry-After.", children: Object.values(rf).map((x) => x.el) });

      const ia = item?.ipAccess || { allow: [], deny: [] };
      const allow = textareaField({ label: "Allow", field: "ipAccess.allow", value: (ia.allow || []).join("\n"), placeholder: "10.0.0.0/8", help: "one CIDR per line; empty allows everyone not denied", wide: false });
      const deny = textareaField({ label: "Deny", field: "ipAccess.deny", value: (ia.deny || []).join("\n"), placeholder: "192.0.2.7/32", help: "one CIDR per line; deny wins", wide: false });
      const access = optionalSection({ title: "IP access", field: "ipAccess", enabled: !!item?.ipAccess, children: [allow.el, deny.el] });
      const breaker = breakerSection("circuitBreaker", item?.circuitBreaker, "this API");
      const filters = filterEditor(item?.filters);
      const cors = corsSection(item?.cors);
      const transform = transformSection(item?.transform);
      const mock = mockSection(item?.response, (on) => (nodes.el.hidden = on));
      nodes.el.hidden = mock.enabled;
      const authUI = authSections(item);
      const websocket = websocketSection(item);
      const cache = cacheSection(item);

      const fields = [
        section("Route", null, name.el, pattern.el, method.el, host.el, maxQPS.el),
        nodes.el,
        mock.el,
        websocket.el,
        h("details", { class: "more", open: !!(item?.rateLimit || item?.ipAccess || item?.circuitBreaker || (item?.filters || []).length) }, h("summary", null, "Protection and filters"), rate.el, access.el, breaker.el, filters.el),
        h("details", { class: "more", open: !!(item?.auth || item?.acl) }, h("summary", null, "Authentication and ACL"), ...authUI.els),
        h("details", { class: "more", open: !!(item?.cors || item?.transform) }, h("summary", null, "CORS and header transformation"), cors.el, transform.el),
        h("details", { class: "more", open: !!item?.cache }, h("summary", null, "Response cache"), cache.el),
      ];
      const collect = () => {
        const out = clone(item);
        assign(out, "name", readText(name.input));
        assign(out, "urlPattern", readText(pattern.input));
        out.method = method.input.value;
        out.host = readText(host.input) ?? null;
        assign(out, "maxQPS", readNumber(maxQPS.input));
        out.nodes = mock.enabled ? [] : nodes.collect();
        out.response = mock.collect();
        if (rate.enabled) {
          const v = clone(item?.rateLimit);
          assign(v, "rate", readNumber(rf.rate.input));
          v.burst = readNumber(rf.burst.input) ?? null;
          const kind = rf.key.input.value;
          if (kind === "header") {
            const headerName = readText(rf.header.input);
            if (!headerName) throw new LocalError("rateLimit.keyHeader", "name the header to limit by");
            v.key = `header:${headerName}`;
          } else {
            v.key = kind;
          }
          v.onLimit = rf.onLimit.input.value;
          assign(v, "maxWait", readNumber(rf.maxWait.input));
          out.rateLimit = v;
        } else {
          out.rateLimit = null;
        }
        out.ipAccess = access.enabled ? { ...clone(item?.ipAccess), allow: readList(allow.input), deny: readList(deny.input) } : null;
        out.circuitBreaker = breaker.collect(item?.circuitBreaker);
        out.filters = filters.collect();
        authUI.collect(out);
        out.cors = cors.collect();
        out.transform = transform.collect();
        websocket.collect(out);
        out.cache = cache.collect();
        return out;
      };
      return { fields, collect };
    },
  });
}
