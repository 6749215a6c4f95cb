// One server: its configuration, live health and circuit breaker state with
// the breaker's transitions, and charts of its traffic from the polling.

import { resources } from "../api.js";
import { h, mount, fmtNum, fmtRate, fmtMs, fmtPct, fmtTime, fmtDuration, badge, DASH, isNum } from "../dom.js";
import { poller } from "../stats.js";
import { LineChart, COLORS } from "../charts.js";
import { pageHeader, loading, errorState, linkButton, healthBadge, breakerBadge, deleteResource, chips } from "./common.js";
import { discoveredOf, discoveredTable, lookupLine } from "./discovered.js";

function dl(pairs) {
  return h(
    "dl",
    { class: "props" },
    pairs.map(([k, v]) => [h("dt", null, k), h("dd", null, v === undefined || v === null || v === "" ? DASH : v)]),
  );
}

function tlsText(tls) {
  if (!tls) return "none (plain HTTP)";
  const parts = [tls.verify === false ? "HTTPS, certificate not verified" : `HTTPS, verified against ${tls.ca ? "the CA given" : "the system's authorities"}`];
  if (tls.serverName) parts.push(`as ${tls.serverName}`);
  if (tls.clientCertificate) parts.push(h("span", null, "client certificate ", h("a", { href: `#/certificates/${encodeURIComponent(tls.clientCertificate)}/edit` }, tls.clientCertificate)));
  return h("span", null, parts.flatMap((p, i) => (i ? [", ", p] : [p])));
}

function stat(label, key) {
  const value = h("div", { class: "kpi-value", dataset: { kpi: key } }, DASH);
  return { el: h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, label), value), value };
}

/**
 * The rates of several servers together (the addresses of a host name):
 * requests and errors summed, the latency averaged by traffic (percentiles
 * of several servers cannot be added: left out).
 */
function sumRates(list) {
  const out = { rps: 0, errorsPs: 0 };
  let weighted = 0;
  let weight = 0;
  for (const r of list) {
    if (!r) continue;
    out.rps += r.rps || 0;
    out.errorsPs += r.errorsPs || 0;
    if (isNum(r.ewmaMs)) {
      weighted += r.ewmaMs * (r.rps || 1);
      weight += r.rps || 1;
    }
  }
  out.errorRate = out.rps > 0 ? Math.min(100, (out.errorsPs * 100) / out.rps) : 0;
  out.ewmaMs = weight ? weighted / weight : undefined;
  return out;
}

