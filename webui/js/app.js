// The admin web UI: the shell (navigation, sign out), the routes, and the
// sign-in guard.  No build step: the browser loads these ES modules as they are.

import { auth, call } from "./api.js";
import { h, mount } from "./dom.js";
import { Router } from "./router.js";
import { poller } from "./stats.js";
import { renderLogin } from "./pages/login.js";
import { renderDashboard } from "./pages/dashboard.js";
import { renderServerList, renderServerForm } from "./pages/servers.js";
import { renderServer } from "./pages/server.js";
import { renderClusterList, renderClusterForm } from "./pages/clusters.js";
import { renderApiList, renderApiForm } from "./pages/apis.js";
import { renderConsumerList, renderConsumerForm, renderConsumerCreated } from "./pages/consumers.js";
import { renderRoutingList, renderRoutingForm } from "./pages/routings.js";
import { renderProxies } from "./pages/proxies.js";
import { renderCertificateList, renderCertificateForm } from "./pages/certificates.js";

const NAV = [
  ["dashboard", "Dashboard", "#/"],
  ["servers", "Servers", "#/servers"],
  ["clusters", "Clusters", "#/clusters"],
  ["consumers", "Consumers", "#/consumers"],
  ["apis", "APIs", "#/apis"],
  ["routings", "Routings", "#/routings"],
  ["certificates", "Certificates", "#/certificates"],
  ["proxies", "Proxies", "#/proxies"],
];

const routes = [
  { path: "/login", title: "Sign in", bare: true, render: renderLogin },
  { path: "/", title: "Dashboard", nav: "dashboard", render: renderDashboard },
  { path: "/servers", title: "Servers", nav: "servers", render: renderServerList },
  { path: "/servers/new", title: "New server", nav: "servers", render: renderServerForm },
  { path: "/servers/:name/edit", title: "Edit server", nav: "servers", render: renderServerForm },
  { path: "/servers/:name", title: "Server", nav: "servers", render: renderServer },
  { path: "/clusters", title: "Clusters", nav: "clusters", render: renderClusterList },
  { path: "/clusters/new", title: "New cluster", nav: "clusters", render: renderClusterForm },
  { path: "/clusters/:name/edit", title: "Edit cluster", nav: "clusters", render: renderClusterForm },
  { path: "/clusters/:name", title: "Edit cluster", nav: "clusters", render: renderClusterForm },
  { path: "/consumers", title: "Consumers", nav: "consumers", render: renderConsumerList },
  { path: "/consumers/new", title: "New consumer", nav: "consumers", render: renderConsumerForm },
  { path: "/consumers/:name/edit", title: "Edit consumer", nav: "consumers", render: renderConsumerForm },
  { path: "/consumers/:name/created", title: "Consumer saved", nav: "consumers", render: renderConsumerCreated },
  { path: "/consumers/:name", title: "Edit consumer", nav: "consumers", render: renderConsumerForm },
  { path: "/apis", title: "APIs", nav: "apis", render: renderApiList },
  { path: "/apis/new", title: "New API", nav: "apis", render: renderApiForm },
  { path: "/apis/:name/edit", title: "Edit API", nav: "apis", render: renderApiForm },
  { path: "/apis/:name", title: "Edit API", nav: "apis", render: renderApiForm },
  { path: "/routings", title: "Routings", nav: "routings", render: renderRoutingList },
  { path: "/routings/new", title: "New routing", nav: "routings", render: renderRoutingForm },
  { path: "/routings/:name/edit", title: "Edit routing", nav: "routings", render: renderRoutingForm },
  { path: "/routings/:name", title: "Edit routing", nav: "routings", render: renderRoutingForm },
  { path: "/certificates", title: "Certificates", nav: "certificates", render: renderCertificateList },
  { path: "/certificates/new", title: "New certificate", nav: "certificates", render: renderCertificateForm },
  { path: "/certificates/:name/edit", title: "Edit certificate", nav: "certificates", render: renderCertificateForm },
  { path: "/certificates/:name", title: "Edit certificate", nav: "certificates", render: renderCertificateForm },
  { path: "/proxies", title: "Proxies", nav: "proxies", render: renderProxies },
];

const root = document.getElementById("app");
let shell = null;
let liveUnsubscribe = null;

function liveIndicator() {
  const dot = h("span", { class: "dot", "aria-hidden": "true" });
  const text = h("span", null, "connecting\u2026");
  const el = h("div", { class: "live", role: "status", "aria-live": "off" }, dot, text);
  if (liveUnsubscribe) liveUnsubscribe();
  liveUnsubscribe = poller.subscribe((p) => {
    const ok = !p.error;
    dot.className = `dot ${ok ? "dot-ok pulse" : "dot-bad"}`;
    text.textContent = ok ? "live \u00B7 every 2 s" : "statistics unavailable";
  });
  return el;
}

function buildShell() {
  const links = {};
  const nav = h(
    "nav",
    { class: "nav", "aria-label": "Main" },
    h(
      "ul",
      null,
      NAV.map(([key, label, href]) => {
        links[key] = h("a", { href, class: `nav-link nav-${key}` }, h("span", { class: "nav-icon", "aria-hidden": "true" }), label);
        return h("li", null, links[key]);
      }),
    ),
  );
  const content = h("main", { id: "content", class: "content", tabindex: "-1" });
  const signOut = h(
    "button",
    {
      type: "button",
      class: "btn btn-sidebar",
      onClick: () => {
        auth.signOut();
        poller.reset();
        shell = null;
        location.hash = "/login";
      },
    },
    "Sign out",
  );
  const el = h(
    "div",
    { class: "shell" },
    h("a", { class: "skip-link", href: "#content", onClick: (e) => { e.preventDefault(); content.focus(); } }, "Skip to content"),
    h(
      "aside",
      { class: "sidebar" },
      h("a", { class: "brand", href: "#/" }, h("img", { src: "favicon.svg", alt: "", width: 28, height: 28 }), h("span", null, "Gateway")),
      nav,
      h("div", { class: "sidebar-footer" }, liveIndicator(), signOut),
    ),
    content,
  );
  return { el, content, links };
}

const router = new Router(routes, (route) => {
  document.title = `${route.title} \u00B7 Gateway admin`;
  if (route.bare) {
    shell = null;
    const outlet = h("div", { class: "bare" });
    mount(root, outlet);
    return outlet;
  }
  if (!shell) {
    shell = buildShell();
    mount(root, shell.el);
  }
  poller.start();
  for (const [key, link] of Object.entries(shell.links)) {
    if (key === route.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  shell.content.replaceChildren();
  window.scrollTo(0, 0);
  return shell.content;
});

router.guard = (path) => {
  if (path !== "/login" && !auth.signedIn) return `/login?next=${encodeURIComponent(path)}`;
  return null;
};

auth.onUnauthorized = () => {
  poller.reset();
  shell = null;
  const path = router.path;
  if (path !== "/login") location.hash = `/login?expired=1&next=${encodeURIComponent(path)}`;
};

async function boot() {
  if (!auth.signedIn) {
    // An admin without a token accepts anyone: skip the login screen.
    try {
      await call("GET", "/proxies", undefined, { token: "", redirect: false });
      auth.token = "";
    } catch {
      // A token is needed: the guard shows the login screen.
    }
  }
  router.resolve();
}

boot();
