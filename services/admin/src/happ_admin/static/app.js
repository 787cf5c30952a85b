/* HAPP admin web UI: plain JavaScript over the admin JSON API.
 *
 * Every piece of data is put in the page with textContent (the h() helper),
 * never as HTML, so nothing a webhook caller sends can run here. The session
 * lives in an HttpOnly cookie the script cannot read; the script only keeps the
 * CSRF token in memory and sends it with every request that changes something.
 */
"use strict";

const app = document.getElementById("app");
const dialog = document.getElementById("dialog");
const state = { csrf: null, timer: null, routeToken: 0 };
const LOG_REFRESH_MS = 3000;

// --- DOM helpers ---------------------------------------------------------------------

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
function mount(...children) { clear(app).append(...children); }

function toast(message, kind) {
  const el = h("div", { class: "toast" + (kind === "bad" ? " bad" : "") }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), 4200);
}

// --- formatting ------------------------------------------------------------------------

const REASONS = {
  200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently",
  302: "Found", 307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
  401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
  409: "Conflict", 410: "Gone", 413: "Payload Too Large", 422: "Unprocessable Content",
  429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
  503: "Service Unavailable", 504: "Gateway Timeout",
};

function ago(iso) {
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 10) return "just now";
  if (seconds < 60) return Math.floor(seconds) + "s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h ago";
  return absolute(iso);
}

function absolute(iso) {
  return new Date(iso).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(1) + " s";
}

function initials(name) {
  const words = String(name || "?").trim().split(/\s+/).filter(Boolean);
  const text = words.length > 1 ? words[0][0] + words[1][0] : (words[0] || "?").slice(0, 2);
  return text.toUpperCase();
}

function statusPill(code, error) {
  if (code === null || code === undefined) {
    return h("span", { class: "pill serr", title: error || "no response" }, error || "ERROR");
  }
  return h("span", { class: "pill s" + String(code)[0], title: REASONS[code] || "" }, String(code));
}

function statusLine(code, error) {
  if (code === null || code === undefined) return error || "No response";
  return code + " " + (REASONS[code] || "");
}

const STATUS_BADGES = {
  connected: ["ok", "Connected"], disconnected: ["off", "Disconnected"],
  accepted: ["info", "Accepted"], replied: ["info", "Replied"], pending: ["info", "Pending"],
  delivered: ["ok", "Delivered"], retrying: ["warn", "Retrying"], failed: ["bad", "Failed"],
  canceled: ["off", "Canceled"],
};

function badge(status) {
  const [kind, label] = STATUS_BADGES[status] || ["off", status];
  return h("span", { class: "badge " + kind, dataset: { status } }, label);
}

function prettyJson(text) {
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

function jsonText(value) { return value === null || value === undefined ? null : JSON.stringify(value); }

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain-HTTP admin on a LAN address: no async clipboard there.
  const area = h("textarea", { class: "offscreen", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

function copyButton(getText, label) {
  const button = h("button", { class: "btn btn-sm", type: "button", dataset: { test: "copy" } }, label || "Copy");
  button.addEventListener("click", async () => {
    try {
      await copyText(getText());
      button.textContent = "Copied ✓";
    } catch (_) {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = label || "Copy"; }, 1600);
  });
  return button;
}

// --- API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || "Request failed (" + status + ")");
    this.status = status;
    this.code = error.code || "HTTP_" + status;
    this.details = error.details || [];
  }
}

async function api(method, path, body) {
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
      showSignIn("Your session has ended. Sign in again.");
    }
    throw err;
  }
  return data;
}

function qs(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") search.set(k, v);
  const text = search.toString();
  return text ? "?" + text : "";
}

function enc(s) { return encodeURIComponent(s); }

// --- frame -------------------------------------------------------------------------------

function topbar(crumbs) {
  const trail = [h("a", { href: "#/" }, "Integrations"), h("span", { class: "sep" }, "/")];
  if (!crumbs.length) trail.push(h("span", { class: "here" }, "Custom Messenger"));
  else trail.push(h("a", { href: "#/" }, "Custom Messenger"));
  crumbs.forEach((c, i) => {
    trail.push(h("span", { class: "sep" }, "/"));
    trail.push(h("span", { class: i === crumbs.length - 1 ? "here" : "" }, c));
  });
  return h("header", { class: "topbar" },
    h("a", { class: "logo", href: "#/" }, h("span", { class: "logo-mark" }, "H"), "HAPP"),
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, trail),
    h("div", { class: "spacer" }),
    h("a", { class: "btn btn-ghost btn-sm", href: "/docs", target: "_blank", rel: "noopener" }, "API docs"),
    h("button", { class: "btn btn-sm", type: "button", dataset: { test: "sign-out" }, onclick: signOut }, "Sign out"),
  );
}

function stopTimer() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

function errorCard(err) {
  return h("div", { class: "card card-pad" },
    h("h2", {}, err.status === 404 ? "Not found" : "Something went wrong"),
    h("p", { class: "muted" }, err.message),
    h("p", { class: "small muted" }, err.code || ""),
    h("div", { class: "btn-row" }, h("a", { class: "btn", href: "#/" }, "Back to channels")));
}

// --- sign in -------------------------------------------------------------------------------

