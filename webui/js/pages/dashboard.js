// The dashboard: live traffic, errors and latency, what needs attention
// (open breakers, unhealthy or ejected servers), servers, APIs and proxies.

import { fetchProxies } from "../api.js";
import { h, mount, fmtNum, fmtRate, fmtPct, fmtMs, badge, isNum, DASH } from "../dom.js";
import { poller } from "../stats.js";
import { LineChart, COLORS } from "../charts.js";
import { pageHeader, alertsOf, alertList, healthBadge, breakerBadge, serverHref } from "./common.js";

/** Column headings; a leading "#" marks a numeric (right-aligned) column. */
function headings(names) {
  return names.map((n) => (n.startsWith("#") ? h("th", { scope: "col", class: "num" }, n.slice(1)) : h("th", { scope: "col" }, n)));
}

function kpi(label, key, hint) {
  const value = h("div", { class: "kpi-value", dataset: { kpi: key } }, DASH);
  const sub = h("div", { class: "kpi-sub" }, hint || "");
  return { el: h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, label), value, sub), value, sub };
}

/** A gateway's workers: how many serve, and which do not (restarting, or cannot start). */
function workersCell(workers) {
  if (!workers || !workers.length) return DASH;
  const serving = workers.filter((w) => w.ready).length;
  const down = workers.filter((w) => !w.ready).map((w) => `worker ${w.worker}`);
  const text = `${serving} of ${workers.length} serving`;
  if (!down.length) return h("span", { dataset: { workers: "all" } }, text);
  return h(
    "span",
    { dataset: { workers: "some" } },
    badge(text, "warn", `Not serving (restarting, or cannot start: see the gateway's log): ${down.join(", ")}`),
  );
}

export function proxiesTable(proxies) {
  if (!proxies.length) return h("p", { class: "muted" }, "No proxy has reported yet.");
  return h(
    "div",
    { class: "table-scroll" },
    h(
    "table",
    { class: "table table-compact" },
    h("thead", null, h("tr", null, headings(["Address", "Version", "Started", "#Store revision", "Workers", "State"]))),
    h(
      "tbody",
      null,
      proxies.map((p) =>
        h(
          "tr",
          null,
          h("td", null, h("code", null, p.addr ?? DASH)),
          h("td", null, p.version ?? DASH),
          h("td", null, p.startedAt ? new Date(p.startedAt).toLocaleString(undefined, { hour12: false }) : DASH),
          h("td", { class: "num" }, p.revision ?? DASH),
          h("td", null, workersCell(p.workers)),
          h("td", null, p.ready === false ? badge(p.revision == null ? "starting" : "not ready", "warn") : badge("serving", "ok")),
        ),
      ),
    ),
    ),
  );
}

// -- cluster-wide limits (limits.store) ---
const LIMIT_MODES = {
  shared: ["shared on Redis", "ok", "Every limit holds for the whole fleet: its bucket is in Redis."],
  local: ["local share", "warn", "Redis is away: each gateway holds its share of each limit (the limit divided by the live gateways)."],
  open: ["open", "warn", "Redis is away and limits.onFailure is open: limits are not enforced."],
  closed: ["closed (503)", "bad", "Redis is away and limits.onFailure is closed: limited requests are refused with 503."],
};

/** The fleet's limits (the "limits" of /api/v1/stats): who decides, and how it went. */
export function fleetLimitsView(limits) {
  const [label, tone, title] = LIMIT_MODES[limits.mode] || [limits.mode, "muted", ""];
  const modes = Object.entries(limits.modes || {}).filter(([, n]) => n > 0).map(([m, n]) => `${n} ${m}`).join(", ");
  const switches = Object.entries(limits.switches || {}).filter(([, n]) => n > 0).map(([m, n]) => `${n} to ${m}`).join(", ");
  const row = (name, value) => h("tr", null, h("th", { scope: "row" }, name), h("td", null, value));
  return h(
    "div",
    { dataset: { limitsMode: limits.mode } },
    h("p", null, badge(label, tone, title), " ", h("span", { class: "muted" }, title)),
    h(
      "table",
      { class: "table table-compact" },
      h(
        "tbody",
        null,
        row("Store", h("code", null, limits.store || DASH)),
        row("While Redis is away", limits.onFailure || DASH),
        row("Redis", limits.redis === "up" ? badge("up", "ok") : badge("down", "bad")),
        row("Live gateways", fmtNum(limits.gateways)),
        row("Proxy processes", modes || DASH),
        row("Switches", switches || "none"),
        row("Redis calls", `${fmtNum(limits.calls)} (${fmtNum(limits.timeouts)} timed out, ${fmtNum(limits.errors)} failed)`),
      ),
    ),
  );
}
// -- end cluster-wide limits ---

/** An API's cache hit ratio (its stats' "cache"), as a percentage; a dash without a cache. */
function cacheRatio(counts) {
  return counts && isNum(counts.hitRatio) ? fmtPct(counts.hitRatio * 100) : DASH;
}

