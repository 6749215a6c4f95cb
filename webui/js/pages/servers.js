// Servers: the list (with live health and breaker state) and the form.

import { resources } from "../api.js";
import { h, mount, fmtNum, fmtRate, fmtMs, badge, DASH } from "../dom.js";
import { poller } from "../stats.js";
import { inputField, numberField, checkboxField, selectField, textareaField, optionalSection, section, readText, readNumber, readList, assign, LocalError } from "../forms.js";
import { pageHeader, loading, errorState, linkButton, emptyState, resourceTable, healthBadge, breakerBadge, formPage, clone } from "./common.js";
import { discoveredOf } from "./discovered.js";

export async function renderServerList(outlet) {
  const header = pageHeader("Servers", {
    subtitle: "Backend addresses, with their protection settings and live state.",
    actions: [linkButton("New server", "#/servers/new", "btn-primary")],
  });
  mount(outlet, header, loading());
  let servers;
  try {
    servers = await resources.list("servers");
  } catch (e) {
    mount(outlet, header, errorState(e, () => renderServerList(outlet)));
    return;
  }
  if (!servers.length) {
    mount(outlet, header, emptyState("No servers yet. A server is one backend address (host:port).", "Create a server", "#/servers/new"));
    return;
  }
  const live = {};
  const cellOf = (name, key) => {
    live[name] = live[name] || {};
    const cell = h(key === "found" ? "div" : "span", { class: key === "rps" || key === "latency" ? "num" : key === "found" ? "muted small" : "" }, key === "found" ? "" : DASH);
    live[name][key] = cell;
    return cell;
  };
  const table = resourceTable({
    kind: "servers",
    items: servers,
    columns: [
      { label: "Name", cell: (s) => h("a", { href: `#/servers/${encodeURIComponent(s.name)}`, class: "strong" }, s.name) },
      { label: "Address", cell: (s) => h("div", null, h("code", null, s.addr), cellOf(s.name, "found")) },
      { label: "Weight", cell: (s) => fmtNum(s.weight), className: "num" },
      { label: "Max QPS", cell: (s) => (s.maxQPS ? fmtNum(s.maxQPS) : "\u221E"), className: "num" },
      { label: "Health", cell: (s) => cellOf(s.name, "health") },
      { label: "Circuit breaker", cell: (s) => cellOf(s.name, "breaker") },
      { label: "Requests/s", cell: (s) => cellOf(s.name, "rps"), className: "num" },
      { label: "Latency", cell: (s) => cellOf(s.name, "latency"), className: "num" },
    ],
  });
  mount(outlet, header, table);
  return poller.subscribe((p) => {
    const sample = p.latest;
    for (const s of servers) {
      const stats = sample?.data?.servers?.[s.name];
      const rates = sample?.servers?.[s.name];
      const cells = live[s.name];
      const found = stats ? [] : discoveredOf(sample?.data, { server: s.name });
      if (found.length) {
        // A host name: one server per address the DNS gives.
        cells.found.textContent = `\u2192 ${found.map(([, x]) => x.discovered.address).join(", ")}`;
        const healthy = found.filter(([, x]) => x.healthy !== false && !x.ejected).length;
        cells.health.replaceChildren(badge(`${healthy}/${found.length} healthy`, healthy === found.length ? "ok" : healthy ? "warn" : "bad"));
        const open = found.filter(([, x]) => x.breaker?.state === "open").length;
        cells.breaker.replaceChildren(found.some(([, x]) => x.breaker) ? badge(open ? `${open} open` : "closed", open ? "bad" : "ok") : badge("no breaker", "muted"));
        cells.rps.textContent = fmtRate(found.reduce((sum, [n]) => sum + (sample?.servers?.[n]?.rps || 0), 0));
        cells.latency.textContent = DASH;
        continue;
      }
      cells.found.textContent = "";
      cells.health.replaceChildren(healthBadge(stats));
      cells.breaker.replaceChildren(breakerBadge(stats));
      cells.rps.textContent = fmtRate(rates?.rps);
      cells.latency.textContent = fmtMs(rates?.meanMs ?? rates?.ewmaMs);
    }
  });
}