function showSignIn(message) {
  stopTimer();
  if (dialog.open) dialog.close();
  const input = h("input", {
    type: "password", id: "token", name: "token", autocomplete: "off", spellcheck: "false",
    placeholder: "Admin token", required: true, dataset: { test: "token" },
  });
  const error = h("div", { class: "form-error" + (message ? "" : " hidden"), role: "alert" }, message || "");
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, "Sign in");
  const form = h("form", { novalidate: true },
    h("div", { class: "field" }, h("label", { for: "token" }, "Admin token"), input,
      h("span", { class: "hint" }, "A token from HAPP_ADMIN_TOKEN (make run prints it).")),
    submit, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.classList.add("hidden");
    submit.disabled = true;
    try {
      const session = await api("POST", "/api/session", { token: input.value });
      state.csrf = session.csrf_token;
      input.value = "";
      if (!location.hash || location.hash === "#/signin") location.hash = "#/";
      route();
    } catch (err) {
      error.textContent = err.status === 401 ? "That token is not valid." : err.message;
      error.classList.remove("hidden");
      input.select();
    } finally {
      submit.disabled = false;
    }
  });
  clear(app).append(h("div", { class: "signin" },
    h("div", { class: "card" },
      h("div", { class: "logo" }, h("span", { class: "logo-mark" }, "H"), "HAPP"),
      h("h1", {}, "Sign in"),
      h("p", { class: "lead" }, "Custom Messenger admin: channels, request log and conversations."),
      form)));
  input.focus();
}

async function signOut() {
  try { await api("DELETE", "/api/session"); } catch (_) { /* signed out either way */ }
  state.csrf = null;
  showSignIn("You are signed out.");
}

// --- routing -------------------------------------------------------------------------------

async function route() {
  stopTimer();
  if (dialog.open) dialog.close();
  const token = ++state.routeToken;
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts.length === 0) await channelsPage(token);
    else if (parts[0] === "new") newChannelPage();
    else if (parts[0] === "channels" && parts[1]) await channelPage(token, parts[1], parts[2] || "webhook", parts.slice(3).join("/"));
    else location.hash = "#/";
  } catch (err) {
    if (err.status === 401) return;
    if (token === state.routeToken) mount(topbar([]), h("main", { class: "page" }, errorCard(err)));
  }
}

// --- channels list ---------------------------------------------------------------------------

async function channelsPage(token) {
  const items = [];
  let cursor = null;
  do {
    const page = await api("GET", "/api/channels" + qs({ limit: 200, cursor }));
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  if (token !== state.routeToken) return;
  items.sort((a, b) => b.created_at.localeCompare(a.created_at));
  const head = h("div", { class: "page-head" },
    h("div", {}, h("h1", {}, "Custom Messenger"),
      h("p", {}, "Connect your own messenger via webhooks. Each channel has its own webhook URL, HMAC secret and assistant.")),
    h("a", { class: "btn btn-primary", href: "#/new", dataset: { test: "new-channel" } }, "+ New channel"));
  let body;
  if (!items.length) {
    body = h("div", { class: "card empty" },
      h("h2", {}, "No channels yet"),
      h("p", {}, "Create a channel, point your platform at its webhook URL and give HAPP your HTTPS endpoint."),
      h("a", { class: "btn btn-primary", href: "#/new" }, "Create your first channel"));
  } else {
    const rows = items.map((c) => h("tr", { dataset: { channel: c.id }, onclick: () => { location.hash = "#/channels/" + enc(c.id); } },
      h("td", {}, h("div", { class: "channel-cell" }, h("span", { class: "avatar" }, initials(c.name)),
        h("div", {}, h("a", { href: "#/channels/" + enc(c.id), class: "name" }, c.name), h("div", { class: "mono muted" }, c.id)))),
      h("td", {}, badge(c.status)),
      h("td", { class: "mono small" }, h("div", { class: "ellipsis", title: c.outgoing_url }, c.outgoing_url)),
      h("td", { class: "small" }, c.require_signature ? "Required" : "Optional"),
      h("td", { class: "small muted", title: absolute(c.created_at) }, ago(c.created_at))));
    body = h("div", { class: "card" }, h("table", { class: "table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Channel"), h("th", {}, "Status"), h("th", {}, "Outgoing endpoint"),
        h("th", {}, "Incoming signature"), h("th", {}, "Created"))),
      h("tbody", {}, rows)));
  }
  mount(topbar([]), h("main", { class: "page" }, head, body));
}

// --- forms -------------------------------------------------------------------------------------

function field(name, label, control, hint, wide) {
  control.id = control.id || "f-" + name.replace(/\./g, "-");
  control.name = name;
  return h("div", { class: "field" + (wide ? " wide" : ""), dataset: { field: name } },
    h("label", { for: control.id }, label), control,
    hint ? h("span", { class: "hint" }, hint) : null,
    h("span", { class: "error hidden" }));
}

function toggleField(name, label, checked, hint) {
  const input = h("input", { type: "checkbox", name, id: "f-" + name, checked: !!checked });
  return h("div", { class: "field wide", dataset: { field: name } },
    h("label", { class: "toggle", for: "f-" + name }, input,
      h("span", {}, h("span", { class: "label" }, label), hint ? h("span", { class: "hint" }, " — " + hint) : null)),
    h("span", { class: "error hidden" }));
}

