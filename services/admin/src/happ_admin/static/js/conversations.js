/* The channel's Conversations tab: every conversation, and one read in full. */
import { api, enc, qs } from "./api.js";
import { clear, h } from "./dom.js";
import { ago, absolute, initials, stateChip } from "./format.js";
import { fetchMessages, threadBox } from "./thread.js";

export async function conversationsTab(ctx, body, selectedSender) {
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
          h("div", { class: "small muted row-gap" }, conv.sender_id + " · " + conv.message_count + " messages",
            conv.state && conv.state !== "assistant" ? stateChip(conv) : null,
            conv.unread ? h("span", { class: "unread", title: conv.unread + " unread" }, String(conv.unread)) : null))));
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

export async function renderThread(ctx, thread, sender) {
  const c = ctx.channel;
  const { messages, more } = await fetchMessages(c.id, sender, 100);
  const name = (messages.find((m) => m.role === "user" && m.sender_name) || {}).sender_name || sender;
  const box = threadBox(c.id, messages, more, () => renderThread(ctx, thread, sender));
  const inbox = c.mode && c.mode !== "assistant"
    ? h("a", { class: "btn btn-sm", href: "#/inbox/" + enc(c.id) + "/" + enc(sender), dataset: { test: "open-in-inbox" } }, "Open in Inbox") : null;
  clear(thread).append(h("div", { class: "toolbar" }, h("h2", {}, name), h("span", { class: "mono small muted" }, sender),
    h("div", { class: "spacer" }), inbox), box);
  box.scrollTop = box.scrollHeight;
}
