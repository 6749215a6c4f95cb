// The admin REST API client: every call carries the bearer token kept in
// sessionStorage; a 401 forgets it and sends the user back to the login page.

const TOKEN_KEY = "gateway.adminToken";

/** Where the REST API lives, relative to the admin's origin. */
export const API_BASE = document.querySelector('meta[name="gateway-api"]')?.content || "/api/v1";

/** An error answer of the admin: status, message, and the field at fault. */
export class ApiError extends Error {
  constructor(status, body) {
    const data = body && typeof body === "object" ? body : {};
    super(data.error || (status ? `HTTP ${status}` : "request failed"));
    this.status = status;
    this.field = typeof data.field === "string" ? data.field : "";
    this.body = data;
  }
}

let onUnauthorized = () => {};

export const auth = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value === null || value === undefined) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, value);
  },
  get signedIn() {
    return sessionStorage.getItem(TOKEN_KEY) !== null;
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
  /** Called (once per 401) when the admin refuses the token. */
  set onUnauthorized(fn) {
    onUnauthorized = fn;
  },
};

/**
 * Call the admin API.
 * @param {string} method HTTP method.
 * @param {string} path below /api/v1, e.g. "/servers".
 * @param {*} body a JSON value to send, or undefined.
 * @param {{token?: string, redirect?: boolean}} options token overrides the
 *   stored one; redirect: false keeps a 401 from leaving the page.
 * @returns {Promise<*>} the decoded JSON (null for 204).
 */
export async function call(method, path, body, { token, redirect = true } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = token !== undefined ? token : auth.token;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API_BASE + path, init);
  } catch (e) {
    throw new ApiError(0, { error: `cannot reach the admin (${e.message})` });
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: `unexpected answer (HTTP ${response.status})` };
  }
  if (response.status === 401) {
    if (redirect) {
      auth.signOut();
      onUnauthorized();
    }
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const enc = encodeURIComponent;

/** CRUD on one kind of resource: servers, clusters, consumers, apis or routings. */
export const resources = {
  list: (kind) => call("GET", `/${kind}`),
  get: (kind, name) => call("GET", `/${kind}/${enc(name)}`),
  create: (kind, body) => call("POST", `/${kind}`, body),
  update: (kind, name, body) => call("PUT", `/${kind}/${enc(name)}`, body),
  remove: (kind, name) => call("DELETE", `/${kind}/${enc(name)}`),
};

export const fetchStats = () => call("GET", "/stats");
export const fetchProxies = () => call("GET", "/proxies");