function showFieldErrors(form, err) {
  form.querySelectorAll(".field").forEach((f) => {
    f.classList.remove("invalid");
    f.querySelector(".error").classList.add("hidden");
  });
  let shown = false;
  for (const d of err.details || []) {
    const f = form.querySelector('[data-field="' + CSS.escape(d.field) + '"]');
    if (!f) continue;
    f.classList.add("invalid");
    const e = f.querySelector(".error");
    e.textContent = d.problem;
    e.classList.remove("hidden");
    shown = true;
  }
  const banner = form.querySelector(".form-error");
  if (banner) {
    banner.textContent = err.message || "";
    banner.classList.toggle("hidden", !err.message || (shown && err.code === "INVALID_PAYLOAD"));
  }
}

function assistantFields(a) {
  a = a || {};
  return [
    field("assistant.system_prompt", "System prompt", h("textarea", { rows: 4 }, a.system_prompt || ""),
      "How the assistant behaves on this channel.", true),
    field("assistant.model", "Model", h("input", { type: "text", value: a.model || "", placeholder: "Service default" }),
      "Empty: the service's HAPP_ASSISTANT_MODEL."),
    field("assistant.temperature", "Temperature", h("input", { type: "number", min: 0, max: 2, step: 0.1, value: a.temperature ?? 0.7 }),
      "0 (focused) to 2 (creative)."),
    field("assistant.max_history", "History length", h("input", { type: "number", min: 0, max: 200, step: 1, value: a.max_history ?? 20 }),
      "Messages of the conversation sent as context."),
    field("assistant.fallback_text", "Fallback text", h("textarea", { rows: 2 }, a.fallback_text || ""),
      "Sent when the AI cannot answer.", true),
  ];
}

function readAssistant(form) {
  const v = (n) => form.elements[n].value;
  const out = {
    system_prompt: v("assistant.system_prompt"),
    model: v("assistant.model").trim() || null,
    temperature: Number(v("assistant.temperature")),
    max_history: Number(v("assistant.max_history")),
  };
  if (v("assistant.fallback_text").trim()) out.fallback_text = v("assistant.fallback_text");
  return out;
}

function channelForm(channelNote, channelFields, assistantNote, assistantList, error, actions) {
  return h("form", { class: "channel-form", novalidate: true },
    h("div", { class: "grid-2" },
      h("section", { class: "card card-pad" }, h("div", { class: "fieldset-title" }, "Channel"), h("p", {}, channelNote),
        h("div", { class: "form-grid" }, channelFields)),
      h("section", { class: "card card-pad" }, h("div", { class: "fieldset-title" }, "Assistant"), h("p", {}, assistantNote),
        h("div", { class: "form-grid" }, assistantList))),
    error,
    h("div", { class: "form-actions bare" }, actions));
}

function newChannelPage() {
  const error = h("div", { class: "form-error hidden", role: "alert" });
  const submit = h("button", { class: "btn btn-primary", type: "submit", dataset: { test: "create" } }, "Create channel");
  const form = channelForm(
    "HAPP gives the channel a webhook URL and an HMAC secret; replies go to your HTTPS endpoint.",
    [
      field("name", "Name", h("input", { type: "text", placeholder: "My Website", required: true, maxlength: 200 }), null, true),
      field("outgoing_url", "Outgoing endpoint", h("input", { type: "url", placeholder: "https://api.example.com/happ", required: true }),
        "HTTPS only. HAPP POSTs each AI reply here, signed with HMAC-SHA256.", true),
      field("rate_limit_per_second", "Rate limit (messages/s)", h("input", { type: "number", min: 1, max: 100000, value: 100 }),
        "Above it the webhook answers 429."),
      toggleField("require_signature", "Require X-HAPP-Signature on incoming requests", false, "unsigned webhook calls get 401"),
    ],
    "You can change all of this later in Settings.",
    assistantFields({ fallback_text: "Sorry, I can't answer right now. Please try again in a few minutes.", system_prompt: "You are a helpful, concise assistant answering users of this platform." }),
    error,
    [h("a", { class: "btn", href: "#/" }, "Cancel"), submit]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const channel = await api("POST", "/api/channels", {
        name: form.elements.name.value,
        outgoing_url: form.elements.outgoing_url.value,
        rate_limit_per_second: Number(form.elements.rate_limit_per_second.value),
        require_signature: form.elements.require_signature.checked,
        assistant: readAssistant(form),
      });
      toast("Channel created. Send a test to check your endpoint.");
      location.hash = "#/channels/" + enc(channel.id) + "/webhook";
    } catch (err) {
      showFieldErrors(form, err);
    } finally {
      submit.disabled = false;
    }
  });
  mount(topbar(["New channel"]), h("main", { class: "page" },
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "New channel"),
      h("p", {}, "Connect any platform — website, mobile app, CRM — with two endpoints."))),
    form));
  form.elements.name.focus();
}

// --- channel page ----------------------------------------------------------------------------------

const TABS = [["settings", "Settings"], ["webhook", "Webhook URL"], ["log", "Request Log"], ["conversations", "Conversations"]];

