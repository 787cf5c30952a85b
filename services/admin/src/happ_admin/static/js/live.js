/* Live updates: the inbox's conversations, loaded from GET /api/inbox and kept
 * current by the Server-Sent Events of GET /api/events (one "conversation" event
 * whenever a conversation changes). Screens subscribe with onInboxChange /
 * onConversation; the stream reconnects by itself, and after a drop the lists
 * are reloaded so nothing missed meanwhile stays missing. */
import { api } from "./api.js";
import { state } from "./state.js";

const convs = new Map();
const inboxListeners = new Set();
const convListeners = new Set();
let source = null;
let retryTimer = null;
let dropped = false;
let loaded = false;

export function convKey(channelId, senderId) { return channelId + "\n" + senderId; }

function isNewer(a, b) {
  if (!b || !b.updated_at) return true;
  if (!a.updated_at) return false;
  return Date.parse(a.updated_at) >= Date.parse(b.updated_at);
}

function notify(changed) {
  for (const fn of inboxListeners) { try { fn(changed); } catch (err) { console.error(err); } }
}

/* A conversation as the server now has it (an event, or an action's answer). */
export function applyConversation(conv) {
  const key = convKey(conv.channel_id, conv.sender_id);
  const known = convs.get(key);
  if (!isNewer(conv, known)) return;
  convs.set(key, conv);
  for (const fn of convListeners) { try { fn(conv); } catch (err) { console.error(err); } }
  notify(conv);
}

export async function reloadInbox() {
  const inbox = await api("GET", "/api/inbox");
  convs.clear();
  for (const c of [...inbox.waiting, ...inbox.mine, ...inbox.others]) convs.set(convKey(c.channel_id, c.sender_id), c);
  loaded = true;
  notify(null);
  return inbox;
}

export function isLoaded() { return loaded; }
export function isLive() { return !!source && source.readyState === EventSource.OPEN; }

function connect() {
  clearTimeout(retryTimer);
  source = new EventSource("/api/events");
  source.addEventListener("conversation", (event) => {
    let conv;
    try { conv = JSON.parse(event.data); } catch (_) { return; }
    applyConversation(conv);
  });
  source.addEventListener("open", () => {
    if (dropped) reloadInbox().catch(() => {});
    dropped = false;
    notify(null);
  });
  source.addEventListener("error", () => {
    dropped = true;
    notify(null);
    // The browser retries by itself while the stream is CONNECTING; a refused
    // stream (401, 5xx) is CLOSED for good: open a new one a little later.
    if (source && source.readyState === EventSource.CLOSED) {
      source = null;
      retryTimer = setTimeout(() => { if (state.csrf && !source) connect(); }, 3000);
    }
  });
}

/* After sign-in: load the inbox and open the stream. */
export function startLive() {
  if (!source) connect();
  reloadInbox().catch(() => {});
}

/* On sign-out. */
export function stopLive() {
  clearTimeout(retryTimer);
  if (source) source.close();
  source = null;
  convs.clear();
  loaded = false;
  notify(null);
}

/* fn(changedConvOrNull) after each change; returns the unsubscribe function. */
export function onInboxChange(fn) { inboxListeners.add(fn); return () => inboxListeners.delete(fn); }
/* fn(conv) for each conversation event; returns the unsubscribe function. */
export function onConversation(fn) { convListeners.add(fn); return () => convListeners.delete(fn); }

export function findConversation(channelId, senderId) { return convs.get(convKey(channelId, senderId)) || null; }

function mineTest(c) { return c.state === "operator" && c.operator && state.user && c.operator.id === state.user.id; }
function at(c) { return Date.parse(c.last_message_at || c.updated_at || 0) || 0; }

/* The three lists: waiting (longest waiting first), mine and others' (latest first). */
export function sections() {
  const all = [...convs.values()];
  const waiting = all.filter((c) => c.state === "waiting")
    .sort((a, b) => (Date.parse(a.handoff_at || a.updated_at || 0) || 0) - (Date.parse(b.handoff_at || b.updated_at || 0) || 0));
  const mine = all.filter(mineTest).sort((a, b) => at(b) - at(a));
  const others = all.filter((c) => c.state === "operator" && !mineTest(c)).sort((a, b) => at(b) - at(a));
  return { waiting, mine, others };
}

/* What the nav counts: conversations waiting for a person plus my unread ones. */
export function attention() {
  const { waiting, mine } = sections();
  const unread = mine.filter((c) => c.unread > 0).length;
  return { waiting: waiting.length, unread, total: waiting.length + unread };
}
