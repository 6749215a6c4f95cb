// Pieces shared by the pages: headers, list tables, live status badges,
// alerts, and the scaffolding of the create/edit forms.

import { resources } from "../api.js";
import { h, mount, badge, confirmDialog, toast, DASH, isNum, fmtPct, fmtTime } from "../dom.js";
import { FormErrors, errorBanner, LocalError } from "../forms.js";

export const KIND_LABEL = { certificates: "certificate", servers: "server", clusters: "cluster", consumers: "consumer", apis: "API", routings: "routing" };

/** The h1 of a page, with action buttons on the right. */
export function pageHeader(title, { subtitle, actions = [], crumbs = [] } = {}) {
  return h(
    "header",
    { class: "page-header" },
    crumbs.length
      ? h(
          "nav",
          { class: "crumbs", "aria-label": "Breadcrumb" },
          crumbs.map(([text, href]) => [h("a", { href }, text), h("span", { "aria-hidden": "true" }, " / ")]),
          h("span", { "aria-current": "page" }, typeof title === "string" ? title : ""),
        )
      : null,
    h("div", { class: "page-title-row" }, h("div", null, h("h1", null, title), subtitle ? h("p", { class: "subtitle" }, subtitle) : null), h("div", { class: "actions" }, actions)),
  );
}

export function loading(text = "Loading\u2026") {
  return h("p", { class: "loading", role: "status" }, text);
}

export function errorState(error, retry) {
  return h(
    "div",
    { class: "banner banner-error", role: "alert" },
    `Could not load: ${error.message}`,
    retry ? h("button", { class: "btn btn-small", type: "button", onClick: retry }, "Retry") : null,
  );
}

export function linkButton(text, href, kind = "") {
  return h("a", { class: `btn ${kind}`.trim(), href }, text);
}

/** An empty state with a call to action. */
export function emptyState(text, actionText, href) {
  return h("div", { class: "empty" }, h("p", null, text), actionText ? linkButton(actionText, href, "btn-primary") : null);
}

// -- live server status ------------------------------------------------------------

/** A server's health as a badge, from its stats entry. */
export function healthBadge(s) {
  if (!s) return badge(DASH, "muted", "no live data yet");
  if (s.healthy === false) return badge("unhealthy", "bad", s.health?.lastError || "the health check fails");
  if (s.ejected) return badge("ejected", "warn", "passive health checking took it out of rotation");
  if (s.healthy === true) return badge("healthy", "ok");
  return badge(DASH, "muted");
}

/** A server's circuit breaker state as a badge. */
export function breakerBadge(s) {
  const b = s?.breaker;
  if (!s) return badge(DASH, "muted", "no live data yet");
  if (!b || typeof b !== "object") return badge("no breaker", "muted");
  const tone = { closed: "ok", open: "bad", "half-open": "warn" }[b.state] || "muted";
  const title = isNum(b.failureRate) ? `failure rate ${fmtPct(b.failureRate)}` : undefined;
  return badge(b.state || DASH, tone, title);
}

/**
 * Where a server of the stats has its page: its own, or, for one DNS
 * discovery found ("users@10.0.0.5"), the server or cluster it comes from.
 */
export function serverHref(name, s) {
  const d = s?.discovered;
  if (d?.server) return `#/servers/${encodeURIComponent(d.server)}`;
  if (d?.cluster) return `#/clusters/${encodeURIComponent(d.cluster)}/edit`;
  return `#/servers/${encodeURIComponent(name)}`;
}

/**
 * What needs attention now: open breakers, unhealthy or ejected servers,
 * failing APIs.
 * @returns {Array<{level: "bad"|"warn", title: string, detail: string, href?: string}>}
 */