export async function renderServer(outlet, params) {
  const name = params.name;
  const crumbs = [["Servers", "#/servers"]];
  mount(outlet, pageHeader(name, { crumbs }), loading());
  let server;
  let clusters;
  try {
    [server, clusters] = await Promise.all([resources.get("servers", name), resources.list("clusters")]);
  } catch (e) {
    mount(outlet, pageHeader(name, { crumbs }), errorState(e, () => renderServer(outlet, params)));
    return;
  }
  const memberOf = clusters.filter((c) => (c.servers || []).includes(name)).map((c) => c.name);
  const healthSlot = h("span");
  const breakerSlot = h("span");
  const header = pageHeader(name, {
    crumbs,
    subtitle: h("span", { class: "status-line" }, h("code", null, server.addr), " \u00B7 health ", healthSlot, " \u00B7 circuit breaker ", breakerSlot),
    actions: [
      linkButton("Edit", `#/servers/${encodeURIComponent(name)}/edit`),
      h("button", { class: "btn btn-ghost-danger", type: "button", onClick: async () => { if (await deleteResource("servers", name)) location.hash = "#/servers"; } }, "Delete"),
    ],
  });

  const kpis = {
    rps: stat("Requests/s", "rps"),
    errorRate: stat("Error rate", "errorRate"),
    latency: stat("Latency (EWMA)", "latency"),
    active: stat("In flight", "active"),
    requests: stat("Requests", "requests"),
  };

  const trafficChart = new LineChart({
    title: "Requests per second",
    series: [
      { key: "rps", label: "requests/s", color: COLORS.blue, fill: true },
      { key: "errorsPs", label: "errors/s", color: COLORS.red },
    ],
    format: (v) => fmtNum(v, v < 10 ? 2 : 0),
  });
  const latencyChart = new LineChart({
    title: "Latency",
    series: [
      { key: "p50", label: "p50", color: COLORS.teal },
      { key: "p99", label: "p99", color: COLORS.violet },
      { key: "ewmaMs", label: "EWMA", color: COLORS.amber },
    ],
    format: fmtMs,
  });

  // A host name: its addresses are servers of their own (DNS discovery).
  const host = server.addr.replace(/:\d+$/, "");
  const named = !/^\[|^\d+\.\d+\.\d+\.\d+$/.test(host);
  const foundBody = h("div");
  const lookupSlot = h("span");
  const breakerBody = h("div");
  const healthBody = h("div");
  const cb = server.circuitBreaker;
  const hc = server.healthCheck;
  const ph = server.passiveHealth;

  mount(
    outlet,
    header,
    h("section", { class: "kpis", "aria-label": "Live figures" }, Object.values(kpis).map((k) => k.el)),
    h("div", { class: "grid-2" }, h("div", { class: "card" }, trafficChart.el), h("div", { class: "card" }, latencyChart.el)),
    h(
      "div",
      { class: "grid-2" },
      h("section", { class: "card", "aria-labelledby": "breaker-h" }, h("h2", { id: "breaker-h" }, "Circuit breaker"), breakerBody),
      h("section", { class: "card", "aria-labelledby": "health-h" }, h("h2", { id: "health-h" }, "Health"), healthBody),
    ),
    named
      ? h(
          "section",
          { class: "card", "aria-labelledby": "found-h" },
          h("h2", { id: "found-h" }, "Addresses (DNS)"),
          h("p", null, "Each address of ", h("code", null, host), " is a server of its own, checked and protected on its own (the figures above are theirs together). ", lookupSlot),
          foundBody,
        )
      : null,
    h(
      "section",
      { class: "card", "aria-labelledby": "config-h" },
      h("h2", { id: "config-h" }, "Configuration"),
      dl([
        ["Address", h("code", null, server.addr)],
        ["TLS", tlsText(server.tls)],
        ["Weight", fmtNum(server.weight)],
        ["Max QPS", server.maxQPS ? fmtNum(server.maxQPS) : "no limit"],
        ["Clusters", chips(memberOf, (c) => `#/clusters/${encodeURIComponent(c)}/edit`)],
        ["Health check", hc ? `GET ${hc.path} every ${hc.interval} s, expects ${hc.status}${hc.body ? ` and \u201C${hc.body}\u201D` : ""}, timeout ${hc.timeout} s, rise ${hc.rise} / fall ${hc.fall}` : "none"],
        ["Circuit breaker", cb ? `opens at ${cb.failureRateToOpen}% failures over \u2265 ${cb.minRequests} requests in ${cb.window} s; half-open after ${cb.openTimeout} s with ${cb.halfOpenTrafficRate}% of traffic; closes at ${cb.successRateToClose}% success` : "none"],
        ["Passive health", ph ? `ejects for ${ph.ejectTime} s after ${ph.consecutiveFailures} failures in a row` : "none"],
      ]),
    ),
  );

  let lastTransitionsKey = "";
  function renderBreaker(s, now) {
    const b = s?.breaker;
    if (!s) {
      mount(breakerBody, h("p", { class: "muted" }, "No live data yet."));
      return;
    }
    if (!b) {
      mount(breakerBody, h("p", { class: "muted" }, cb ? "Waiting for the proxy to report its breaker." : "This server has no circuit breaker."), cb ? null : linkButton("Add one", `#/servers/${encodeURIComponent(name)}/edit`, "btn-small"));
      lastTransitionsKey = "";
      return;
    }
    const transitions = Array.isArray(b.transitions) ? b.transitions : [];
    const key = JSON.stringify([b.state, b.since, b.failureRate, b.requests, b.retryAfter, transitions.length, b.trials, Math.floor(now)]);
    if (key === lastTransitionsKey) return;
    lastTransitionsKey = key;
    const tone = { closed: "ok", open: "bad", "half-open": "warn" }[b.state] || "muted";
    mount(
      breakerBody,
      h("div", { class: "breaker-state" }, h("span", { class: `big-state big-${tone}`, dataset: { breakerState: b.state || "" } }, b.state || DASH), isNum(b.since) && isNum(now) ? h("span", { class: "muted" }, ` for ${fmtDuration(now - b.since)}`) : null),
      dl([
        ["Since", fmtTime(b.since)],
        ["Failure rate (window)", fmtPct(b.failureRate)],
        ["Requests (window)", fmtNum(b.requests)],
        b.state === "open" ? ["Half-open in", isNum(b.retryAfter) ? fmtDuration(b.retryAfter) : DASH] : null,
        b.trials ? ["Trials", `${b.trials.successes ?? 0} ok, ${b.trials.failures ?? 0} failed, ${b.trials.inFlight ?? 0} in flight`] : null,
      ].filter(Boolean)),
      h("h3", null, "Transitions"),
      transitions.length
        ? h(
            "table",
            { class: "table table-compact transitions" },
            h("thead", null, h("tr", null, h("th", { scope: "col" }, "When"), h("th", { scope: "col" }, "Change"), h("th", { scope: "col" }, "Reason"))),
            h(
              "tbody",
              null,
              transitions
                .slice()
                .reverse()
                .slice(0, 20)
                .map((t) => h("tr", null, h("td", null, fmtTime(t.at)), h("td", null, badge(t.from || DASH, "muted"), " \u2192 ", badge(t.to || DASH, { closed: "ok", open: "bad", "half-open": "warn" }[t.to] || "muted")), h("td", null, t.reason || DASH))),
            ),
          )
        : h("p", { class: "muted" }, "No transition yet: the breaker has stayed closed."),
    );
  }

  let lastHealthKey = "";
  function renderHealth(s) {
    const hs = s?.health;
    const key = JSON.stringify([s?.healthy, s?.ejected, hs]);
    if (key === lastHealthKey) return;
    lastHealthKey = key;
    const history = Array.isArray(hs?.transitions) ? hs.transitions : [];
    mount(
      healthBody,
      dl([
        ["Status", healthBadge(s)],
        ["Active check", hc ? (hs?.checked === false ? "configured, not running" : `GET ${hc.path} every ${hc.interval} s`) : "none"],
        ["Since", fmtTime(hs?.since)],
        ["Last check", fmtTime(hs?.lastCheck)],
        ["Last error", hs?.lastError || DASH],
        ["Passive health", ph ? (s?.ejected ? badge("ejected", "warn") : "in rotation") : "off"],
      ]),
      history.length
        ? [
            h("h3", null, "Health changes"),
            h(
              "table",
              { class: "table table-compact" },
              h("thead", null, h("tr", null, h("th", { scope: "col" }, "When"), h("th", { scope: "col" }, "Became"), h("th", { scope: "col" }, "Reason"))),
              h("tbody", null, history.slice().reverse().slice(0, 20).map((t) => h("tr", null, h("td", null, fmtTime(t.at)), h("td", null, t.healthy ? badge("healthy", "ok") : badge("unhealthy", "bad")), h("td", null, t.reason || DASH)))),
            ),
          ]
        : null,
    );
  }

  const unsubscribe = poller.subscribe((p) => {
    const sample = p.latest;
    const s = sample?.data?.servers?.[name];
    const found = named && !s ? discoveredOf(sample?.data, { server: name }) : [];
    if (named) {
      foundBody.replaceChildren(discoveredTable(found));
      lookupSlot.replaceChildren(lookupLine(sample?.data, "hosts", host));
    }
    if (found.length) {
      // A host name: the figures of its addresses together.
      const names = found.map(([n]) => n);
      const r = sumRates(names.map((n) => sample.servers[n]));
      const healthy = found.filter(([, x]) => x.healthy !== false && !x.ejected).length;
      healthSlot.replaceChildren(badge(`${healthy}/${found.length} healthy`, healthy === found.length ? "ok" : healthy ? "warn" : "bad"));
      const open = found.filter(([, x]) => x.breaker?.state === "open").length;
      breakerSlot.replaceChildren(found.some(([, x]) => x.breaker) ? badge(`${open}/${found.length} open`, open ? "bad" : "ok") : badge("no breaker", "muted"));
      kpis.rps.value.textContent = fmtRate(r.rps);
      kpis.errorRate.value.textContent = fmtPct(r.errorRate);
      kpis.latency.value.textContent = fmtMs(r.ewmaMs);
      kpis.active.value.textContent = fmtNum(found.reduce((sum, [, x]) => sum + (x.active || 0), 0));
      kpis.requests.value.textContent = fmtNum(found.reduce((sum, [, x]) => sum + (x.requests || 0), 0));
      mount(breakerBody, h("p", { class: "muted" }, "Each address has its own: see Addresses (DNS) below."));
      mount(healthBody, h("p", { class: "muted" }, "Each address is checked on its own: see Addresses (DNS) below."));
      lastTransitionsKey = lastHealthKey = "";
      const points = p.samples.filter((x) => names.some((n) => x.servers[n])).map((x) => ({ t: x.t, ...sumRates(names.map((n) => x.servers[n])) }));
      trafficChart.update(points);
      latencyChart.update(points);
      return;
    }
    const r = sample?.servers?.[name];
    healthSlot.replaceChildren(healthBadge(s));
    breakerSlot.replaceChildren(breakerBadge(s));
    kpis.rps.value.textContent = fmtRate(r?.rps);
    kpis.errorRate.value.textContent = fmtPct(r?.errorRate);
    kpis.latency.value.textContent = fmtMs(r?.ewmaMs);
    kpis.active.value.textContent = fmtNum(s?.active);
    kpis.requests.value.textContent = fmtNum(s?.requests);
    renderBreaker(s, sample?.t);
    renderHealth(s);
    // From the first poll that knew the server (it may be new).
    const points = p.samples.filter((x) => x.servers[name]).map((x) => ({ t: x.t, ...x.servers[name] }));
    trafficChart.update(points);
    latencyChart.update(points);
  });
  return () => {
    unsubscribe();
    trafficChart.destroy();
    latencyChart.destroy();
  };
}
