/* The operators' Inbox: conversations waiting for a person, mine, and others';
 * one conversation open beside them with Take over / Hand back / Close and a
 * composer. Everything follows the live updates (live.js) without reloading:
 * the lists and their unread counts, the open conversation's state, and its
 * messages, refetched when its conversation changes and every second while a
 * reply shown is not delivered, failed or canceled yet. */
import { api, convPath, enc } from "./api.js";
import { clear, h, mount, toast } from "./dom.js";
import { ago, absolute, initials, stateChip } from "./format.js";
import { topbar } from "./frame.js";
import { applyConversation, findConversation, isLive, onConversation, onInboxChange, reloadInbox, sections } from "./live.js";
import { isAdmin, onLeave, state } from "./state.js";
import { fetchMessages, pendingReplies, threadBox } from "./thread.js";

const SECTIONS = [
  ["waiting", "Waiting for a person", "Nobody is waiting."],
  ["mine", "Mine", "You hold no conversation. Take over one that is waiting."],
  ["others", "Others", "No one else holds a conversation."],
];
const PENDING_POLL_MS = 1000;
// A reply still pending after this long is stuck, not in flight: stop polling for it.
const PENDING_WINDOW_MS = 5 * 60 * 1000;

function inboxHash(channelId, senderId) { return "#/inbox/" + enc(channelId) + "/" + enc(senderId); }

function holdsIt(conv) {
  return !!conv && conv.state === "operator" && !!conv.operator && !!state.user && conv.operator.id === state.user.id;
}

