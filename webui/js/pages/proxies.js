// The live proxies: their address, version and the store revision they serve.

import { fetchProxies } from "../api.js";
import { h, mount } from "../dom.js";
import { pageHeader, loading, errorState } from "./common.js";
import { proxiesTable } from "./dashboard.js";

export async function renderProxies(outlet) {
  const header = pageHeader("Proxies", { subtitle: "The proxies serving traffic, and the store revision each one runs." });
  mount(outlet, header, loading());
  let proxies;
  try {
    proxies = await fetchProxies();
  } catch (e) {
    mount(outlet, header, errorState(e, () => renderProxies(outlet)));
    return;
  }
  mount(outlet, header, h("section", { class: "card" }, proxiesTable(proxies || [])));
}