function fmtBytes(n) {
  if (!isNum(n)) return DASH;
  if (n >= 1024 * 1024) return `${fmtNum(n / (1024 * 1024), 1)} MiB`;
  if (n >= 1024) return `${fmtNum(n / 1024, 1)} KiB`;
  return `${fmtNum(n)} B`;
}

export function renderDashboard(outlet) {
  const kpis = {
    rps: kpi("Requests/s", "rps", "last 2 s"),
    errorRate: kpi("Error rate", "errorRate", "errors / requests"),
    p50: kpi("Latency p50", "p50", ""),
    p99: kpi("Latency p99", "p99", ""),
    requests: kpi("Requests", "requests", "since start"),
    rejects: kpi("Rejected", "rejects", "rate limit, breaker, access"),
    websockets: kpi("WebSockets", "websockets", ""),
    cache: kpi("Cache memory", "cache", "response cache"),
  };
  kpis.cache.el.hidden = true;
  kpis.websockets.el.hidden = true;
  const traffic = new LineChart({
    title: "Traffic",
    series: [
      { key: "rps", label: "requests/s", color: COLORS.blue, fill: true },
      { key: "errorsPs", label: "errors/s", color: COLORS.red },
      { key: "rejectsPs", label: "rejects/s", color: COLORS.amber },
    ],
    format: (v) => fmtNum(v, v < 10 ? 2 : 0),
  });
  const errors = new LineChart({
    title: "Error rate",
    series: [{ key: "errorRate", label: "errors", color: COLORS.red, fill: true }],
    format: (v) => `${fmtNum(v, v < 10 ? 1 : 0)}%`,
    yMax: 4,
  });
  const latency = new LineChart({
    title: "Latency",
    series: [
      { key: "p50", label: "p50", color: COLORS.teal },
      { key: "p99", label: "p99", color: COLORS.violet },
      { key: "meanMs", label: "mean", color: COLORS.amber },
    ],
    format: fmtMs,
  });
  const alerts = h("div", { class: "alerts-body" }, h("p", { class: "muted" }, "Waiting for the first statistics\u2026"));
  const serversBody = h("tbody");
  const apisBody = h("tbody");
  const proxiesBody = h("div", null, h("p", { class: "muted" }, "Loading\u2026"));
  const freshness = h("span", { class: "muted" });
  const limitsBody = h("div");
  const limitsCard = h("section", { class: "card", "aria-labelledby": "limits-h", dataset: { card: "limits" } }, h("h2", { id: "limits-h" }, "Fleet limits"), limitsBody);
  limitsCard.hidden = true;

  mount(
    outlet,
    pageHeader("Dashboard", { subtitle: h("span", null, "Live, from every proxy. ", freshness) }),
    h("section", { class: "kpis", "aria-label": "Live figures" }, Object.values(kpis).map((k) => k.el)),
    h("section", { class: "card", "aria-labelledby": "alerts-h" }, h("h2", { id: "alerts-h" }, "Alerts"), alerts),
    limitsCard,
    h("div", { class: "grid-3" }, h("div", { class: "card" }, traffic.el), h("div", { class: "card" }, errors.el), h("div", { class: "card" }, latency.el)),
    h(
      "div",
      { class: "grid-tables" },
      h(
        "section",
        { class: "card card-flush", "aria-labelledby": "servers-h" },
        h("h2", { id: "servers-h", class: "card-title" }, "Servers"),
        h("div", { class: "table-scroll" }, h("table", { class: "table table-compact" }, h("thead", null, h("tr", null, headings(["Server", "Health", "Breaker", "#In flight", "#Req/s", "#Latency"]))), serversBody)),
      ),
      h(
        "section",
        { class: "card card-flush", "aria-labelledby": "apis-h" },
        h("h2", { id: "apis-h", class: "card-title" }, "APIs"),
        h("div", { class: "table-scroll" }, h("table", { class: "table table-compact" }, h("thead", null, h("tr", null, headings(["API", "#Requests", "#Req/s", "#Errors", "#Rejects", "#p50 (all)", "#p99 (all)", "#Cache hits"]))), apisBody)),
      ),
    ),
    h("section", { class: "card", "aria-labelledby": "proxies-h" }, h("h2", { id: "proxies-h" }, "Proxies"), proxiesBody),
  );

  let stopped = false;
  const loadProxies = async () => {
    try {
      const proxies = await fetchProxies();
      if (!stopped) mount(proxiesBody, proxiesTable(proxies || []));
    } catch (e) {
      if (!stopped && e.status !== 401) mount(proxiesBody, h("p", { class: "banner banner-error" }, `Could not load the proxies: ${e.message}`));
    }
  };
  loadProxies();
  const proxyTimer = setInterval(loadProxies, 10000);

  const unsubscribe = poller.subscribe((p) => {
    const sample = p.latest;
    if (p.error && p.error.status !== 401) {
      freshness.textContent = `Statistics unavailable: ${p.error.message}`;
      freshness.className = "stale";
    } else if (sample) {
      freshness.textContent = `Updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}.`;
      freshness.className = "muted";
    }
    if (!sample) return;
    const t = sample.total;
    kpis.rps.value.textContent = fmtRate(t.rps);
    kpis.errorRate.value.textContent = fmtPct(t.errorRate);
    kpis.errorRate.el.classList.toggle("kpi-bad", t.errorRate >= 5);
    // The last interval's percentiles; when nothing finished in it, those
    // of every request since the start.
    const recent = isNum(t.p50);
    const lat = sample.cum.total.latency;
    kpis.p50.value.textContent = fmtMs(recent ? t.p50 : lat.p50);
    kpis.p99.value.textContent = fmtMs(recent ? t.p99 : lat.p99);
    kpis.p50.sub.textContent = kpis.p99.sub.textContent = isNum(recent ? t.p50 : lat.p50) ? (recent ? "last 2 s" : "since start") : "";
    kpis.requests.value.textContent = fmtNum(sample.cum.total.requests);
    kpis.rejects.value.textContent = fmtNum(sample.cum.total.rejects);
    kpis.requests.sub.textContent = `${fmtNum(sample.cum.total.errors)} errors since start`;
    // WebSocket pass-through: open tunnels over every API that relays them.
    const tunnels = Object.values(sample.data?.apis || {}).map((a) => a.websocket).filter(Boolean);
    kpis.websockets.el.hidden = !tunnels.length;
    kpis.websockets.value.textContent = fmtNum(tunnels.reduce((n, w) => n + (w.open || 0), 0));
    kpis.websockets.sub.textContent = `open; ${fmtNum(tunnels.reduce((n, w) => n + (w.opened || 0), 0))} since start`;

    const memory = sample.data?.cache;
    kpis.cache.el.hidden = !memory;
    if (memory) {
      kpis.cache.value.textContent = fmtBytes(memory.bytes);
      kpis.cache.sub.textContent = `of ${fmtBytes(memory.limit)}, ${fmtNum(memory.entries)} entries, ${fmtNum(memory.evictions)} evicted`;
    }

    mount(alerts, alertList(alertsOf(sample)));
    const limits = sample.data?.limits;
    limitsCard.hidden = !limits;
    if (limits) mount(limitsBody, fleetLimitsView(limits));
    const points = p.samples.map((x) => ({ t: x.t, ...x.total }));
    traffic.update(points);
    errors.update(points);
    latency.update(points);

    const servers = Object.entries(sample.data?.servers || {}).sort(([a], [b]) => a.localeCompare(b));
    mount(
      serversBody,
      servers.length
        ? servers.map(([name, s]) => {
            const r = sample.servers[name] || {};
            return h(
              "tr",
              { dataset: { server: name } },
              h("td", null, h("a", { href: serverHref(name, s), class: "strong" }, name), h("div", { class: "muted small" }, s.addr || "")),
              h("td", null, healthBadge(s)),
              h("td", null, breakerBadge(s)),
              h("td", { class: "num" }, fmtNum(s.active)),
              h("td", { class: "num" }, fmtRate(r.rps)),
              h("td", { class: "num" }, fmtMs(r.meanMs ?? r.ewmaMs)),
            );
          })
        : h("tr", null, h("td", { colspan: 6, class: "muted" }, "No server yet.")),
    );
    const apis = Object.entries(sample.data?.apis || {}).sort(([a], [b]) => a.localeCompare(b));
    mount(
      apisBody,
      apis.length
        ? apis.map(([name]) => {
            const c = sample.cum.apis[name] || {};
            const r = sample.apis[name] || {};
            return h(
              "tr",
              { dataset: { api: name } },
              h("td", null, h("a", { href: `#/apis/${encodeURIComponent(name)}/edit`, class: "strong" }, name)),
              h("td", { class: "num", dataset: { col: "requests" } }, fmtNum(c.requests)),
              h("td", { class: "num" }, fmtRate(r.rps)),
              h("td", { class: "num" }, fmtNum(c.errors)),
              h("td", { class: "num" }, fmtNum(c.rejects)),
              h("td", { class: "num" }, fmtMs(c.latency?.p50)),
              h("td", { class: "num" }, fmtMs(c.latency?.p99)),
              h("td", { class: "num", dataset: { col: "cacheHits" } }, cacheRatio(sample.data.apis[name]?.cache)),
            );
          })
        : h("tr", null, h("td", { colspan: 8, class: "muted" }, sample.data?.apis ? "No API has served a request yet." : "The gateway does not report per-API statistics.")),
    );
  });

  return () => {
    stopped = true;
    clearInterval(proxyTimer);
    unsubscribe();
    traffic.destroy();
    errors.destroy();
    latency.destroy();
  };
}
