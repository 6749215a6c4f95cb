// Form building blocks and the mapping of the admin's validation errors
// ({"error", "field": "nodes[1].attrName"}) onto the input they are about.
//
// Every input carries data-field="<the API's field path>", and sits in an
// element marked data-error-scope whose direct .field-error child shows the
// message.  Containers (a list of rows, an optional section) are scopes too,
// so "servers[3]" or "conditions" still land next to the right control.

import { h, uniqueId } from "./dom.js";

/** A problem found before sending (e.g. letters in a number input). */
export class LocalError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

function errorSlot(id) {
  return h("p", { class: "field-error", id, hidden: true });
}

function describedBy(...ids) {
  return ids.filter(Boolean).join(" ") || undefined;
}

/**
 * A labelled input.
 * @returns {{el: HTMLElement, input: HTMLInputElement}}
 */
export function inputField({ label, field, value, type = "text", help, placeholder, required, disabled, autocomplete, inputmode, step, wide, list }) {
  const id = uniqueId("f");
  const helpId = help ? `${id}-help` : null;
  const errId = `${id}-err`;
  const input = h("input", {
    id,
    name: field,
    type,
    value: value === null || value === undefined ? "" : String(value),
    placeholder,
    disabled,
    autocomplete: autocomplete || "off",
    inputmode,
    step: type === "number" ? step || "any" : undefined,
    list,
    spellcheck: "false",
    dataset: { field },
    "aria-describedby": describedBy(helpId, errId),
    "aria-required": required ? "true" : undefined,
  });
  const el = h(
    "div",
    { class: ["field", wide && "field-wide"], dataset: { errorScope: "" } },
    h("label", { for: id }, label, required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null),
    input,
    help ? h("p", { class: "help", id: helpId }, help) : null,
    errorSlot(errId),
  );
  return { el, input };
}

/** A number input (empty means "the default"). */
export function numberField(opts) {
  return inputField({ ...opts, type: "number", inputmode: "decimal" });
}

/**
 * A labelled <select>.
 * @param {Array<string|[string, string]>} options values, or [value, label] pairs.
 */
export function selectField({ label, field, value, options, help, required, disabled, wide }) {
  const id = uniqueId("f");
  const helpId = help ? `${id}-help` : null;
  const errId = `${id}-err`;
  const select = selectInput({ id, field, value, options, disabled, describedBy: describedBy(helpId, errId) });
  const el = h(
    "div",
    { class: ["field", wide && "field-wide"], dataset: { errorScope: "" } },
    h("label", { for: id }, label, required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null),
    select,
    help ? h("p", { class: "help", id: helpId }, help) : null,
    errorSlot(errId),
  );
  return { el, input: select };
}

/** A bare <select> (for table rows, where the column header labels it). */
export function selectInput({ id, field, value, options, disabled, label, describedBy: described }) {
  const select = h("select", { id, name: field, disabled, dataset: { field }, "aria-label": label, "aria-describedby": described });
  let found = false;
  for (const option of options) {
    const [v, text] = Array.isArray(option) ? option : [option, option];
    const selected = String(v) === String(value ?? "");
    found = found || selected;
    select.append(h("option", { value: v, selected }, text));
  }
  if (!found && value !== undefined && value !== null && value !== "") {
    // Keep a value the UI does not know (e.g. a deleted cluster) visible.
    select.append(h("option", { value, selected: true }, `${value} (missing)`));
  }
  return select;
}

/** A checkbox with its label. */
export function checkboxField({ label, field, checked, help, disabled }) {
  const id = uniqueId("f");
  const errId = `${id}-err`;
  const input = h("input", { id, name: field, type: "checkbox", checked: !!checked, disabled, dataset: { field }, "aria-describedby": errId });
  const el = h(
    "div",
    { class: "field field-check", dataset: { errorScope: "" } },
    h("label", { for: id, class: "check" }, input, h("span", null, label)),
    help ? h("p", { class: "help" }, help) : null,
    errorSlot(errId),
  );
  return { el, input };
}

/** A labelled <textarea>. */
export function textareaField({ label, field, value, help, placeholder, rows = 3, wide = true }) {
  const id = uniqueId("f");
  const helpId = help ? `${id}-help` : null;
  const errId = `${id}-err`;
  const input = h("textarea", { id, name: field, rows, placeholder, spellcheck: "false", dataset: { field }, "aria-describedby": describedBy(helpId, errId) });
  input.value = value ?? "";
  const el = h(
    "div",
    { class: ["field", wide && "field-wide"], dataset: { errorScope: "" } },
    h("label", { for: id }, label),
    input,
    help ? h("p", { class: "help", id: helpId }, help) : null,
    errorSlot(errId),
  );
  return { el, input };
}

/**
 * An optional object (health check, circuit breaker, ...): a switch turns it
 * on or off; off sends null.
 * @returns {{el, body, toggle, get enabled(): boolean}}
 */