export function alertsOf(sample) {
  const alerts = [];
  if (!sample) return alerts;
  const servers = sample.data?.servers || {};
  for (const [name, s] of Object.entries(servers)) {
    const href = serverHref(name, s);
    const b = s?.breaker;
    if (b && b.state === "open") {
      const rate = isNum(b.failureRate) ? ` · failure rate ${fmtPct(b.failureRate)}` : "";
      alerts.push({ level: "bad", title: `Circuit breaker open on ${name}`, detail: `since ${fmtTime(b.since)}${rate}`, href });
    } else if (b && b.state === "half-open") {
      alerts.push({ level: "warn", title: `Circuit breaker half-open on ${name}`, detail: `trial traffic since ${fmtTime(b.since)}`, href });
    }
    if (s?.healthy === false) {
      alerts.push({ level: "bad", title: `Server ${name} is unhealthy`, detail: s.health?.lastError || `${s.addr || ""} fails its health check`, href });
    }
    if (s?.ejected) {
      alerts.push({ level: "warn", title: `Server ${name} is ejected`, detail: "passive health checking took it out of rotation", href });
    }
  }
  for (const [name, a] of Object.entries(sample.data?.apis || {})) {
    const b = a?.breaker;
    const href = `#/apis/${encodeURIComponent(name)}/edit`;
    if (b && b.state === "open") {
      alerts.push({ level: "bad", title: `Circuit breaker open on API ${name}`, detail: `since ${fmtTime(b.since)} \u00B7 its requests get 503`, href });
    } else if (b && b.state === "half-open") {
      alerts.push({ level: "warn", title: `Circuit breaker half-open on API ${name}`, detail: `trial traffic since ${fmtTime(b.since)}`, href });
    }
  }
  for (const [name, r] of Object.entries(sample.apis || {})) {
    if (isNum(r.errorRate) && r.errorRate >= 50 && r.rps > 0) {
      alerts.push({ level: "warn", title: `API ${name} is failing`, detail: `${fmtPct(r.errorRate)} of its requests failed in the last interval`, href: `#/apis/${encodeURIComponent(name)}` });
    }
  }
  return alerts;
}

export function alertList(alerts) {
  if (!alerts.length) return h("p", { class: "all-good" }, h("span", { class: "dot dot-ok", "aria-hidden": "true" }), "All servers healthy, no open circuit breaker.");
  return h(
    "ul",
    { class: "alerts" },
    alerts.map((a) =>
      h(
        "li",
        { class: `alert alert-${a.level}` },
        h("span", { class: "alert-icon", "aria-hidden": "true" }, a.level === "bad" ? "!" : "\u25B2"),
        h("div", null, a.href ? h("a", { href: a.href }, a.title) : h("strong", null, a.title), h("div", { class: "alert-detail" }, a.detail)),
      ),
    ),
  );
}

// -- lists ---------------------------------------------------------------------------

/**
 * A table of resources with a filter box and Edit / Delete actions.
 * @param {object} o
 * @param {string} o.kind servers | clusters | apis | routings
 * @param {Array<{label: string, cell: (item) => Node|string, className?: string}>} o.columns
 * @param {(item) => string} [o.editHref]
 */
export function resourceTable({ kind, items, columns, editHref, onDeleted }) {
  const label = KIND_LABEL[kind];
  const filter = h("input", { type: "search", class: "filter", placeholder: `Filter ${kind}\u2026`, "aria-label": `Filter ${kind} by name` });
  const tbody = h("tbody");
  const rows = items.map((item) => {
    const edit = editHref ? editHref(item) : `#/${kind}/${encodeURIComponent(item.name)}/edit`;
    const tr = h(
      "tr",
      { dataset: { name: item.name } },
      columns.map((c) => h("td", { class: c.className }, c.cell(item))),
      h(
        "td",
        { class: "row-actions" },
        h("a", { class: "btn btn-small", href: edit, "aria-label": `Edit ${label} ${item.name}` }, "Edit"),
        h(
          "button",
          {
            class: "btn btn-small btn-ghost-danger",
            type: "button",
            "aria-label": `Delete ${label} ${item.name}`,
            onClick: async () => {
              if (await deleteResource(kind, item.name)) {
                tr.remove();
                if (onDeleted) onDeleted(item);
              }
            },
          },
          "Delete",
        ),
      ),
    );
    return tr;
  });
  tbody.append(...rows);
  filter.addEventListener("input", () => {
    const q = filter.value.trim().toLowerCase();
    rows.forEach((tr, i) => {
      tr.hidden = q !== "" && !JSON.stringify(items[i]).toLowerCase().includes(q);
    });
  });
  const table = h(
    "table",
    { class: "table" },
    h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col", class: c.className }, c.label)), h("th", { scope: "col", class: "row-actions" }, h("span", { class: "sr-only" }, "Actions")))),
    tbody,
  );
  return h("div", { class: "card card-flush" }, h("div", { class: "table-tools" }, filter, h("span", { class: "count" }, `${items.length} ${items.length === 1 ? label : kind === "apis" ? "APIs" : kind}`)), h("div", { class: "table-scroll" }, table));
}