async function channelPage(token, id, tab, rest) {
  const channel = await api("GET", "/api/channels/" + enc(id));
  if (token !== state.routeToken) return;
  const ctx = { channel, token, testResult: null };
  const resultSlot = h("div", {});
  const body = h("div", { class: "tab-body" });
  ctx.resultSlot = resultSlot;
  ctx.refreshHead = () => {
    const fresh = channelHead(ctx);
    headCard.replaceWith(fresh);
    headCard = fresh;
    document.querySelector(".topbar").replaceWith(topbar([ctx.channel.name]));
  };
  let headCard = channelHead(ctx);
  mount(topbar([channel.name]), h("main", { class: "page" }, headCard, resultSlot, body));
  if (tab === "settings") settingsTab(ctx, body);
  else if (tab === "log") await logTab(ctx, body, rest);
  else if (tab === "conversations") await conversationsTab(ctx, body, rest);
  else webhookTab(ctx, body);
}

function channelHead(ctx) {
  const c = ctx.channel;
  const active = (location.hash.split("/")[3] || "webhook");
  const testButton = h("button", { class: "btn", type: "button", dataset: { test: "send-test" } }, "Send test");
  testButton.addEventListener("click", () => sendTest(ctx, testButton));
  const toggle = c.status === "connected"
    ? h("button", { class: "btn btn-danger", type: "button", dataset: { test: "disconnect" }, onclick: () => confirmDisconnect(ctx) }, "Disconnect")
    : h("button", { class: "btn btn-primary", type: "button", dataset: { test: "connect" }, onclick: () => confirmConnect(ctx) }, "Connect");
  return h("section", { class: "card" },
    h("div", { class: "channel-head" },
      h("span", { class: "avatar lg" }, initials(c.name)),
      h("div", { class: "title" },
        h("div", { class: "title-row" }, h("h1", { dataset: { test: "channel-name" } }, c.name), badge(c.status)),
        h("div", { class: "sub" }, "Custom Messenger · ", h("span", { class: "mono" }, c.id))),
      h("div", { class: "btn-row" }, testButton, toggle)),
    h("nav", { class: "tabs", role: "tablist" }, TABS.map(([key, label]) =>
      h("a", { class: "tab" + (key === active ? " active" : ""), role: "tab", href: "#/channels/" + enc(c.id) + "/" + key, dataset: { tab: key } }, label))));
}

async function sendTest(ctx, button) {
  button.disabled = true;
  button.textContent = "Sending…";
  try {
    const result = await api("POST", "/api/channels/" + enc(ctx.channel.id) + "/test");
    renderTestResult(ctx, result);
  } catch (err) {
    toast(err.message, "bad");
  } finally {
    button.disabled = false;
    button.textContent = "Send test";
  }
}

function renderTestResult(ctx, r) {
  const c = ctx.channel;
  const title = r.ok
    ? "Test delivered · " + statusLine(r.status_code) + " · " + duration(r.response_time_ms)
    : "Test failed · " + (r.error_code || "error") + " · " + duration(r.response_time_ms);
  const detail = r.ok
    ? "Your endpoint answered " + r.status_code + " to a signed request with \"test\": true."
    : (r.error_message || "The endpoint did not accept the request.");
  const view = h("a", { class: "btn btn-sm", href: "#/channels/" + enc(c.id) + "/log/" + enc(r.log_id) }, "View request");
  clear(ctx.resultSlot).append(h("div", { class: "test-result " + (r.ok ? "ok" : "bad"), dataset: { test: "test-result", ok: String(r.ok) } },
    h("span", { class: "icon" }, r.ok ? "✓" : "!"),
    h("div", { class: "what" }, h("strong", {}, title), h("span", { class: "small" }, detail)),
    view,
    h("button", { class: "btn btn-ghost btn-sm", type: "button", "aria-label": "Dismiss", onclick: () => clear(ctx.resultSlot) }, "✕")));
  if (ctx.onTest) ctx.onTest();
}

function openDialog(title, content, actions) {
  clear(dialog).append(h("form", { method: "dialog" },
    h("div", { class: "dialog-body" }, h("h2", {}, title), content),
    h("div", { class: "dialog-actions" }, actions)));
  dialog.showModal();
}

function confirmDisconnect(ctx) {
  const c = ctx.channel;
  const go = h("button", { class: "btn btn-danger-solid", type: "button", dataset: { test: "confirm-disconnect" } }, "Disconnect");
  go.addEventListener("click", async () => {
    go.disabled = true;
    try {
      ctx.channel = await api("POST", "/api/channels/" + enc(c.id) + "/disconnect");
      dialog.close();
      ctx.refreshHead();
      toast("Channel disconnected. Its data is kept; connect it again at any time.");
    } catch (err) { go.disabled = false; toast(err.message, "bad"); }
  });
  openDialog("Disconnect “" + c.name + "”?", [
    h("p", {}, "The channel stops; your data stays."),
    h("ul", {},
      h("li", {}, "The incoming webhook URL stops accepting requests (403)."),
      h("li", {}, "Your outgoing endpoint no longer receives replies."),
      h("li", {}, "The webhook URL, HMAC secret and settings stay the same."),
      h("li", {}, "The request log and conversations are preserved.")),
  ], [h("button", { class: "btn", value: "cancel" }, "Cancel"), go]);
}

