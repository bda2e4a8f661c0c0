// The admin API of the replica that served the Portal, with the signed-in token.

const TOKEN_KEY = "raftorch.portal.token";
const ROLE_KEY = "raftorch.portal.role";
const NAME_KEY = "raftorch.portal.name";
const RANK = { viewer: 0, operator: 1, admin: 2 };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The token lives in sessionStorage: it is gone when the tab closes.
export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get role() { return sessionStorage.getItem(ROLE_KEY) || "viewer"; },
  get name() { return sessionStorage.getItem(NAME_KEY) || ""; },
  signIn(token, who) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(ROLE_KEY, who.role);
    sessionStorage.setItem(NAME_KEY, who.name);
  },
  signOut() {
    for (const key of [TOKEN_KEY, ROLE_KEY, NAME_KEY]) sessionStorage.removeItem(key);
  },
  can(needed) { return RANK[this.role] >= RANK[needed]; },
};

let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

// One call; answers the decoded JSON (null for 204) or throws ApiError.
export async function api(method, path, { body, raw, contentType, signal, token } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = token ?? session.token;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let data;
  if (raw !== undefined) {
    data = raw;
    headers["Content-Type"] = contentType || "application/octet-stream";
  } else if (body !== undefined) {
    data = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let answer;
  try {
    answer = await fetch(path, { method, headers, body: data, signal, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable", "this replica did not answer; retrying shortly");
  }
  if (answer.status === 204) return null;
  const text = await answer.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  if (!answer.ok) {
    const error = (parsed && parsed.error) || {};
    const failure = new ApiError(answer.status, error.code || `http_${answer.status}`,
      error.message || `HTTP ${answer.status}`);
    if (answer.status === 401 && token === undefined) onUnauthorized(failure);
    throw failure;
  }
  return parsed;
}

export const get = (path, options) => api("GET", path, options);
export const post = (path, body) => api("POST", path, { body });
export const patch = (path, body) => api("PATCH", path, { body });
export const del = (path) => api("DELETE", path);
export const enc = encodeURIComponent;

// Every item of a paged list: the server answers a page at a time (`next_cursor`).
export async function getAll(path, options) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < 10000; page += 1) {
    const sep = path.includes("?") ? "&" : "?";
    const reply = await get(cursor === null ? path : `${path}${sep}cursor=${enc(cursor)}`, options);
    items.push(...reply.items);
    cursor = reply.next_cursor ?? null;
    if (cursor === null) break;
  }
  return { items };
}