export async function inboxPage(token, channelId, senderId) {
  await reloadInbox();
  if (token !== state.routeToken) return;

  const lists = h("aside", { class: "card inbox-lists", dataset: { test: "inbox-lists" } });
  const pane = h("section", { class: "card conv-pane", dataset: { test: "conv-pane" } });
  const liveDot = h("span", { class: "live", dataset: { test: "live" } }, h("span", { class: "dot" }), "Live");
  const view = { open: null, conv: null, messages: [], pollTimer: null, fetching: null, again: false, reading: false, listsQueued: false };

  function setLive() {
    const on = isLive();
    liveDot.classList.toggle("on", on);
    liveDot.title = on ? "Live updates are on" : "Reconnecting…";
    liveDot.lastChild.textContent = on ? "Live" : "Reconnecting…";
  }

  // --- the three lists -------------------------------------------------------------
  function item(conv) {
    const selected = view.open && view.open.channelId === conv.channel_id && view.open.senderId === conv.sender_id;
    const name = conv.sender_name || conv.sender_id;
    return h("div", {
      class: "inbox-item" + (selected ? " selected" : "") + (conv.unread ? " has-unread" : ""),
      dataset: { channel: conv.channel_id, sender: conv.sender_id }, role: "button", tabindex: "0",
      onclick: () => select(conv.channel_id, conv.sender_id),
      onkeydown: (e) => { if (e.key === "Enter") select(conv.channel_id, conv.sender_id); },
    },
    h("span", { class: "avatar round" }, initials(name)),
    h("div", { class: "meta" },
      h("div", { class: "top" }, h("span", { class: "name ellipsis" }, name),
        conv.last_message_at ? h("span", { class: "small muted", title: absolute(conv.last_message_at) }, ago(conv.last_message_at)) : null),
      h("div", { class: "preview ellipsis" }, conv.last_text || ""),
      h("div", { class: "small muted sub ellipsis" }, conv.channel_name || conv.channel_id,
        conv.state === "operator" && !holdsIt(conv) && conv.operator ? " · " + conv.operator.name : "",
        conv.state === "waiting" && conv.handoff_at ? " · waiting " + ago(conv.handoff_at).replace(" ago", "") : "")),
    conv.unread ? h("span", { class: "unread", title: conv.unread + " unread", dataset: { test: "unread" } }, String(conv.unread)) : null);
  }

  function renderLists() {
    view.listsQueued = false;
    const groups = sections();
    clear(lists);
    for (const [key, title, empty] of SECTIONS) {
      const convs = groups[key];
      const unread = convs.reduce((n, c) => n + (c.unread || 0), 0);
      lists.append(h("div", { class: "inbox-section", dataset: { section: key } },
        h("div", { class: "inbox-section-head" }, h("h3", {}, title),
          h("span", { class: "count" + (convs.length ? "" : " zero"), dataset: { test: "section-count" } }, String(convs.length)),
          h("div", { class: "spacer" }),
          unread ? h("span", { class: "small muted", dataset: { test: "section-unread" } }, unread + " unread") : null),
        convs.length ? convs.map(item) : h("p", { class: "inbox-empty" }, empty)));
    }
  }

  function queueLists() {
    if (view.listsQueued) return;
    view.listsQueued = true;
    setTimeout(renderLists, 30);
  }

  // --- the open conversation --------------------------------------------------------
  const head = h("div", { class: "conv-head" });
  const threadSlot = h("div", { class: "thread-slot" });
  const text = h("textarea", { rows: 2, placeholder: "", dataset: { test: "composer" }, "aria-label": "Reply" });
  const send = h("button", { class: "btn btn-primary", type: "submit", dataset: { test: "send" } }, "Send");
  const composerNote = h("span", { class: "small muted" });
  const composer = h("form", { class: "composer", dataset: { test: "composer-form" } },
    text, h("div", { class: "composer-foot" }, composerNote, h("div", { class: "spacer" }), send));
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); composer.requestSubmit(); }
  });
  composer.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = text.value;
    if (!value.trim() || !holdsIt(view.conv)) return;
    send.disabled = true;
    try {
      await api("POST", convPath(view.open.channelId, view.open.senderId, "/messages"), { text: value });
      text.value = "";
      await refetch();
    } catch (err) {
      toast(err.message, "bad");
      if (err.status === 409) reloadInbox().catch(() => {});
    } finally {
      renderComposer();
      text.focus();
    }
  });

  function actionButton(label, action, kind, testName) {
    const b = h("button", { class: "btn btn-sm " + (kind || ""), type: "button", dataset: { test: testName } }, label);
    b.addEventListener("click", async () => {
      b.disabled = true;
      const { channelId, senderId } = view.open;
      try {
        const conv = await api("POST", convPath(channelId, senderId, "/" + action));
        applyConversation(conv);
        view.conv = conv;
        renderHead();
        renderComposer();
        toast(action === "take" ? "You hold the conversation: the assistant stays silent in it."
          : action === "hand-back" ? "Handed back to the assistant." : "Conversation closed.");
        await refetch();
        if (action === "take") text.focus();
      } catch (err) {
        toast(err.message, "bad");
        b.disabled = false;
        if (err.status === 409) reloadInbox().catch(() => {});
      }
    });
    return b;
  }

  function renderHead() {
    const conv = view.conv;
    const { channelId, senderId } = view.open;
    const name = conv.sender_name || (view.messages.find((m) => m.role === "user" && m.sender_name) || {}).sender_name || senderId;
    const mine = holdsIt(conv);
    const heldByOther = conv.state === "operator" && !mine;
    const actions = [];
    if (conv.state !== "operator" || (heldByOther && isAdmin())) {
      actions.push(actionButton(heldByOther ? "Take over from " + (conv.operator ? conv.operator.name : "them") : "Take over", "take", "btn-primary", "take"));
    }
    if (conv.state === "waiting" || (conv.state === "operator" && (mine || isAdmin()))) actions.push(actionButton("Hand back", "hand-back", "", "hand-back"));
    if (conv.state !== "closed" && (conv.state !== "operator" || mine || isAdmin())) actions.push(actionButton("Close", "close", "btn-ghost", "close"));
    const since = conv.state !== "assistant" && conv.handoff_at
      ? h("span", { class: "small muted", title: absolute(conv.handoff_at) },
        "handed off " + ago(conv.handoff_at) + (conv.handoff_trigger ? " · " + conv.handoff_trigger : ""))
      : null;
    clear(head).append(
      h("span", { class: "avatar round" }, initials(name)),
      h("div", { class: "title" },
        h("div", { class: "title-row" }, h("h2", { dataset: { test: "conv-name" } }, name),
          h("span", { dataset: { test: "conv-state" } }, stateChip(conv, state.user))),
        h("div", { class: "sub small muted" },
          h("span", { class: "mono" }, senderId), " · ",
          h("a", { href: "#/channels/" + enc(channelId) + "/conversations/" + enc(senderId) }, conv.channel_name || channelId),
          since ? [" · ", since] : null)),
      h("div", { class: "btn-row" }, actions));
  }

  function renderComposer() {
    const mine = holdsIt(view.conv);
    text.disabled = !mine;
    send.disabled = !mine;
    composer.classList.toggle("off", !mine);
    const conv = view.conv;
    text.placeholder = mine ? "Write a reply…" : "";
    composerNote.textContent = mine ? "Enter sends · Shift+Enter for a new line"
      : conv.state === "operator" ? (conv.operator ? conv.operator.name : "Another operator") + " holds this conversation."
        : "Take over to reply. Meanwhile " + (conv.state === "waiting" ? "the user waits for a person." : "the assistant answers.");
  }

  function renderThread(messages, more) {
    const old = threadSlot.querySelector(".thread");
    const atBottom = !old || old.scrollTop + old.clientHeight >= old.scrollHeight - 40;
    const keep = old ? old.scrollTop : 0;
    const box = threadBox(view.open.channelId, messages, more, () => refetch());
    clear(threadSlot).append(box);
    box.scrollTop = atBottom ? box.scrollHeight : keep;
  }

  // One fetch at a time; a change meanwhile fetches once more after it.
  async function refetch() {
    if (!view.open) return;
    if (view.fetching) { view.again = true; return view.fetching; }
    const open = view.open;
    view.fetching = (async () => {
      try {
        const { messages, more } = await fetchMessages(open.channelId, open.senderId, 100);
        if (view.open !== open || token !== state.routeToken) return;
        if (JSON.stringify(messages) !== JSON.stringify(view.messages) || !threadSlot.firstChild) {
          view.messages = messages;
          renderThread(messages, more);
          if (!view.conv.sender_name) renderHead();
        }
        clearTimeout(view.pollTimer);
        if (pendingReplies(messages, PENDING_WINDOW_MS)) view.pollTimer = setTimeout(() => refetch().catch(() => {}), PENDING_POLL_MS);
      } finally {
        view.fetching = null;
      }
    })();
    await view.fetching;
    if (view.again) { view.again = false; await refetch(); }
  }

  async function markRead() {
    if (view.reading || !view.open || document.hidden) return;
    view.reading = true;
    try { await api("POST", convPath(view.open.channelId, view.open.senderId, "/read")); } catch (_) { /* a count, not worth an alarm */ }
    finally { view.reading = false; }
  }

  async function select(channelId, senderId) {
    if (view.open && view.open.channelId === channelId && view.open.senderId === senderId) return;
    history.replaceState(null, "", inboxHash(channelId, senderId));
    await open(channelId, senderId);
  }

  async function open(channelId, senderId) {
    clearTimeout(view.pollTimer);
    view.open = { channelId, senderId };
    view.messages = [];
    view.conv = findConversation(channelId, senderId)
      || { channel_id: channelId, sender_id: senderId, state: "assistant", operator: null, unread: 0, channel_name: null, sender_name: null };
    queueLists();
    clear(threadSlot).append(h("p", { class: "placeholder" }, "Loading…"));
    clear(pane).append(head, threadSlot, composer);
    renderHead();
    renderComposer();
    try {
      await refetch();
    } catch (err) {
      clear(threadSlot).append(h("p", { class: "placeholder" }, err.status === 404 ? "No such conversation." : err.message));
      return;
    }
    if (view.conv.unread || !findConversation(channelId, senderId)) markRead();
    if (holdsIt(view.conv)) text.focus();
  }

  function emptyPane() {
    clear(pane).append(h("div", { class: "placeholder" }, h("div", { class: "big-icon" }, "✉"),
      h("div", {}, "Select a conversation. Take over one that waits for a person to answer it.")));
  }

  // --- live ------------------------------------------------------------------------------
  onLeave(onInboxChange(() => { setLive(); queueLists(); }));
  onLeave(onConversation((conv) => {
    if (!view.open || conv.channel_id !== view.open.channelId || conv.sender_id !== view.open.senderId) return;
    const before = view.conv;
    view.conv = conv;
    if (before.state !== conv.state || JSON.stringify(before.operator) !== JSON.stringify(conv.operator) || before.sender_name !== conv.sender_name) {
      renderHead();
      renderComposer();
    }
    refetch().catch(() => {});
    if (conv.unread) markRead();
  }));
  onLeave(() => { clearTimeout(view.pollTimer); view.open = null; });
  const onVisible = () => { if (!document.hidden && view.open && view.conv.unread) markRead(); };
  document.addEventListener("visibilitychange", onVisible);
  onLeave(() => document.removeEventListener("visibilitychange", onVisible));

  mount(topbar(["Inbox"], "inbox"), h("main", { class: "page page-wide" },
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Inbox"),
        h("p", {}, "Conversations that wait for a person, the ones you hold, and your colleagues'. Updates arrive as they happen.")),
      liveDot),
    h("div", { class: "inbox-split" }, lists, pane)));
  setLive();
  renderLists();
  if (channelId && senderId) await open(channelId, senderId);
  else emptyPane();
}