function confirmConnect(ctx) {
  const c = ctx.channel;
  const url = h("input", { type: "url", value: c.outgoing_url, id: "connect-url" });
  const problem = h("div", { class: "form-error hidden", role: "alert" });
  const go = h("button", { class: "btn btn-primary", type: "button", dataset: { test: "confirm-connect" } }, "Connect");
  go.addEventListener("click", async () => {
    go.disabled = true;
    try {
      const body = url.value.trim() && url.value.trim() !== c.outgoing_url ? { outgoing_url: url.value.trim() } : {};
      ctx.channel = await api("POST", "/api/channels/" + enc(c.id) + "/connect", body);
      dialog.close();
      ctx.refreshHead();
      toast("Channel connected. Send a test to check the endpoint.");
    } catch (err) {
      go.disabled = false;
      problem.textContent = err.message;
      problem.classList.remove("hidden");
    }
  });
  openDialog("Connect “" + c.name + "”", [
    h("p", {}, "Same webhook URL, secret, settings and history. Confirm where replies go:"),
    h("div", { class: "field" }, h("label", { for: "connect-url" }, "Outgoing endpoint"), url),
    problem,
  ], [h("button", { class: "btn", value: "cancel" }, "Cancel"), go]);
}

// --- webhook tab ----------------------------------------------------------------------------------------

function webhookTab(ctx, body) {
  const c = ctx.channel;
  let revealed = false;
  const masked = "whsec_" + "•".repeat(32);
  const secretValue = h("span", { class: "value", dataset: { test: "secret" } }, masked);
  const reveal = h("button", { class: "btn btn-sm", type: "button", dataset: { test: "reveal" } }, "Reveal");
  reveal.addEventListener("click", () => {
    revealed = !revealed;
    secretValue.textContent = revealed ? ctx.channel.hmac_secret : masked;
    reveal.textContent = revealed ? "Hide" : "Reveal";
  });
  const rotate = h("button", { class: "btn btn-sm btn-ghost", type: "button", dataset: { test: "rotate" } }, "Rotate…");
  rotate.addEventListener("click", () => {
    const go = h("button", { class: "btn btn-primary", type: "button" }, "Rotate secret");
    go.addEventListener("click", async () => {
      go.disabled = true;
      try {
        ctx.channel = await api("POST", "/api/channels/" + enc(c.id) + "/rotate-secret");
        dialog.close();
        toast("New secret issued. The previous one keeps working for 24 hours.");
        webhookTab(ctx, clear(body));
      } catch (err) { go.disabled = false; toast(err.message, "bad"); }
    });
    openDialog("Rotate the HMAC secret?", [
      h("p", {}, "HAPP issues a new secret. For 24 hours the previous one still verifies incoming requests and is also signed into webhook-signature, so you can switch without downtime."),
    ], [h("button", { class: "btn", value: "cancel" }, "Cancel"), go]);
  });
  const curl = "curl -X POST '" + c.webhook_url + "' \\\n  -H 'Content-Type: application/json' \\\n  -d '{\"sender_id\": \"user_42\", \"text\": \"Hello!\", \"sender_name\": \"Dmytro\", \"metadata\": {\"source\": \"website\"}}'";
  const overlap = c.previous_secret_expires_at
    ? h("p", { class: "callout warn small" }, "The previous secret still verifies until " + absolute(c.previous_secret_expires_at) + ".")
    : null;
  body.append(h("div", { class: "grid-2" },
    h("section", { class: "card card-pad" },
      h("div", { class: "section-title" }, h("div", {}, h("h2", {}, "Incoming webhook"),
        h("p", {}, "Your platform POSTs each user message here (sender_id and text)."))),
      h("div", { class: "copy-field" }, h("span", { class: "value", dataset: { test: "webhook-url" }, title: c.webhook_url }, c.webhook_url),
        copyButton(() => ctx.channel.webhook_url)),
      h("div", { class: "section" }, h("div", { class: "block-title" }, "Try it", copyButton(() => curl, "Copy curl")),
        h("pre", { class: "json" }, curl))),
    h("section", { class: "card card-pad" },
      h("div", { class: "section-title" }, h("div", {}, h("h2", {}, "HMAC secret"),
        h("p", {}, "Every reply carries X-HAPP-Signature: sha256=HMAC-SHA256(secret, body), plus Standard Webhooks headers."))),
      h("div", { class: "copy-field" }, secretValue, reveal, copyButton(() => ctx.channel.hmac_secret), rotate),
      overlap ? h("div", { class: "section" }, overlap) : null,
      h("div", { class: "section" }, h("dl", { class: "kv" },
        h("dt", {}, "Outgoing endpoint"), h("dd", { class: "mono" }, c.outgoing_url),
        h("dt", {}, "Incoming signature"), h("dd", {}, c.require_signature ? "Required (unsigned requests get 401)" : "Verified when present"),
        h("dt", {}, "Rate limit"), h("dd", {}, c.rate_limit_per_second + " messages/s"),
        h("dt", {}, "Created"), h("dd", {}, absolute(c.created_at)))))));
}

// --- settings tab --------------------------------------------------------------------------------------------

