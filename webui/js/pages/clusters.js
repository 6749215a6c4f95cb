// Clusters: the list and the form (a checklist of servers or a DNS
// discovery, a balancer).

import { resources } from "../api.js";
import { h, mount, uniqueId, DASH } from "../dom.js";
import { poller } from "../stats.js";
import { inputField, numberField, selectField, section, optionalSection, readText, readNumber, assign } from "../forms.js";
import { pageHeader, loading, errorState, linkButton, emptyState, resourceTable, formPage, clone, chips } from "./common.js";
import { breakerSection } from "./servers.js";
import { discoveredOf, discoveredChips, discoveredTable, lookupLine, worstTone } from "./discovered.js";

export const LOAD_BALANCERS = [
  ["round-robin", "Round robin"],
  ["weighted-round-robin", "Weighted round robin"],
  ["least-connections", "Least connections"],
  ["ip-hash", "IP hash (sticky)"],
  ["random", "Random"],
  ["p2c-ewma", "Power of two choices (latency EWMA)"],
];

function serverTone(name) {
  const data = poller.latest?.data;
  const s = data?.servers?.[name];
  // A server that names a host: the worst of its addresses.
  if (!s) return worstTone(discoveredOf(data, { server: name }));
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
  // The servers of a cluster with DNS discovery, kept live.
  const found = {};
  const discoveredCell = (c) => {
    const slot = h("div", null, discoveredChips(discoveredOf(poller.latest?.data, { cluster: c.name })));
    found[c.name] = slot;
    return h("div", null, h("div", { class: "small" }, "DNS SRV ", h("code", null, c.discovery.dns)), slot);
  };
  mount(
    outlet,
    header,
    resourceTable({
      kind: "clusters",
      items: clusters,
      columns: [
        { label: "Name", cell: (c) => h("a", { class: "strong", href: `#/clusters/${encodeURIComponent(c.name)}/edit` }, c.name) },
        { label: "Load balancing", cell: (c) => balancer[c.loadBalance] || c.loadBalance || DASH },
        { label: "Servers", cell: (c) => (c.discovery ? discoveredCell(c) : chips(c.servers, (s) => `#/servers/${encodeURIComponent(s)}`, serverTone)) },
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
  return poller.subscribe((p) => {
    for (const [name, slot] of Object.entries(found)) {
      slot.replaceChildren(discoveredChips(discoveredOf(p.latest?.data, { cluster: name })));
    }
  });
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
      const d = item?.discovery;
      const df = {
        dns: inputField({ label: "DNS name (SRV)", field: "discovery.dns", value: d?.dns, placeholder: "_http._tcp.users.service.internal", help: "its SRV records are the servers: the lowest priority serves, their weights share the traffic (with a weighted balancer)", wide: true }),
        maxQPS: numberField({ label: "Max QPS of each server", field: "discovery.maxQPS", value: d?.maxQPS ?? 0, help: "0 = no limit" }),
        hcPath: inputField({ label: "Health check path", field: "discovery.healthCheck.path", value: d?.healthCheck?.path, placeholder: "/health", help: "empty: no active health check" }),
        hcInterval: numberField({ label: "Check interval (s)", field: "discovery.healthCheck.interval", value: d?.healthCheck?.interval ?? 10 }),
        hcTimeout: numberField({ label: "Check timeout (s)", field: "discovery.healthCheck.timeout", value: d?.healthCheck?.timeout ?? 5 }),
      };
      const breaker = breakerSection("discovery.circuitBreaker", d?.circuitBreaker, "each discovered server");
      const discovery = optionalSection({
        title: "DNS discovery",
        field: "discovery",
        enabled: !!d,
        description: "Find the servers in the DNS instead of listing them: each address of each SRV target is a server, health-checked and protected on its own, kept current on the records' TTL.",
        children: [...Object.values(df).map((x) => x.el), breaker.el],
      });
      serverList.hidden = !!d;
      discovery.toggle.addEventListener("change", () => {
        serverList.hidden = discovery.enabled;
      });
      const fields = [section("Cluster", null, name.el, lb.el, serverList), discovery.el];
      if (d && item?.name) {
        const live = h("div", null, discoveredTable(discoveredOf(poller.latest?.data, { cluster: item.name }), { srv: true }));
        const lookup = h("span", null, lookupLine(poller.latest?.data, "services", d.dns));
        fields.push(h("section", { class: "card", "aria-labelledby": "found-h" }, h("h2", { id: "found-h" }, "Discovered servers"), h("p", null, "SRV ", h("code", null, d.dns), " \u00B7 ", lookup), live));
        // Until the page is left (the form is shown after this build).
        let shown = false;
        const stop = poller.subscribe((p) => {
          if (!live.isConnected) {
            if (shown) stop();
            return;
          }
          shown = true;
          live.replaceChildren(discoveredTable(discoveredOf(p.latest?.data, { cluster: item.name }), { srv: true }));
          lookup.replaceChildren(lookupLine(p.latest?.data, "services", d.dns));
        });
      }
      const collect = () => {
        const out = clone(item);
        assign(out, "name", readText(name.input));
        assign(out, "loadBalance", lb.input.value);
        for (const b of boxes) b.box.dataset.field = "";
        if (discovery.enabled) {
          const v = clone(item?.discovery);
          assign(v, "dns", readText(df.dns.input));
          assign(v, "maxQPS", readNumber(df.maxQPS.input));
          const path = readText(df.hcPath.input);
          if (path !== undefined) {
            const hc = clone(item?.discovery?.healthCheck);
            assign(hc, "path", path);
            assign(hc, "interval", readNumber(df.hcInterval.input));
            assign(hc, "timeout", readNumber(df.hcTimeout.input));
            v.healthCheck = hc;
          } else {
            v.healthCheck = null;
          }
          v.circuitBreaker = breaker.collect(item?.discovery?.circuitBreaker);
          out.discovery = v;
          out.servers = [];
          return out;
        }
        out.discovery = null;
        out.servers = boxes.filter((b) => b.box.checked).map((b) => b.name);
        // The API names servers by their index in the list sent.
        out.servers.forEach((n, i) => {
          boxes.find((b) => b.name === n).box.dataset.field = `servers[${i}]`;
        });
        return out;
      };
      return { fields, collect };
    },
  });
}
