// The login screen: the admin token, checked against the admin, then kept
// in sessionStorage (gone when the tab closes).

import { call, auth } from "../api.js";
import { h, mount, uniqueId } from "../dom.js";

export function renderLogin(outlet, params, query) {
  const id = uniqueId("token");
  const errId = `${id}-err`;
  const input = h("input", { id, type: "password", name: "token", autocomplete: "current-password", required: true, "aria-describedby": errId, spellcheck: "false" });
  const error = h("p", { class: "field-error", id: errId, role: "alert", hidden: true });
  const submit = h("button", { class: "btn btn-primary btn-block", type: "submit" }, "Sign in");
  const notice = query.get("expired") ? h("p", { class: "banner banner-info" }, "Your session ended or the token was refused: sign in again.") : null;
  const form = h(
    "form",
    { class: "login-card", novalidate: true, "aria-labelledby": "login-title" },
    h("div", { class: "login-brand" }, h("img", { src: "favicon.svg", alt: "", width: 40, height: 40 }), h("div", null, h("h1", { id: "login-title" }, "Gateway admin"), h("p", { class: "muted" }, "Sign in with the admin token"))),
    notice,
    h("div", { class: "field" }, h("label", { for: id }, "Admin token"), input, error, h("p", { class: "help" }, "The admin.token of the gateway's config file.")),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Enter the admin token.";
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    submit.disabled = true;
    try {
      await call("GET", "/proxies", undefined, { token, redirect: false });
      auth.token = token;
      const next = query.get("next");
      location.hash = next && next.startsWith("/") && !next.startsWith("/login") ? next : "/";
    } catch (e) {
      error.textContent = e.status === 401 ? "This token is not accepted by the admin." : e.message;
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.select();
    } finally {
      submit.disabled = false;
    }
  });
  mount(outlet, h("main", { class: "login" }, form));
  input.focus();
}