function settingsTab(ctx, body) {
  const c = ctx.channel;
  const error = h("div", { class: "form-error hidden", role: "alert" });
  const save = h("button", { class: "btn btn-primary", type: "submit", dataset: { test: "save" } }, "Save changes");
  const form = channelForm(
    "Changes reach every HAPP service within a second.",
    [
      field("name", "Name", h("input", { type: "text", value: c.name, maxlength: 200 }), null, true),
      field("outgoing_url", "Outgoing endpoint", h("input", { type: "url", value: c.outgoing_url }),
        "HTTPS only; private and loopback addresses are refused unless the deployment allows them.", true),
      field("rate_limit_per_second", "Rate limit (messages/s)", h("input", { type: "number", min: 1, max: 100000, value: c.rate_limit_per_second }),
        "Above it the webhook answers 429 with Retry-After."),
      toggleField("require_signature", "Require X-HAPP-Signature on incoming requests", c.require_signature, "unsigned webhook calls get 401"),
    ],
    "The AI that answers this channel's users.",
    assistantFields(c.assistant),
    error,
    [h("button", { class: "btn", type: "reset" }, "Discard"), save]);
  form.addEventListener("reset", () => setTimeout(() => showFieldErrors(form, { details: [] }), 0));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    save.disabled = true;
    try {
      ctx.channel = await api("PATCH", "/api/channels/" + enc(c.id), {
        name: form.elements.name.value,
        outgoing_url: form.elements.outgoing_url.value,
        rate_limit_per_second: Number(form.elements.rate_limit_per_second.value),
        require_signature: form.elements.require_signature.checked,
        assistant: readAssistant(form),
      });
      showFieldErrors(form, { details: [], message: "" });
      error.classList.add("hidden");
      ctx.refreshHead();
      toast("Settings saved.");
    } catch (err) {
      showFieldErrors(form, err);
    } finally {
      save.disabled = false;
    }
  });
  body.append(form);
}

// --- request log tab ------------------------------------------------------------------------------------------

const STATUS_FILTERS = [["", "All statuses"], ["2xx", "2xx Success"], ["4xx", "4xx Client error"],
  ["5xx", "5xx Server error"], ["error", "No response"], ["failed", "All failures"]];

