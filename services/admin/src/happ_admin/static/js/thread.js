/* One conversation's messages, as the Conversations tab and the Inbox show them:
 * the user on the left; the AI, operators and system texts on the right, each
 * with its delivery status; handoff / hand-back / close events as centred notices. */
import { api, convPath, enc, qs } from "./api.js";
import { h, toast } from "./dom.js";
import { ago, absolute, badge, jsonText, prettyJson } from "./format.js";

export const FINAL = ["delivered", "failed", "canceled"];

const OUTCOMES = {
  ignored: ["off", "Ignored sender"],
  rate_notice: ["warn", "Over the sender limit: notice sent"],
  rate_limited: ["warn", "Over the sender limit: not answered"],
  off_hours: ["warn", "Outside working hours"],
  handoff: ["info", "Handed off"],
  for_operator: ["info", "For a person"],
};

export async function fetchMessages(channelId, senderId, limit) {
  const page = await api("GET", convPath(channelId, senderId, "/messages") + qs({ limit: limit || 100 }));
  return { messages: page.items.slice().reverse(), more: !!page.next_cursor };
}

/* Whether a reply shown may still change (not delivered, failed or canceled yet). */
export function pendingReplies(messages, withinMs) {
  const now = Date.now();
  return messages.some((m) => m.role !== "user" && m.delivery && !FINAL.includes(m.delivery.status)
    && (!withinMs || now - Date.parse(m.created_at) < withinMs));
}

export function resendButton(channelId, replyId, after) {
  const button = h("button", { class: "btn btn-sm", type: "button", dataset: { test: "resend" } }, "Resend");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", "/api/channels/" + enc(channelId) + "/messages/" + enc(replyId) + "/resend");
      toast("Reply queued for delivery again.");
      if (after) after();
    } catch (err) { toast(err.message, "bad"); button.disabled = false; }
  });
  return button;
}

function attachmentList(m) {
  return (m.attachments || []).map((a) => {
    const label = [h("span", { class: "att-type" }, a.type), a.name || a.url.split("/").pop() || a.type];
    return /^https?:\/\//i.test(a.url)
      ? h("a", { class: "attachment", href: a.url, target: "_blank", rel: "noopener noreferrer", title: a.url }, label)
      : h("span", { class: "attachment" }, label);
  });
}

function deliveryInfo(channelId, m, after, quiet) {
  const d = m.delivery || {};
  const status = d.status || m.status;
  const info = [h("span", { class: "delivery", dataset: { test: "delivery" } }, badge(status))];
  if (d.attempts) info.push(h("span", {}, d.attempts + " attempt" + (d.attempts === 1 ? "" : "s")));
  if (d.last_error_code && status !== "delivered") info.push(h("span", { class: "mono" }, d.last_error_code));
  if (m.llm && m.llm.fallback) info.push(h("span", { class: "badge warn plain", title: m.llm.error || "" }, "Fallback text"));
  if (FINAL.includes(status) && !(quiet && status === "delivered")) info.push(resendButton(channelId, m.message_id, after));
  return info;
}

function eventTitle(m) {
  const who = m.author && m.author.type === "operator" ? m.author.name : null;
  if (m.event === "handoff") return who ? who + " took over" : "Handed off to a person";
  if (m.event === "operator_joined") return (who || "An operator") + " joined the conversation";
  if (m.event === "hand_back") return (who || "An operator") + " handed back to the assistant";
  if (m.event === "closed") return (who || "An operator") + " closed the conversation";
  return "System";
}

function messageView(channelId, m, after) {
  const when = h("span", { title: absolute(m.created_at) }, ago(m.created_at));
  if (m.event) {
    return h("div", { class: "msg event", dataset: { message: m.message_id, event: m.event } },
      h("div", { class: "notice" }, h("strong", {}, eventTitle(m)), m.text ? h("span", { class: "said" }, "“" + m.text + "”") : null),
      h("div", { class: "info" }, when, m.delivery ? deliveryInfo(channelId, m, after, true) : null));
  }
  const attachments = attachmentList(m);
  let byline = null;
  const info = [when];
  if (m.role === "user") {
    const hd = m.handling;
    if (hd && OUTCOMES[hd.outcome]) {
      const [kind, label] = OUTCOMES[hd.outcome];
      info.push(h("span", { class: "badge plain " + kind, title: hd.trigger || "", dataset: { outcome: hd.outcome } },
        label + (hd.outcome === "handoff" && hd.trigger ? " · " + hd.trigger : "")));
    }
  } else {
    byline = m.role === "operator"
      ? h("div", { class: "byline" }, (m.author && m.author.name) || "Operator")
      : m.role === "system" ? h("div", { class: "byline" }, "System")
        : h("div", { class: "byline" }, "AI assistant");
    info.push(...deliveryInfo(channelId, m, after));
  }
  return h("div", { class: "msg " + m.role, dataset: { message: m.message_id } },
    byline,
    h("div", { class: "bubble" }, m.text || (attachments.length ? "" : "(empty)")),
    attachments.length ? h("div", { class: "attachments" }, attachments) : null,
    h("div", { class: "info" }, info),
    m.role === "user" && m.metadata ? h("details", { class: "meta-json" }, h("summary", {}, "metadata"), prettyJson(jsonText(m.metadata))) : null);
}

/* The message list; after() runs when a Resend was queued. */
export function threadBox(channelId, messages, more, after) {
  const box = h("div", { class: "thread" });
  if (more) box.append(h("p", { class: "small muted" }, "Showing the latest 100 messages."));
  if (!messages.length) box.append(h("p", { class: "placeholder" }, "No messages yet."));
  for (const m of messages) box.append(messageView(channelId, m, after));
  return box;
}
