/* The admin JSON API: the only thing the UI talks to. */
import { state } from "./state.js";

let unauthorized = () => {};
/* What to do when the session has ended (main.js shows the sign-in form). */
export function onUnauthorized(fn) { unauthorized = fn; }

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || "Request failed (" + status + ")");
    this.status = status;
    this.code = error.code || "HTTP_" + status;
    this.details = error.details || [];
  }
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = new ApiError(resp.status, data);
    if (resp.status === 401 && path !== "/api/session") {
      state.csrf = null;
      unauthorized("Your session has ended. Sign in again.");
    }
    throw err;
  }
  return data;
}

export function qs(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") search.set(k, v);
  const text = search.toString();
  return text ? "?" + text : "";
}

export function enc(s) { return encodeURIComponent(s); }

/* The path of one conversation, its sender id encoded as one path segment. */
export function convPath(channelId, senderId, action) {
  return "/api/channels/" + enc(channelId) + "/conversations/" + enc(senderId) + (action || "");
}