async function logTab(ctx, body, selectedId) {
  const c = ctx.channel;
  const view = { direction: "", status: "", items: [], cursor: null, selected: selectedId || null, live: true, more: false };
  const list = h("ul", { class: "log-list", dataset: { test: "log-list" } });
  const foot = h("div", { class: "list-foot" });
  const detail = h("section", { class: "card detail", dataset: { test: "log-detail" } });
  const seg = h("div", { class: "segmented", role: "group", "aria-label": "Direction" });
  for (const [value, label] of [["", "All"], ["incoming", "Incoming"], ["outgoing", "Outgoing"]]) {
    seg.append(h("button", { type: "button", class: value === "" ? "on" : "", dataset: { direction: value } , onclick: (e) => {
      view.direction = value;
      seg.querySelectorAll("button").forEach((b) => b.classList.toggle("on", b === e.currentTarget));
      load(true);
    } }, label));
  }
  const statusSelect = h("select", { "aria-label": "Status", dataset: { test: "status-filter" }, onchange: (e) => { view.status = e.target.value; load(true); } },
    STATUS_FILTERS.map(([v, l]) => h("option", { value: v }, l)));
  const liveBox = h("input", { type: "checkbox", checked: true });
  const live = h("label", { class: "live on", title: "Refresh every few seconds" }, liveBox, h("span", { class: "dot" }), "Live");
  liveBox.addEventListener("change", () => { view.live = liveBox.checked; live.classList.toggle("on", view.live); });
  const refresh = h("button", { class: "btn btn-sm", type: "button", title: "Refresh now", onclick: () => load(false) }, "Refresh");

  function row(e) {
    const path = e.direction === "incoming" ? e.url : e.url.replace(/^https?:\/\//, "");
    return h("li", { class: "log-row" + (e.id === view.selected ? " selected" : ""), dataset: { log: e.id, direction: e.direction }, onclick: () => select(e.id) },
      h("span", { class: "dir " + (e.direction === "incoming" ? "in" : "out"), title: e.direction === "incoming" ? "Your platform → HAPP" : "HAPP → your endpoint" },
        e.direction === "incoming" ? "IN" : "OUT"),
      h("span", { class: "method" }, e.method),
      h("div", { class: "url" }, h("div", { class: "path", title: e.url }, path,
        e.message_id && e.message_id.startsWith("tst_") ? h("span", { class: "tag" }, "test") : null),
        h("div", { class: "when", title: absolute(e.created_at) }, ago(e.created_at) + (e.attempt ? " · attempt " + e.attempt : ""))),
      statusPill(e.status_code, e.error_code),
      h("span", { class: "dur" }, duration(e.duration_ms)));
  }

  function renderList() {
    clear(list);
    if (!view.items.length) {
      list.append(h("li", { class: "placeholder" }, h("div", { class: "big-icon" }, "⇅"),
        view.direction || view.status ? "No requests match these filters." : "No requests yet. Send a message to the webhook URL, or send a test."));
    } else {
      list.append(...view.items.map(row));
    }
    clear(foot);
    if (view.cursor) foot.append(h("button", { class: "btn btn-sm", type: "button", onclick: loadMore }, "Load older requests"));
  }

  async function load(reset) {
    const page = await api("GET", "/api/channels/" + enc(c.id) + "/logs" + qs({ direction: view.direction, status: view.status, limit: 50 }));
    if (reset || !view.more) {
      view.items = page.items;
      view.cursor = page.next_cursor;
      view.more = false;
    } else {
      // Older pages were loaded: keep them, put the fresh top page above.
      const fresh = new Set(page.items.map((e) => e.id));
      view.items = page.items.concat(view.items.filter((e) => !fresh.has(e.id)));
    }
    renderList();
  }

  async function loadMore() {
    const page = await api("GET", "/api/channels/" + enc(c.id) + "/logs" + qs({ direction: view.direction, status: view.status, limit: 50, cursor: view.cursor }));
    const known = new Set(view.items.map((e) => e.id));
    view.items = view.items.concat(page.items.filter((e) => !known.has(e.id)));
    view.cursor = page.next_cursor;
    view.more = true;
    renderList();
  }

  async function select(id) {
    view.selected = id;
    list.querySelectorAll(".log-row").forEach((r) => r.classList.toggle("selected", r.dataset.log === id));
    history.replaceState(null, "", "#/channels/" + enc(c.id) + "/log/" + enc(id));
    const entry = view.items.find((e) => e.id === id) || await api("GET", "/api/logs/" + enc(id));
    renderDetail(ctx, detail, entry);
  }

  ctx.onTest = () => load(false);
  body.append(h("div", { class: "split" },
    h("section", { class: "card" },
      h("div", { class: "toolbar" }, h("h2", {}, "Recent requests"), h("div", { class: "spacer" }), live, refresh),
      h("div", { class: "toolbar filters" }, seg, statusSelect),
      list, foot),
    detail));
  renderDetailEmpty(detail);
  await load(true);
  if (view.selected) await select(view.selected).catch(() => renderDetailEmpty(detail));
  state.timer = setInterval(() => {
    if (view.live && !document.hidden && ctx.token === state.routeToken) load(false).catch(() => {});
  }, LOG_REFRESH_MS);
}

function renderDetailEmpty(detail) {
  clear(detail).append(h("div", { class: "placeholder" }, h("div", { class: "big-icon" }, "☰"),
    h("div", {}, "Select a request to see its payload, status and timing.")));
}

function renderDetail(ctx, detail, e) {
  const incoming = e.direction === "incoming";
  const meta = h("dl", { class: "kv" },
    h("dt", {}, "Direction"), h("dd", {}, incoming ? "Incoming (your platform → HAPP)" : "Outgoing (HAPP → your endpoint)"),
    h("dt", {}, "Time"), h("dd", {}, absolute(e.created_at)),
    h("dt", {}, "Request"), h("dd", { class: "mono" }, e.method + " " + e.url),
    h("dt", {}, "Status"), h("dd", { dataset: { test: "detail-status" } }, statusLine(e.status_code, e.error_code)),
    h("dt", {}, "Response time"), h("dd", { dataset: { test: "detail-time" } }, duration(e.duration_ms)),
    e.attempt ? [h("dt", {}, "Attempt"), h("dd", { dataset: { test: "detail-attempt" } },
      String(e.attempt) + (e.message_id && e.message_id.startsWith("tst_") ? " (test send, not retried)" : ""))] : null,
    e.error_code ? [h("dt", {}, "Error code"), h("dd", { class: "mono", dataset: { test: "detail-error" } }, e.error_code)] : null,
    e.message_id ? [h("dt", {}, incoming ? "Message ID" : "Delivery ID"), h("dd", { class: "mono" }, e.message_id)] : null,
    h("dt", {}, "Log ID"), h("dd", { class: "mono" }, e.id));
  const messageSlot = h("div", { class: "block" });
  clear(detail).append(
    h("div", { class: "detail-head" }, h("h2", {}, "Request detail"), h("div", { class: "spacer" }),
      statusPill(e.status_code, e.error_code), h("span", { class: "mono small muted" }, duration(e.duration_ms))),
    h("div", { class: "detail-body" },
      h("div", { class: "block" }, meta),
      h("div", { class: "block" }, h("div", { class: "block-title" }, incoming ? "Incoming payload" : "Outgoing payload",
        e.request_body ? copyButton(() => e.request_body) : null), prettyJson(e.request_body)),
      h("div", { class: "block" }, h("div", { class: "block-title" }, incoming ? "HAPP's answer" : "Endpoint's response"),
        incoming && !e.response_body ? h("p", { class: "small muted" }, statusLine(e.status_code, e.error_code) + (e.error_code ? " · " + e.error_code : "")) : prettyJson(e.response_body)),
      messageSlot));
  if (e.message_id && !e.message_id.startsWith("tst_")) loadMessage(ctx, messageSlot, e.message_id);
}

async function loadMessage(ctx, slot, messageId) {
  let s;
  try { s = await api("GET", "/api/channels/" + enc(ctx.channel.id) + "/messages/" + enc(messageId)); } catch (_) { return; }
  const reply = s.reply;
  const parts = [h("div", { class: "block-title" }, "Message", badge(s.status))];
  if (s.message) {
    parts.push(h("p", { class: "small" }, h("strong", {}, s.message.sender_name || s.message.sender_id), ": ", s.message.text));
  }
  if (reply) {
    parts.push(h("p", { class: "small" }, h("strong", {}, "Reply: "), reply.text));
    parts.push(h("p", { class: "small muted" }, s.attempts.length + " delivery attempt" + (s.attempts.length === 1 ? "" : "s") +
      (reply.delivery && reply.delivery.last_error_code ? " · last error " + reply.delivery.last_error_code : "")));
  }
  const row = h("div", { class: "btn-row" });
  if (s.message) row.append(h("a", { class: "btn btn-sm", href: "#/channels/" + enc(ctx.channel.id) + "/conversations/" + enc(s.message.sender_id) }, "Open conversation"));
  if (reply && ["delivered", "failed", "canceled"].includes(reply.status)) row.append(resendButton(ctx, reply.message_id, () => loadMessage(ctx, clear(slot), messageId)));
  parts.push(row);
  clear(slot).append(...parts);
}

function resendButton(ctx, replyId, after) {
  const button = h("button", { class: "btn btn-sm", type: "button", dataset: { test: "resend" } }, "Resend");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", "/api/channels/" + enc(ctx.channel.id) + "/messages/" + enc(replyId) + "/resend");
      toast("Reply queued for delivery again.");
      if (after) after();
    } catch (err) { toast(err.message, "bad"); button.disabled = false; }
  });
  return button;
}

