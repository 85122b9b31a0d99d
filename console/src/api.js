// The console's JSON API (server/pushreachd/http/console.py). The session is an HttpOnly cookie;
// requests that change state carry the CSRF token the session endpoints hand out.

let csrf = "";

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.field = body?.error?.field || "";
  }
}

async function call(method, path, { query, body } = {}) {
  const url = new URL(`api/${path}`, document.baseURI);
  for (const [k, v] of Object.entries(query || {})) {
    for (const one of [].concat(v)) if (one !== "" && one != null) url.searchParams.append(k, one);
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  const res = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = res.status === 204 ? {} : await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, data);
  if (data.csrf) csrf = data.csrf;
  return data;
}

export const api = {
  session: () => call("GET", "session"),
  signIn: (credentials) => call("POST", "session", { body: credentials }),
  signOut: () => call("DELETE", "session"),
  apps: () => call("GET", "apps"),
  overview: (app, query) => call("GET", "overview", { query: { app, ...query } }),
  pushes: (app, query) => call("GET", "pushes", { query: { app, ...query } }),
  push: (app, pushId, query) => call("GET", `pushes/${encodeURIComponent(pushId)}`, { query: { app, ...query } }),
  cancel: (app, pushId) => call("POST", `pushes/${encodeURIComponent(pushId)}/cancel`, { query: { app } }),
  sms: (app, query) => call("GET", "sms", { query: { app, ...query } }),
  device: (app, token) => call("GET", `devices/${encodeURIComponent(token)}`, { query: { app } }),
};
