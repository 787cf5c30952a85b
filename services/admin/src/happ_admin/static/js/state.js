/* What the page remembers between screens: the CSRF token and who is signed in
 * (in memory only; the session itself is an HttpOnly cookie), and what the
 * current screen must undo when the operator leaves it. */

export const state = {
  csrf: null,
  // {id, name, role: "admin" | "operator", channels: [ids] | null}
  user: null,
  routeToken: 0,
  cleanups: [],
};

export function isAdmin() { return !state.user || state.user.role === "admin"; }

/* Run fn when the operator leaves the current screen (a timer, a subscription). */
export function onLeave(fn) { state.cleanups.push(fn); }

export function leave() {
  const fns = state.cleanups.splice(0);
  for (const fn of fns) { try { fn(); } catch (_) { /* leaving either way */ } }
}

export function every(ms, fn) {
  const timer = setInterval(fn, ms);
  onLeave(() => clearInterval(timer));
  return timer;
}