// --- conversations tab -------------------------------------------------------------------------------------------

async function conversationsTab(ctx, body, selectedSender) {
  const c = ctx.channel;
  const list = h("div", { dataset: { test: "conversation-list" } });
  const thread = h("section", { class: "card", dataset: { test: "thread" } });
  const foot = h("div", { class: "list-foot" });
  let items = [];
  let cursor = null;

  function renderList() {
    clear(list);
    if (!items.length) list.append(h("div", { class: "placeholder" }, "No conversations yet."));
    for (const conv of items) {
      list.append(h("div", { class: "conv-item" + (conv.sender_id === selectedSender ? " selected" : ""), dataset: { sender: conv.sender_id },
        onclick: () => { location.hash = "#/channels/" + enc(c.id) + "/conversations/" + enc(conv.sender_id); } },
        h("span", { class: "avatar round" }, initials(conv.sender_name || conv.sender_id)),
        h("div", { class: "meta" },
          h("div", { class: "top" }, h("span", { class: "name ellipsis" }, conv.sender_name || conv.sender_id),
            conv.last_message_at ? h("span", { class: "small muted", title: absolute(conv.last_message_at) }, ago(conv.last_message_at)) : null),
          h("div", { class: "preview ellipsis" }, conv.last_text || ""),
          h("div", { class: "small muted" }, conv.sender_id + " · " + conv.message_count + " messages"))));
    }
    clear(foot);
    if (cursor) foot.append(h("button", { class: "btn btn-sm", type: "button", onclick: more }, "Load more"));
  }

  async function more() {
    const page = await api("GET", "/api/channels/" + enc(c.id) + "/conversations" + qs({ limit: 50, cursor }));
    items = items.concat(page.items);
    cursor = page.next_cursor;
    renderList();
  }

  body.append(h("div", { class: "conv-split" },
    h("section", { class: "card" }, h("div", { class: "toolbar" }, h("h2", {}, "Conversations")), list, foot),
    thread));
  await more();
  if (selectedSender) await renderThread(ctx, thread, selectedSender);
  else clear(thread).append(h("div", { class: "placeholder" }, "Select a conversation to read it."));
}

async function renderThread(ctx, thread, sender) {
  const c = ctx.channel;
  const page = await api("GET", "/api/channels/" + enc(c.id) + "/conversations/" + enc(sender) + "/messages" + qs({ limit: 100 }));
  const messages = page.items.slice().reverse();
  const name = (messages.find((m) => m.role === "user" && m.sender_name) || {}).sender_name || sender;
  const box = h("div", { class: "thread" });
  if (page.next_cursor) box.append(h("p", { class: "small muted" }, "Showing the latest 100 messages."));
  for (const m of messages) {
    const info = [h("span", { title: absolute(m.created_at) }, ago(m.created_at))];
    if (m.role === "assistant") {
      const d = m.delivery || {};
      info.push(badge(d.status || m.status));
      if (d.attempts) info.push(h("span", {}, d.attempts + " attempt" + (d.attempts === 1 ? "" : "s")));
      if (d.last_error_code && d.status !== "delivered") info.push(h("span", { class: "mono" }, d.last_error_code));
      if (m.llm && m.llm.fallback) info.push(h("span", { class: "badge warn plain", title: m.llm.error || "" }, "Fallback text"));
      if (["delivered", "failed", "canceled"].includes(d.status)) info.push(resendButton(ctx, m.message_id, () => renderThread(ctx, thread, sender)));
    }
    const attachments = (m.attachments || []).map((a) => {
      const label = [h("span", { class: "att-type" }, a.type), a.name || a.url.split("/").pop() || a.type];
      return /^https?:\/\//i.test(a.url)
        ? h("a", { class: "attachment", href: a.url, target: "_blank", rel: "noopener noreferrer", title: a.url }, label)
        : h("span", { class: "attachment" }, label);
    });
    box.append(h("div", { class: "msg " + m.role, dataset: { message: m.message_id } },
      h("div", { class: "bubble" }, m.text || (attachments.length ? "" : "(empty)")),
      attachments.length ? h("div", { class: "attachments" }, attachments) : null,
      h("div", { class: "info" }, info),
      m.role === "user" && m.metadata ? h("details", { class: "meta-json" }, h("summary", {}, "metadata"), prettyJson(jsonText(m.metadata))) : null));
  }
  clear(thread).append(h("div", { class: "toolbar" }, h("h2", {}, name), h("span", { class: "mono small muted" }, sender)), box);
  box.scrollTop = box.scrollHeight;
}

// --- boot ---------------------------------------------------------------------------------------------------------

async function boot() {
  try {
    const session = await api("GET", "/api/session");
    state.csrf = session.csrf_token;
  } catch (_) {
    showSignIn();
    return;
  }
  route();
}

window.addEventListener("hashchange", () => { if (state.csrf) route(); });
boot();
