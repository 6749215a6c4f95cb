// Routings: the list and the form, with a builder of conditions (rows of
// source, name, operator and value, all AND-ed).

import { resources } from "../api.js";
import { h, mount, uniqueId, badge } from "../dom.js";
import { inputField, numberField, selectField, selectInput, section, readText, readNumber, assign } from "../forms.js";
import { pageHeader, loading, errorState, linkButton, emptyState, resourceTable, formPage, clone } from "./common.js";

export const SOURCES = [
  ["header", "Header"],
  ["cookie", "Cookie"],
  ["query", "Query parameter"],
  ["path", "Path parameter"],
  ["json", "JSON body field"],
  ["method", "Method"],
];
export const OPS = [
  ["eq", "equals"],
  ["ne", "does not equal"],
  ["lt", "<"],
  ["le", "\u2264"],
  ["gt", ">"],
  ["ge", "\u2265"],
  ["in", "is one of"],
  ["match", "matches regex"],
  ["exists", "exists"],
];
const OP_LABEL = Object.fromEntries(OPS);
const NAME_HINT = { header: "X-Canary", cookie: "session", query: "version", path: "id", json: "user.tier", method: "" };

function valueText(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map((v) => String(v)).join(", ");
  return String(value);
}

/** A condition in words: header X-Canary equals "yes". */
export function describeCondition(c) {
  const subject = c.source === "method" ? "method" : `${c.source} ${c.name}`;
  if (c.op === "exists") return `${subject} exists`;
  const value = Array.isArray(c.value) ? `[${c.value.map((v) => JSON.stringify(v)).join(", ")}]` : JSON.stringify(c.value);
  return `${subject} ${OP_LABEL[c.op] || c.op} ${value}`;
}

export async function renderRoutingList(outlet) {
  const header = pageHeader("Routings", {
    subtitle: "Rules that split or mirror matching traffic to another cluster: A/B tests, canaries, shadowing.",
    actions: [linkButton("New routing", "#/routings/new", "btn-primary")],
  });
  mount(outlet, header, loading());
  let routings;
  try {
    routings = await resources.list("routings");
  } catch (e) {
    mount(outlet, header, errorState(e, () => renderRoutingList(outlet)));
    return;
  }
  if (!routings.length) {
    mount(outlet, header, emptyState("No routings yet. A routing sends a share of the requests that match its conditions to another cluster.", "Create a routing", "#/routings/new"));
    return;
  }
  mount(
    outlet,
    header,
    resourceTable({
      kind: "routings",
      items: routings,
      columns: [
        { label: "Name", cell: (r) => h("a", { class: "strong", href: `#/routings/${encodeURIComponent(r.name)}/edit` }, r.name) },
        { label: "API", cell: (r) => (r.api ? h("a", { href: `#/apis/${encodeURIComponent(r.api)}/edit` }, r.api) : h("span", { class: "muted" }, "every API")) },
        {
          label: "When",
          cell: (r) =>
            (r.conditions || []).length
              ? h("ul", { class: "conditions-summary" }, r.conditions.map((c, i) => h("li", null, i ? h("span", { class: "and" }, "and ") : null, describeCondition(c))))
              : h("span", { class: "muted" }, "always"),
        },
        { label: "Then", cell: (r) => [badge(r.strategy || "split", r.strategy === "mirror" ? "info" : "muted"), ` ${r.trafficRate ?? 100}% to `, h("a", { href: `#/clusters/${encodeURIComponent(r.cluster)}/edit` }, r.cluster)] },
      ],
    }),
  );
}

/** The condition builder. */
function conditionBuilder(initial) {
  const rows = (initial || []).map((c) => ({ data: clone(c), key: uniqueId("cond") }));
  const errId = uniqueId("err");
  const list = h("div", { class: "condition-rows" });
  const summary = h("p", { class: "plan", "aria-live": "polite" });

  function renderSummary() {
    if (!rows.length) {
      mount(summary, h("span", { class: "plan-label" }, "Matches"), " every request");
      return;
    }
    mount(summary, h("span", { class: "plan-label" }, "Matches"), " requests where ", rows.map((r, i) => [i ? h("strong", null, " and ") : null, h("code", null, describeCondition(r.data))]));
  }

  function render() {
    list.replaceChildren(
      ...rows.map((row, i) => {
        const c = row.data;
        const label = `Condition ${i + 1}`;
        const source = selectInput({ field: `conditions[${i}].source`, value: c.source, options: SOURCES, label: `${label} source` });
        const name = h("input", { type: "text", value: c.name || "", placeholder: NAME_HINT[c.source] || "", "aria-label": `${label} name`, spellcheck: "false", dataset: { field: `conditions[${i}].name` } });
        const op = selectInput({ field: `conditions[${i}].op`, value: c.op, options: OPS, label: `${label} operator` });
        const value = h("input", { type: "text", value: valueText(c.value), "aria-label": `${label} value`, spellcheck: "false", dataset: { field: `conditions[${i}].value` } });
        const sync = () => {
          name.disabled = source.value === "method";
          name.placeholder = NAME_HINT[source.value] || "";
          value.disabled = op.value === "exists";
          value.placeholder = op.value === "in" ? "a, b, c" : op.value === "match" ? "^v2\\." : op.value === "exists" ? "" : "value";
        };
        const update = () => {
          c.source = source.value;
          c.op = op.value;
          c.name = source.value === "method" ? "" : name.value.trim();
          c.value = parseValue(value.value, op.value, c.value);
          sync();
          renderSummary();
        };
        for (const el of [source, name, op, value]) {
          el.addEventListener("input", update);
          el.addEventListener("change", update);
        }
        sync();
        const scoped = (control, cls) => h("div", { class: `cond-cell ${cls}`, dataset: { errorScope: "" } }, control, h("p", { class: "field-error", hidden: true }));
        return h(
          "div",
          { class: "condition-row", role: "group", "aria-label": label, dataset: { condition: String(i), field: `conditions[${i}]`, errorScope: "" } },
          h("span", { class: "cond-and", "aria-hidden": "true" }, i ? "AND" : "IF"),
          scoped(source, "cond-source"),
          scoped(name, "cond-name"),
          scoped(op, "cond-op"),
          scoped(value, "cond-value"),
          h("button", { type: "button", class: "btn btn-small btn-ghost-danger", "aria-label": `Remove ${label}`, onClick: () => { rows.splice(i, 1); render(); } }, "Remove"),
          h("p", { class: "field-error", hidden: true }),
        );
      }),
    );
    renderSummary();
  }
  render();
  const el = h(
    "fieldset",
    { class: "section section-on", dataset: { field: "conditions", errorScope: "" }, "aria-describedby": errId },
    h("legend", null, "Conditions"),
    h("p", { class: "help" }, "Every condition must hold (AND). No condition: every request matches."),
    h("p", { class: "field-error", id: errId, hidden: true }),
    list,
    h(
      "div",
      { class: "editor-footer" },
      h(
        "button",
        {
          type: "button",
          class: "btn",
          onClick: () => {
            rows.push({ data: { source: "header", name: "", op: "eq", value: "" }, key: uniqueId("cond") });
            render();
            list.lastElementChild?.querySelector("input")?.focus();
          },
        },
        "Add condition",
      ),
      summary,
    ),
  );
  const collect = () =>
    rows.map((r) => {
      const out = clone(r.data);
      if (out.source === "method") delete out.name;
      if (out.op === "exists") delete out.value;
      return out;
    });
  return { el, collect };
}