const HEALTH_DEFAULTS = { path: "/health", interval: 10, timeout: 5, status: 200, rise: 1, fall: 1 };
const BREAKER_DEFAULTS = { failureRateToOpen: 50, minRequests: 20, window: 10, openTimeout: 30, halfOpenTrafficRate: 10, successRateToClose: 80, halfOpenRequests: 10, failureStatuses: [500, 502, 503, 504] };
const PASSIVE_DEFAULTS = { consecutiveFailures: 5, ejectTime: 30 };

/** The fields of a circuit breaker (shared with the API form). */
export function breakerSection(prefix, value, what) {
  const v = value || BREAKER_DEFAULTS;
  const f = {
    failureRateToOpen: numberField({ label: "Failure rate to open (%)", field: `${prefix}.failureRateToOpen`, value: v.failureRateToOpen }),
    minRequests: numberField({ label: "Minimum requests", field: `${prefix}.minRequests`, value: v.minRequests, help: "in the window, before the rate counts" }),
    window: numberField({ label: "Window (s)", field: `${prefix}.window`, value: v.window }),
    openTimeout: numberField({ label: "Open timeout (s)", field: `${prefix}.openTimeout`, value: v.openTimeout, help: "then half-open" }),
    halfOpenTrafficRate: numberField({ label: "Half-open traffic (%)", field: `${prefix}.halfOpenTrafficRate`, value: v.halfOpenTrafficRate }),
    successRateToClose: numberField({ label: "Success rate to close (%)", field: `${prefix}.successRateToClose`, value: v.successRateToClose }),
    halfOpenRequests: numberField({ label: "Half-open trial requests", field: `${prefix}.halfOpenRequests`, value: v.halfOpenRequests }),
    failureStatuses: inputField({ label: "Failure statuses", field: `${prefix}.failureStatuses`, value: (v.failureStatuses || []).join(", "), help: "comma separated; refused connections and timeouts always count" }),
  };
  const sec = optionalSection({
    title: "Circuit breaker",
    field: prefix,
    enabled: !!value,
    description: `Stops sending to ${what} when too many requests fail, and answers 503 at once until it recovers.`,
    children: Object.values(f).map((x) => x.el),
  });
  const collect = (original) => {
    if (!sec.enabled) return null;
    const out = clone(original || {});
    for (const key of Object.keys(f)) {
      if (key === "failureStatuses") continue;
      assign(out, key, readNumber(f[key].input));
    }
    const statuses = readList(f.failureStatuses.input).map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n)) throw new LocalError(`${prefix}.failureStatuses`, `${s} is not an HTTP status`);
      return n;
    });
    assign(out, "failureStatuses", statuses.length ? statuses : undefined);
    return out;
  };
  return { el: sec.el, collect };
}

