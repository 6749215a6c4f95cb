// A hash router: "#/servers/s1" -> the page registered for "/servers/:name".
// Hash routes need no server-side fallback, so the static files are enough.

function compile(pattern) {
  const names = [];
  const source = pattern
    .split("/")
    .map((part) => {
      if (part.startsWith(":")) {
        names.push(part.slice(1));
        return "([^/]+)";
      }
      return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("/");
  return { regex: new RegExp(`^${source}/?$`), names };
}

export class Router {
  /**
   * @param {Array<{path: string, render: Function, nav?: string}>} routes
   *   render(outlet, params, query) may return (a promise of) a cleanup
   *   function, called when the user leaves the page.
   * @param {(route, params) => HTMLElement} prepare picks the outlet for a
   *   route (the shell, or the bare login screen).
   */
  constructor(routes, prepare, { fallback = "/" } = {}) {
    this.routes = routes.map((r) => ({ ...r, ...compile(r.path) }));
    this.prepare = prepare;
    this.fallback = fallback;
    this.cleanup = null;
    this.generation = 0;
    this.guard = null;
    window.addEventListener("hashchange", () => this.resolve());
  }

  /** The current path, without "#" or query. */
  get path() {
    const hash = location.hash.replace(/^#/, "") || "/";
    return hash.split("?")[0];
  }

  get query() {
    const hash = location.hash.replace(/^#/, "");
    const i = hash.indexOf("?");
    return new URLSearchParams(i >= 0 ? hash.slice(i + 1) : "");
  }

  navigate(path) {
    if (location.hash === `#${path}`) this.resolve();
    else location.hash = path;
  }

  match(path) {
    for (const route of this.routes) {
      const m = route.regex.exec(path);
      if (m) {
        const params = {};
        route.names.forEach((name, i) => {
          params[name] = decodeURIComponent(m[i + 1]);
        });
        return { route, params };
      }
    }
    return null;
  }

  async resolve() {
    const generation = ++this.generation;
    if (this.cleanup) {
      try {
        this.cleanup();
      } catch (e) {
        console.error(e);
      }
      this.cleanup = null;
    }
    const path = this.path;
    if (this.guard) {
      const redirect = this.guard(path);
      if (redirect && redirect !== path) {
        this.navigate(redirect);
        return;
      }
    }
    const found = this.match(path);
    if (!found) {
      this.navigate(this.fallback);
      return;
    }
    const outlet = this.prepare(found.route, found.params);
    const result = await found.route.render(outlet, found.params, this.query);
    if (generation !== this.generation) {
      // The user moved on while the page loaded.
      if (typeof result === "function") result();
      return;
    }
    this.cleanup = typeof result === "function" ? result : null;
  }
}