/**
 * The value of a condition from its text: a list for "in", a number for the
 * comparisons (and where it was a number), else the text.
 */
export function parseValue(text, op, previous) {
  const t = text.trim();
  const asNumber = (s) => (s !== "" && Number.isFinite(Number(s)) ? Number(s) : s);
  if (op === "exists") return null;
  if (op === "in") return t === "" ? [] : t.split(",").map((s) => s.trim()).filter((s) => s !== "").map((s) => (typeof (Array.isArray(previous) ? previous[0] : undefined) === "number" ? asNumber(s) : s));
  if (op === "match") return text;
  if (["lt", "le", "gt", "ge"].includes(op) || typeof previous === "number") return asNumber(t);
  return t;
}

export function renderRoutingForm(outlet, params) {
  return formPage({
    outlet,
    kind: "routings",
    name: params.name,
    description: "Send (split) or copy (mirror) a share of matching requests to another cluster.",
    loadExtra: async () => {
      const [clusters, apis] = await Promise.all([resources.list("clusters"), resources.list("apis")]);
      return { clusters, apis };
    },
    build(item, extra) {
      const editing = !!item;
      const name = inputField({ label: "Name", field: "name", value: item?.name, required: true, disabled: editing, help: editing ? "The name cannot change." : "Letters, digits, - _ and ." });
      const api = selectField({ label: "API", field: "api", value: item?.api || "", options: [["", "every API"], ...extra.apis.map((a) => [a.name, `${a.name} (${a.method || "*"} ${a.urlPattern})`])] });
      const cluster = selectField({ label: "Target cluster", field: "cluster", value: item?.cluster || "", required: true, options: [["", "Choose a cluster\u2026"], ...extra.clusters.map((c) => c.name)] });
      const strategy = selectField({ label: "Strategy", field: "strategy", value: item?.strategy || "split", options: [["split", "split: send there instead"], ["mirror", "mirror: copy there, ignore its answer"]] });
      const rate = numberField({ label: "Traffic rate (%)", field: "trafficRate", value: item?.trafficRate ?? 100, help: "share of the matching requests" });
      const slider = h("input", { type: "range", min: 0, max: 100, step: 1, value: item?.trafficRate ?? 100, "aria-label": "Traffic rate slider", class: "slider" });
      slider.addEventListener("input", () => (rate.input.value = slider.value));
      rate.input.addEventListener("input", () => (slider.value = rate.input.value));
      rate.el.insertBefore(slider, rate.input.nextSibling);
      const hashOn = item?.hashOn || "";
      const hashKind = hashOn.includes(":") ? hashOn.split(":")[0] : hashOn;
      const hash = selectField({ label: "Sticky on", field: "hashOn", value: hashKind, options: [["", "nothing (random)"], ["ip", "client IP"], ["header", "header"], ["cookie", "cookie"]], help: "the same key always gets the same side of a split" });
      const hashName = inputField({ label: "Header or cookie name", field: "hashOnName", value: hashOn.includes(":") ? hashOn.slice(hashOn.indexOf(":") + 1) : "" });
      const syncHash = () => (hashName.el.hidden = !["header", "cookie"].includes(hash.input.value));
      hash.input.addEventListener("change", syncHash);
      syncHash();
      const conditions = conditionBuilder(item?.conditions);
      const fields = [section("Routing", null, name.el, api.el, cluster.el, strategy.el, rate.el, hash.el, hashName.el), conditions.el];
      const collect = () => {
        const out = clone(item);
        assign(out, "name", readText(name.input));
        out.api = api.input.value || null;
        assign(out, "cluster", cluster.input.value || undefined);
        out.strategy = strategy.input.value;
        assign(out, "trafficRate", readNumber(rate.input));
        const kind = hash.input.value;
        out.hashOn = kind === "" ? null : kind === "ip" ? "ip" : `${kind}:${readText(hashName.input) || ""}`;
        out.conditions = conditions.collect();
        return out;
      };
      return { fields, collect };
    },
  });
}