export function renderServerForm(outlet, params) {
  return formPage({
    outlet,
    kind: "servers",
    name: params.name,
    description: "One backend address and how the gateway protects it.",
    after: (saved) => `#/servers/${encodeURIComponent(saved.name)}`,
    loadExtra: async () => ({ certificates: await resources.list("certificates") }),
    build(item, extra) {
      const editing = !!item;
      const name = inputField({ label: "Name", field: "name", value: item?.name, required: true, disabled: editing, help: editing ? "The name cannot change." : "Letters, digits, - _ and ." });
      const addr = inputField({ label: "Address", field: "addr", value: item?.addr, required: true, placeholder: "10.0.0.5:8080", help: "host:port (a host name: a server per address)" });
      const weight = numberField({ label: "Weight", field: "weight", value: item?.weight ?? 1, help: "share for weighted balancing; 0 drains it" });
      const maxQPS = numberField({ label: "Max QPS", field: "maxQPS", value: item?.maxQPS ?? 0, help: "0 = no limit" });

      const hc = item?.healthCheck || HEALTH_DEFAULTS;
      const hf = {
        path: inputField({ label: "Path", field: "healthCheck.path", value: hc.path, placeholder: "/health" }),
        status: numberField({ label: "Expected status", field: "healthCheck.status", value: hc.status }),
        body: inputField({ label: "Expected body text", field: "healthCheck.body", value: hc.body, help: "optional substring" }),
        interval: numberField({ label: "Interval (s)", field: "healthCheck.interval", value: hc.interval }),
        timeout: numberField({ label: "Timeout (s)", field: "healthCheck.timeout", value: hc.timeout }),
        rise: numberField({ label: "Rise", field: "healthCheck.rise", value: hc.rise, help: "passes in a row to come back" }),
        fall: numberField({ label: "Fall", field: "healthCheck.fall", value: hc.fall, help: "failures in a row to leave" }),
      };
      const health = optionalSection({
        title: "Health check",
        field: "healthCheck",
        enabled: !!item?.healthCheck,
        description: "The gateway fetches the path every interval; a server that fails leaves its clusters' rotation until it passes again.",
        children: Object.values(hf).map((x) => x.el),
      });
      const breaker = breakerSection("circuitBreaker", item?.circuitBreaker, "this server");
      const ph = item?.passiveHealth || PASSIVE_DEFAULTS;
      const pf = {
        consecutiveFailures: numberField({ label: "Consecutive failures", field: "passiveHealth.consecutiveFailures", value: ph.consecutiveFailures }),
        ejectTime: numberField({ label: "Eject time (s)", field: "passiveHealth.ejectTime", value: ph.ejectTime }),
      };
      const passive = optionalSection({
        title: "Passive health",
        field: "passiveHealth",
        enabled: !!item?.passiveHealth,
        description: "Takes the server out of rotation after proxied requests fail in a row.",
        children: Object.values(pf).map((x) => x.el),
      });
      const t = item?.tls || { verify: true };
      const tf = {
        verify: checkboxField({ label: "Verify the server's certificate", field: "tls.verify", checked: t.verify !== false, help: "its chain and its name; off trusts any certificate" }),
        serverName: inputField({ label: "Server name", field: "tls.serverName", value: t.serverName, placeholder: "users.internal", help: "sent by SNI and verified; empty = the host of the address" }),
        clientCertificate: selectField({
          label: "Client certificate",
          field: "tls.clientCertificate",
          value: t.clientCertificate || "",
          options: [["", "none"], ...extra.certificates.map((c) => [c.name, c.name])],
          help: "presented to the server (mutual TLS)",
        }),
        ca: textareaField({ label: "Trusted CA certificates (PEM)", field: "tls.ca", value: t.ca, rows: 4, placeholder: "-----BEGIN CERTIFICATE-----", help: "empty = the system's authorities" }),
      };
      const tls = optionalSection({
        title: "TLS",
        field: "tls",
        enabled: !!item?.tls,
        description: "Speak HTTPS to this server: requests, health checks and aggregation calls. A certificate that does not verify is a 502 saying why, never a fallback to plain HTTP.",
        children: Object.values(tf).map((x) => x.el),
      });
      const fields = [section("Server", null, name.el, addr.el, weight.el, maxQPS.el), tls.el, health.el, breaker.el, passive.el];
      const collect = () => {
        const out = clone(item);
        assign(out, "name", readText(name.input));
        assign(out, "addr", readText(addr.input));
        assign(out, "weight", readNumber(weight.input));
        assign(out, "maxQPS", readNumber(maxQPS.input));
        if (health.enabled) {
          const v = clone(item?.healthCheck);
          assign(v, "path", readText(hf.path.input));
          assign(v, "body", readText(hf.body.input) ?? null);
          for (const key of ["status", "interval", "timeout", "rise", "fall"]) assign(v, key, readNumber(hf[key].input));
          out.healthCheck = v;
        } else {
          out.healthCheck = null;
        }
        if (tls.enabled) {
          const v = clone(item?.tls);
          v.verify = tf.verify.input.checked;
          assign(v, "serverName", readText(tf.serverName.input) ?? null);
          assign(v, "clientCertificate", tf.clientCertificate.input.value || null);
          assign(v, "ca", readText(tf.ca.input) ? tf.ca.input.value : null);
          out.tls = v;
        } else {
          out.tls = null;
        }
        out.circuitBreaker = breaker.collect(item?.circuitBreaker);
        if (passive.enabled) {
          const v = clone(item?.passiveHealth);
          for (const key of Object.keys(pf)) assign(v, key, readNumber(pf[key].input));
          out.passiveHealth = v;
        } else {
          out.passiveHealth = null;
        }
        return out;
      };
      return { fields, collect };
    },
  });
}