export function optionalSection({ title, field, enabled, description, children }) {
  const id = uniqueId("sec");
  const toggle = h("input", { id, type: "checkbox", checked: !!enabled, class: "switch-input", dataset: { toggle: field } });
  const body = h("div", { class: "section-body form-grid", hidden: !enabled }, children);
  const errId = `${id}-err`;
  toggle.addEventListener("change", () => {
    body.hidden = !toggle.checked;
    el.classList.toggle("section-on", toggle.checked);
  });
  const el = h(
    "fieldset",
    { class: ["section", enabled && "section-on"], dataset: { field, errorScope: "" }, "aria-describedby": errId },
    h("legend", null, title),
    h("label", { class: "switch", for: id }, toggle, h("span", { class: "switch-track", "aria-hidden": "true" }), h("span", null, `Enable ${title.toLowerCase()}`)),
    description ? h("p", { class: "help" }, description) : null,
    errorSlot(errId),
    body,
  );
  return {
    el,
    body,
    toggle,
    get enabled() {
      return toggle.checked;
    },
  };
}

/** A plain group of fields with a legend. */
export function section(title, description, ...children) {
  return h(
    "fieldset",
    { class: "section section-on" },
    h("legend", null, title),
    description ? h("p", { class: "help" }, description) : null,
    h("div", { class: "form-grid" }, children),
  );
}

// -- reading values -------------------------------------------------------------

/** Empty -> undefined; otherwise the trimmed text. */
export function readText(input) {
  const v = input.value.trim();
  return v === "" ? undefined : v;
}

/** Empty -> undefined; a number; letters in a number input -> LocalError. */
export function readNumber(input) {
  if (input.validity && input.validity.badInput) throw new LocalError(input.dataset.field, "must be a number");
  const v = input.value.trim();
  if (v === "") return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new LocalError(input.dataset.field, "must be a number");
  return n;
}

/** Comma or newline separated text -> list of trimmed non-empty strings. */
export function readList(input) {
  return input.value
    .split(/[\n,]/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Set obj[key] = value, or delete the key when value is undefined (the API's default applies). */
export function assign(obj, key, value) {
  if (value === undefined) delete obj[key];
  else obj[key] = value;
}

// -- errors -------------------------------------------------------------------------

/** Candidate paths for a field, most precise first: "a.b[2].c", "a.b[2]", "a.b", "a". */
export function fieldCandidates(path) {
  const out = [];
  let p = path;
  while (p) {
    out.push(p);
    const m = /^(.*)(\[\d+\]|\.[^.[\]]+)$/.exec(p);
    if (!m) break;
    p = m[1];
  }
  return out;
}

/** Shows errors next to the inputs of one form, or in its banner. */
export class FormErrors {
  constructor(form, banner) {
    this.form = form;
    this.banner = banner;
  }

  clear() {
    for (const slot of this.form.querySelectorAll(".field-error")) {
      slot.hidden = true;
      slot.textContent = "";
    }
    for (const el of this.form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    for (const el of this.form.querySelectorAll(".has-error")) el.classList.remove("has-error");
    this.banner.hidden = true;
    this.banner.textContent = "";
  }

  /** The element for a field path (the closest match), or null. */
  find(field) {
    if (!field) return null;
    for (const candidate of fieldCandidates(field)) {
      const el = this.form.querySelector(`[data-field="${CSS.escape(candidate)}"]`);
      if (el) return el;
    }
    return null;
  }

  /**
   * Show a message next to a field.
   * @returns {boolean} whether an input matched.
   */
  set(field, message) {
    const el = this.find(field);
    if (!el) return false;
    const scope = el.matches("[data-error-scope]") ? el : el.closest("[data-error-scope]");
    const slot = scope && scope.querySelector(":scope > .field-error");
    if (!slot) return false;
    if (!slot.id) slot.id = uniqueId("err");
    const described = (el.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
    if (!described.includes(slot.id)) el.setAttribute("aria-describedby", [...described, slot.id].join(" "));
    // Name the field when the error is about a part of it ("servers[3]").
    const exact = el.dataset.field === field;
    slot.textContent = exact ? message : `${field}: ${message}`;
    slot.hidden = false;
    if (el.matches("input, select, textarea")) el.setAttribute("aria-invalid", "true");
    scope.classList.add("has-error");
    for (let p = scope.parentElement; p; p = p.parentElement) if (p.tagName === "DETAILS") p.open = true;
    return true;
  }

  showBanner(message) {
    this.banner.textContent = message;
    this.banner.hidden = false;
  }

  /** Show an ApiError or LocalError where it belongs; focus the field. */
  show(error) {
    this.clear();
    const field = error.field || "";
    const message = error.message || String(error);
    if (this.set(field, message)) {
      const el = this.find(field);
      const focusable = el.matches("input, select, textarea") ? el : el.querySelector("input, select, textarea");
      (focusable || el).scrollIntoView({ block: "center", behavior: "instant" });
      if (focusable) focusable.focus({ preventScroll: true });
      return;
    }
    this.showBanner(field ? `${field}: ${message}` : message);
    this.banner.scrollIntoView({ block: "center", behavior: "instant" });
  }
}

/** The error banner shown above a form's fields. */
export function errorBanner() {
  return h("div", { class: "banner banner-error", role: "alert", hidden: true });
}
