/* A channel's page: its head (status, Send test, connect/disconnect), the tabs,
 * and the Webhook URL tab. Admin-only controls are hidden from operators. */
import { api, enc } from "./api.js";
import { clear, copyButton, dialog, h, mount, openDialog, toast } from "./dom.js";
import { absolute, badge, duration, initials, statusLine } from "./format.js";
import { topbar } from "./frame.js";
import { modeLabel } from "./forms.js";
import { isAdmin, state } from "./state.js";
import { settingsTab } from "./settings.js";
import { logTab } from "./log.js";
import { conversationsTab } from "./conversations.js";
import { deliveryNotice, recoverButton, showLatest } from "./recovery.js";

export const TABS = [["settings", "Settings"], ["webhook", "Webhook URL"], ["log", "Request Log"], ["conversations", "Conversations"]];

export async function channelPage(token, id, tab, rest) {
  const channel = await api("GET", "/api/channels/" + enc(id));
  if (token !== state.routeToken) return;
  const ctx = { channel, token, testResult: null };
  const resultSlot = h("div", {});
  const body = h("div", { class: "tab-body" });
  ctx.resultSlot = resultSlot;
  ctx.recoverySlot = h("div", {});
  ctx.refreshHead = () => {
    const fresh = channelHead(ctx);
    headCard.replaceWith(fresh);
    headCard = fresh;
    document.querySelector(".topbar").replaceWith(topbar([ctx.channel.name]));
  };
  let headCard = channelHead(ctx);
  mount(topbar([channel.name]), h("main", { class: "page" }, headCard, resultSlot, ctx.recoverySlot, body));
  showLatest(ctx, ctx.recoverySlot);
  if (tab === "settings") settingsTab(ctx, body);
  else if (tab === "log") await logTab(ctx, body, rest);
  else if (tab === "conversations") await conversationsTab(ctx, body, rest);
  else webhookTab(ctx, body);
}

export function channelHead(ctx) {
  const c = ctx.channel;
  const active = (location.hash.split("/")[3] || "webhook");
  const testButton = h("button", { class: "btn", type: "button", dataset: { test: "send-test" } }, "Send test");
  testButton.addEventListener("click", () => sendTest(ctx, testButton));
  // Deliveries turned off automatically come back with a connect, like a disconnected channel.
  const toggle = c.status === "connected" && !c.deliveries_disabled
    ? h("button", { class: "btn btn-danger", type: "button", dataset: { test: "disconnect" }, onclick: () => confirmDisconnect(ctx) }, "Disconnect")
    : h("button", { class: "btn btn-primary", type: "button", dataset: { test: "connect" }, onclick: () => confirmConnect(ctx) }, "Connect");
  return h("section", { class: "card" },
    h("div", { class: "channel-head" },
      h("span", { class: "avatar lg" }, initials(c.name)),
      h("div", { class: "title" },
        h("div", { class: "title-row" }, h("h1", { dataset: { test: "channel-name" } }, c.name), badge(c.status),
          c.mode && c.mode !== "assistant" ? h("span", { class: "tag mode", dataset: { test: "mode" } }, modeLabel(c.mode)) : null),
        h("div", { class: "sub" }, "Custom Messenger · ", h("span", { class: "mono" }, c.id))),
      h("div", { class: "btn-row" }, testButton, recoverButton(ctx, ctx.recoverySlot), isAdmin() ? toggle : null)),
    deliveryNotice(c),
    h("nav", { class: "tabs", role: "tablist" }, TABS.map(([key, label]) =>
      h("a", { class: "tab" + (key === active ? " active" : ""), role: "tab", href: "#/channels/" + enc(c.id) + "/" + key, dataset: { tab: key } }, label))));
}

export async function sendTest(ctx, button) {
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

export function renderTestResult(ctx, r) {
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

export function confirmDisconnect(ctx) {
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

export function confirmConnect(ctx) {
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

export function webhookTab(ctx, body) {
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
      c.hmac_secret
        ? h("div", { class: "copy-field" }, secretValue, reveal, copyButton(() => ctx.channel.hmac_secret), isAdmin() ? rotate : null)
        : h("p", { class: "callout small", dataset: { test: "secret-hidden" } }, "Only an admin can see or rotate the secret."),
      overlap ? h("div", { class: "section" }, overlap) : null,
      h("div", { class: "section" }, h("dl", { class: "kv" },
        h("dt", {}, "Outgoing endpoint"), h("dd", { class: "mono" }, c.outgoing_url),
        h("dt", {}, "Incoming signature"), h("dd", {}, c.require_signature ? "Required (unsigned requests get 401)" : "Verified when present"),
        h("dt", {}, "Rate limit"), h("dd", {}, c.rate_limit_per_second + " messages/s"),
        h("dt", {}, "Created"), h("dd", {}, absolute(c.created_at)))))));
}
