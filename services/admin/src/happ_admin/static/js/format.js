/* Dates, durations, statuses and JSON, as the UI shows them. */
import { h } from "./dom.js";

export const REASONS = {
  200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
  302: "Found", 307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
  401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
  409: "Conflict", 410: "Gone", 413: "Payload Too Large", 422: "Unprocessable Content",
  429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
  503: "Service Unavailable", 504: "Gateway Timeout",
};

export function ago(iso) {
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 10) return "just now";
  if (seconds < 60) return Math.floor(seconds) + "s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h ago";
  return absolute(iso);
}

export function absolute(iso) {
  return new Date(iso).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(1) + " s";
}

export function initials(name) {
  const words = String(name || "?").trim().split(/\s+/).filter(Boolean);
  const text = words.length > 1 ? words[0][0] + words[1][0] : (words[0] || "?").slice(0, 2);
  return text.toUpperCase();
}

export function statusPill(code, error) {
  if (code === null || code === undefined) {
    return h("span", { class: "pill serr", title: error || "no response" }, error || "ERROR");
  }
  return h("span", { class: "pill s" + String(code)[0], title: REASONS[code] || "" }, String(code));
}

export function statusLine(code, error) {
  if (code === null || code === undefined) return error || "No response";
  return code + " " + (REASONS[code] || "");
}

export const STATUS_BADGES = {
  connected: ["ok", "Connected"], disconnected: ["off", "Disconnected"],
  accepted: ["info", "Accepted"], replied: ["info", "Replied"], pending: ["info", "Pending"],
  delivered: ["ok", "Delivered"], retrying: ["warn", "Retrying"], failed: ["bad", "Failed"],
  canceled: ["off", "Canceled"], deliveries_off: ["bad", "Deliveries off"],
};

export function badge(status) {
  const [kind, label] = STATUS_BADGES[status] || ["off", status];
  return h("span", { class: "badge " + kind, dataset: { status } }, label);
}

export function prettyJson(text) {
  const pre = h("pre", { class: "json" });
  if (text === null || text === undefined || text === "") {
    pre.append(h("span", { class: "muted" }, "(empty)"));
    return pre;
  }
  let pretty = text;
  try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { pre.textContent = text; return pre; }
  const token = /("(?:\\u[0-9a-fA-F]{4}|\\[^u]|[^\\"])*"(\s*:)?|\b(?:true|false|null)\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0;
  for (const match of pretty.matchAll(token)) {
    pre.append(pretty.slice(last, match.index));
    const t = match[0];
    const cls = t.startsWith('"') ? (match[2] ? "k" : "s") : /^[tfn]/.test(t) ? "b" : "n";
    pre.append(h("span", { class: cls }, t));
    last = match.index + t.length;
  }
  pre.append(pretty.slice(last));
  return pre;
}

export function jsonText(value) { return value === null || value === undefined ? null : JSON.stringify(value); }

/* A conversation's state, as a chip: waiting, held by whom, with the assistant, closed. */
export function stateChip(conv, me) {
  if (conv.state === "waiting") return h("span", { class: "badge warn", dataset: { state: "waiting" } }, "Waiting");
  if (conv.state === "operator") {
    const who = conv.operator ? conv.operator.name : "an operator";
    const mine = me && conv.operator && conv.operator.id === me.id;
    return h("span", { class: "badge info", dataset: { state: "operator" } }, mine ? "You hold it" : who);
  }
  if (conv.state === "closed") return h("span", { class: "badge off", dataset: { state: "closed" } }, "Closed");
  return h("span", { class: "badge ok", dataset: { state: "assistant" } }, "Assistant");
}