/** Ask, then delete; a refusal (409: still used) is shown in a toast. */
export async function deleteResource(kind, name) {
  const label = KIND_LABEL[kind];
  const ok = await confirmDialog(`Delete ${label} ${name}?`, `The ${label} ${name} is removed from every proxy at once. This cannot be undone.`);
  if (!ok) return false;
  try {
    await resources.remove(kind, name);
    toast(`Deleted ${label} ${name}`);
    return true;
  } catch (e) {
    toast(`Cannot delete ${label} ${name}: ${e.message}`, "error");
    return false;
  }
}

/** Chips naming other resources, as links. */
export function chips(names, hrefOf, tone) {
  if (!names || !names.length) return h("span", { class: "muted" }, DASH);
  return h(
    "span",
    { class: "chips" },
    names.map((n) => h("a", { class: ["chip", tone && tone(n)], href: hrefOf(n) }, n)),
  );
}

// -- forms ---------------------------------------------------------------------------

/**
 * The create / edit page of one resource.
 * @param {object} o
 * @param {HTMLElement} o.outlet
 * @param {string} o.kind
 * @param {string|undefined} o.name undefined to create.
 * @param {() => Promise<object>} [o.loadExtra] other resources the form needs.
 * @param {(item, extra) => {fields: Node[], collect: () => object}} o.build
 * @param {(saved) => string} [o.after] where to go after saving.
 */
export async function formPage({ outlet, kind, name, build, loadExtra, after, description }) {
  const label = KIND_LABEL[kind];
  const creating = name === undefined;
  const plural = kind === "apis" ? "APIs" : kind[0].toUpperCase() + kind.slice(1);
  const title = creating ? `New ${label}` : `Edit ${label} ${name}`;
  mount(outlet, pageHeader(title, { crumbs: [[plural, `#/${kind}`]], subtitle: description }), loading());
  let item;
  let extra;
  try {
    [item, extra] = await Promise.all([creating ? Promise.resolve(null) : resources.get(kind, name), loadExtra ? loadExtra() : Promise.resolve({})]);
  } catch (e) {
    mount(outlet, pageHeader(title, { crumbs: [[plural, `#/${kind}`]] }), errorState(e, () => formPage({ outlet, kind, name, build, loadExtra, after, description })));
    return;
  }
  const banner = errorBanner();
  const { fields, collect } = build(item, extra);
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, creating ? `Create ${label}` : "Save changes");
  const form = h(
    "form",
    { class: "resource-form", novalidate: true, "aria-label": title },
    banner,
    fields,
    h("div", { class: "form-actions" }, submit, h("a", { class: "btn", href: `#/${kind}` }, "Cancel")),
  );
  const errors = new FormErrors(form, banner);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.clear();
    let body;
    try {
      body = collect();
    } catch (e) {
      if (e instanceof LocalError) {
        errors.show(e);
        return;
      }
      throw e;
    }
    submit.disabled = true;
    submit.classList.add("busy");
    try {
      const saved = creating ? await resources.create(kind, body) : await resources.update(kind, name, body);
      toast(creating ? `Created ${label} ${saved.name}` : `Saved ${label} ${saved.name}`);
      location.hash = after ? after(saved) : `#/${kind}`;
    } catch (e) {
      if (e.status === 401) return;
      errors.show(e);
    } finally {
      submit.disabled = false;
      submit.classList.remove("busy");
    }
  });
  mount(outlet, pageHeader(title, { crumbs: [[plural, `#/${kind}`]], subtitle: description }), form);
  const first = form.querySelector("input:not([disabled]), select, textarea");
  if (first) first.focus();
}

/** A deep copy of a JSON value. */
export function clone(value) {
  return value === null || value === undefined ? {} : JSON.parse(JSON.stringify(value));
}
