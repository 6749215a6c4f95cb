// The API form's sections for what the gateway does at the edge, by
// itself: CORS, header transformations and a mock response. Each returns
// {el, collect()}; collect() gives the field's value (null when off) or
// throws a LocalError naming the field.

import { inputField, numberField, selectField, checkboxField, textareaField, optionalSection, readNumber, readList, LocalError } from "../forms.js";
import { clone } from "./common.js";

/** "Name: value" lines -> {Name: value}; a line without ":" is an error of `field`. */
export function readHeaderLines(input, field) {
  const out = {};
  for (const [i, line] of input.value.split("\n").entries()) {
    if (!line.trim()) continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new LocalError(field, `line ${i + 1}: write Name: value`);
    out[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return out;
}

function headerLines(map) {
  return Object.entries(map || {})
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n");
}

// -- CORS --------------------------------------------------------------------------

export function corsSection(item) {
  const c = item || { origins: [], methods: [], headers: [], exposeHeaders: [], credentials: false, maxAge: null };
  const origins = textareaField({
    label: "Allowed origins",
    field: "cors.origins",
    value: (c.origins || []).join("\n"),
    placeholder: "https://app.example.com\nhttps://*.example.org",
    help: "one per line; https://*.example.org allows every subdomain (any depth, same scheme and port), * every origin",
    wide: false,
  });
  const methods = inputField({ label: "Methods", field: "cors.methods", value: (c.methods || []).join(", "), placeholder: "the API's method", help: "comma separated, or *; GET, HEAD and POST are always allowed" });
  const headers = inputField({ label: "Request headers", field: "cors.headers", value: (c.headers || []).join(", "), placeholder: "any asked for", help: "comma separated, or *" });
  const expose = inputField({ label: "Exposed response headers", field: "cors.exposeHeaders", value: (c.exposeHeaders || []).join(", "), placeholder: "X-Total-Count" });
  const credentials = checkboxField({ label: "Allow credentials (cookies, Authorization)", field: "cors.credentials", checked: c.credentials });
  const maxAge = numberField({ label: "Preflight max age (s)", field: "cors.maxAge", value: c.maxAge, help: "how long a browser may reuse a preflight's answer" });
  const sec = optionalSection({
    title: "CORS",
    field: "cors",
    enabled: !!item,
    description: "Browsers on other origins may call this API: the gateway answers their preflights itself (before authentication), and marks answers to allowed origins.",
    children: [origins.el, methods.el, headers.el, expose.el, credentials.el, maxAge.el],
  });
  const collect = () => {
    if (!sec.enabled) return null;
    const out = clone(item);
    out.origins = readList(origins.input);
    out.methods = readList(methods.input);
    out.headers = readList(headers.input);
    out.exposeHeaders = readList(expose.input);
    out.credentials = credentials.input.checked;
    out.maxAge = readNumber(maxAge.input) ?? null;
    return out;
  };
  return { el: sec.el, collect };
}

// -- header transformations ----------------------------------------------------------

function editsFields(side, edits) {
  const e = edits || {};
  const set = textareaField({ label: `Set (${side})`, field: `transform.${side}.set`, value: headerLines(e.set), rows: 2, placeholder: side === "request" ? "X-User: $consumer.name" : "Cache-Control: no-store", help: "Name: value per line; replaces the header", wide: false });
  const add = textareaField({ label: `Add (${side})`, field: `transform.${side}.add`, value: headerLines(e.add), rows: 2, placeholder: "X-Tag: gateway", help: "Name: value per line; one more value", wide: false });
  const remove = textareaField({ label: `Remove (${side})`, field: `transform.${side}.remove`, value: (e.remove || []).join("\n"), rows: 2, placeholder: side === "request" ? "Cookie" : "Server", help: "one name per line", wide: false });
  const collect = () => {
    const out = { ...clone(edits), set: readHeaderLines(set.input, `transform.${side}.set`), add: readHeaderLines(add.input, `transform.${side}.add`), remove: readList(remove.input) };
    return Object.keys(out.set).length || Object.keys(out.add).length || out.remove.length ? out : null;
  };
  return { els: [set.el, add.el, remove.el], collect };
}

export function transformSection(item) {
  const request = editsFields("request", item?.request);
  const response = editsFields("response", item?.response);
  const sec = optionalSection({
    title: "Header transformation",
    field: "transform",
    enabled: !!item,
    description:
      "Edit the headers the backend receives (request) and the client receives (response): remove, then set, then add. Values may use $consumer.name, $consumer.id, $requestId, $clientIp, $param.NAME, $query.NAME and $header.NAME (${...} when text follows). Hop-by-hop and trust headers (Host, X-Forwarded-*, X-Consumer-*...) cannot be changed.",
    children: [...request.els, ...response.els],
  });
  const collect = () => {
    if (!sec.enabled) return null;
    return { ...clone(item), request: request.collect(), response: response.collect() };
  };
  return { el: sec.el, collect };
}

// -- mock response -------------------------------------------------------------------

const BODY_KINDS = [
  ["none", "no body"],
  ["json", "JSON (application/json)"],
  ["text", "text (text/plain)"],
];

export function mockSection(item, onToggle) {
  const r = item || { status: 200, headers: {}, body: null };
  const kind = r.body === null || r.body === undefined ? "none" : typeof r.body === "string" ? "text" : "json";
  const status = numberField({ label: "Status", field: "response.status", value: r.status ?? 200 });
  const headers = textareaField({ label: "Headers", field: "response.headers", value: headerLines(r.headers), rows: 2, placeholder: "Content-Type: text/csv", help: "Name: value per line", wide: false });
  const kindField = selectField({ label: "Body", field: "response.bodyKind", value: kind, options: BODY_KINDS });
  const bodyKind = kindField.input;
  const body = textareaField({
    label: "Body content",
    field: "response.body",
    value: kind === "json" ? JSON.stringify(r.body, null, 2) : kind === "text" ? r.body : "",
    rows: 4,
    help: "JSON is sent compact, as application/json; text as it is",
  });
  const syncKind = () => (body.el.hidden = bodyKind.value === "none");
  bodyKind.addEventListener("change", syncKind);
  syncKind();
  const sec = optionalSection({
    title: "Mock response",
    field: "response",
    enabled: !!item,
    description: "The gateway answers this API itself, after its filters (authentication, limits, transformations), instead of calling a cluster.",
    children: [status.el, headers.el, kindField.el, body.el],
  });
  sec.toggle.addEventListener("change", () => onToggle && onToggle(sec.enabled));
  const collect = () => {
    if (!sec.enabled) return null;
    const out = { ...clone(item), status: readNumber(status.input) ?? 200, headers: readHeaderLines(headers.input, "response.headers") };
    if (bodyKind.value === "none") out.body = null;
    else if (bodyKind.value === "text") out.body = body.input.value;
    else {
      try {
        out.body = JSON.parse(body.input.value);
      } catch (e) {
        throw new LocalError("response.body", `invalid JSON: ${e.message}`);
      }
    }
    return out;
  };
  return {
    el: sec.el,
    collect,
    get enabled() {
      return sec.enabled;
    },
  };
}
