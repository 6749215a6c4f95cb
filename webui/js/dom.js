// Small DOM and formatting helpers shared by every page.

/** The text shown for a value the gateway did not report. */
export const DASH = "\u2013";

const PROPS = new Set(["value", "checked", "disabled", "selected", "hidden", "htmlFor", "open", "indeterminate"]);

/**
 * Build an element: h("a", {href: "#/x", class: "btn"}, "text", child, ...).
 * Children may be strings, numbers, nodes, arrays, or null/false (skipped).
 * Text always goes in as text nodes, never as HTML.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2).toLowerCase(), value);
      else if (PROPS.has(key)) el[key] = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything in an element with new children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
/** A document-unique id, for label/aria wiring. */
export function uniqueId(prefix = "id") {
  uid += 1;
  return `${prefix}-${uid}`;
}

// -- formatting ---------------------------------------------------------------

export function isNum(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** A number with at most `digits` decimals, or the dash. */
export function fmtNum(x, digits = 0) {
  if (!isNum(x)) return DASH;
  return x.toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function fmtRate(x) {
  if (!isNum(x)) return DASH;
  return `${fmtNum(x, x < 10 ? 2 : 1)}/s`;
}

export function fmtPct(x, digits = 1) {
  if (!isNum(x)) return DASH;
  return `${fmtNum(x, digits)}%`;
}

export function fmtMs(x) {
  if (!isNum(x)) return DASH;
  if (x >= 1000) return `${fmtNum(x / 1000, 2)} s`;
  return `${fmtNum(x, x < 10 ? 2 : 1)} ms`;
}

/** Seconds since the epoch as a local date and time. */
export function fmtTime(seconds) {
  if (!isNum(seconds)) return DASH;
  const d = new Date(seconds * 1000);
  return d.toLocaleString(undefined, { hour12: false });
}

/** A duration in seconds, for humans: "42 s", "3 min 5 s", "2 h 1 min". */
export function fmtDuration(seconds) {
  if (!isNum(seconds)) return DASH;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** Read a path like "a.b" from an object, or undefined. */
export function dig(obj, ...keys) {
  let cur = obj;
  for (const key of keys) {
    if (cur === null || cur === undefined || typeof cur !== "object") return undefined;
    cur = cur[key];
  }
  return cur;
}

// -- notifications and dialogs -------------------------------------------------

/** Show a short message in the corner; kind is "ok", "error" or "info". */
export function toast(message, kind = "ok") {
  let region = document.getElementById("toasts");
  if (!region) {
    region = h("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(region);
  }
  const item = h("div", { class: `toast toast-${kind}` }, message);
  region.append(item);
  setTimeout(() => item.classList.add("toast-leaving"), 3500);
  setTimeout(() => item.remove(), 4000);
}

/**
 * Ask for confirmation in a modal <dialog>.
 * @returns {Promise<boolean>} whether the user confirmed.
 */
export function confirmDialog(title, message, { confirmLabel = "Delete", danger = true } = {}) {
  return new Promise((resolve) => {
    const titleId = uniqueId("dlg");
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": titleId },
      h("h2", { id: titleId }, title),
      h("p", null, message),
      h(
        "form",
        { method: "dialog", class: "dialog-actions" },
        h("button", { class: "btn", value: "cancel", type: "submit" }, "Cancel"),
        h("button", { class: danger ? "btn btn-danger" : "btn btn-primary", value: "ok", type: "submit" }, confirmLabel),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** A coloured status pill. tone: ok, warn, bad, info, muted. */
export function badge(text, tone = "muted", title) {
  return h("span", { class: `badge badge-${tone}`, title }, text);
}
