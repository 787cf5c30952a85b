/* HAPP admin web UI: plain JavaScript modules over the admin JSON API.
 *
 * Every piece of data is put in the page with textContent (the h() helper),
 * never as HTML, so nothing a webhook caller sends can run here. The session
 * lives in an HttpOnly cookie the script cannot read; the script only keeps the
 * CSRF token in memory and sends it with every request that changes something.
 *
 * Routes (the hash): #/ channels · #/new · #/channels/{id}/{tab}/{…} · #/inbox[/{channel}/{sender}]
 */
import { api, onUnauthorized } from "./api.js";
import { dialog, h, mount } from "./dom.js";
import { errorCard, onSignOut, topbar } from "./frame.js";
import { startLive, stopLive } from "./live.js";
import { leave, state } from "./state.js";
import { showSignIn } from "./signin.js";
import { channelsPage, newChannelPage } from "./channels.js";
import { channelPage } from "./channel.js";
import { inboxPage } from "./inbox.js";

// Before the users feature, a session carries no user: it is the admin token's.
const TOKEN_USER = { id: "token", name: "Admin", role: "admin", channels: null };

async function signedIn(session) {
  state.csrf = session.csrf_token;
  // The sign-in answer may not name the user: the session does.
  if (!session.user) session = await api("GET", "/api/session").catch(() => session);
  state.csrf = session.csrf_token || state.csrf;
  state.user = session.user || TOKEN_USER;
  startLive();
  return route();
}

function signIn(message) {
  stopLive();
  state.csrf = null;
  state.user = null;
  showSignIn(message, signedIn);
}

async function signOut() {
  try { await api("DELETE", "/api/session"); } catch (_) { /* signed out either way */ }
  signIn("You are signed out.");
}

async function route() {
  leave();
  if (dialog.open) dialog.close();
  const token = ++state.routeToken;
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts.length === 0) await channelsPage(token);
    else if (parts[0] === "new") newChannelPage();
    else if (parts[0] === "channels" && parts[1]) await channelPage(token, parts[1], parts[2] || "webhook", parts.slice(3).join("/"));
    else if (parts[0] === "inbox") await inboxPage(token, parts[1] || null, parts.slice(2).join("/") || null);
    else location.hash = "#/";
  } catch (err) {
    if (err.status === 401) return;
    if (token === state.routeToken) mount(topbar([]), h("main", { class: "page" }, errorCard(err)));
  }
}

async function boot() {
  onUnauthorized(signIn);
  onSignOut(signOut);
  let session;
  try {
    session = await api("GET", "/api/session");
  } catch (_) {
    signIn();
    return;
  }
  await signedIn(session);
}

window.addEventListener("hashchange", () => { if (state.csrf) route(); });
boot();
