/* Deliveries turned off and bulk recovery on a channel's page: the reason a
 * channel's deliveries are off (set by the delivery service after its endpoint
 * failed continuously), "Recover failed replies…" (admins) and a progress line
 * that follows the latest recovery until its replies are delivered or failed. */
import { api, enc } from "./api.js";
import { clear, dialog, h, openDialog, toast } from "./dom.js";
import { absolute } from "./format.js";
import { every, isAdmin } from "./state.js";

/* The callout under the channel's head: deliveries off (with why), new messages
   refused while replies pile up, or failing. */
export function deliveryNotice(c) {
  const off = c.deliveries_disabled;
  if (off) {
    return h("p", { class: "callout bad small channel-notice", role: "status", dataset: { test: "deliveries-disabled" } },
      h("strong", {}, "Deliveries off. "), off.message,
      " Replies are kept as failed; connect the channel once the endpoint works, then recover them.");
  }
  if (c.replies_backlogged_until && new Date(c.replies_backlogged_until) > new Date()) {
    return h("p", { class: "callout warn small channel-notice", role: "status", dataset: { test: "replies-backlogged" } },
      h("strong", {}, "New messages refused (429). "),
      "Replies wait for the endpoint faster than it takes them (its outgoing pace, a Retry-After, or failures); "
      + "the webhook accepts again once they drain.");
  }
  if (c.endpoint_failing_since) {
    return h("p", { class: "callout warn small channel-notice", dataset: { test: "endpoint-failing" } },
      "Every delivery attempt has failed since " + absolute(c.endpoint_failing_since) + ".");
  }
  return null;
}

export function recoverButton(ctx, slot) {
  if (!isAdmin()) return null;
  // Remembered across a connect, which clears both: the recovery's natural start.
  const c = ctx.channel;
  ctx.failingSince = (c.deliveries_disabled && c.deliveries_disabled.failing_since)
    || c.endpoint_failing_since || ctx.failingSince;
  const button = h("button", { class: "btn", type: "button", dataset: { test: "recover" } }, "Recover failed replies…");
  button.addEventListener("click", () => confirmRecover(ctx, slot));
  return button;
}

function localInput(iso) {
  // <input type="datetime-local"> wants local time without a zone.
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
}

function confirmRecover(ctx, slot) {
  const c = ctx.channel;
  const from = ctx.failingSince || new Date(Date.now() - 24 * 3600 * 1000).toISOString();
  const since = h("input", { type: "datetime-local", id: "recover-since", value: localInput(from) });
  const problem = h("div", { class: "form-error hidden", role: "alert" });
  const go = h("button", { class: "btn btn-primary", type: "button", dataset: { test: "confirm-recover" } }, "Recover");
  go.addEventListener("click", async () => {
    go.disabled = true;
    try {
      const recovery = await api("POST", "/api/channels/" + enc(c.id) + "/recover", { since: new Date(since.value).toISOString() });
      dialog.close();
      follow(ctx, slot, recovery);
      toast("Recovery started: failed replies are queued again, each conversation in order.");
    } catch (err) {
      go.disabled = false;
      problem.textContent = err.message;
      problem.classList.remove("hidden");
    }
  });
  openDialog("Recover failed replies of “" + c.name + "”", [
    h("p", {}, "Every reply written since this time whose delivery failed is sent again, oldest first in each conversation. Replies already delivered or on their way are not sent twice."),
    h("div", { class: "field" }, h("label", { for: "recover-since" }, "Failed since"), since),
    problem,
  ], [h("button", { class: "btn", value: "cancel" }, "Cancel"), go]);
}

function progressLine(r) {
  const n = r.counts;
  const running = r.state === "running" || n.queued > 0;
  const what = r.state === "running" ? "Recovering" : r.state === "interrupted" ? "Recovery interrupted" : r.state === "failed" ? "Recovery failed" : "Recovery";
  return h("p", { class: "callout small recovery-line" + (r.state === "failed" || r.state === "interrupted" ? " warn" : ""), dataset: { test: "recovery-progress", state: r.state, running: String(running) } },
    h("strong", {}, what + " since " + absolute(r.since) + ": "),
    r.total + " queued again · " + n.delivered + " delivered · " + n.failed + " failed · " + n.queued + " on their way",
    r.error ? " (" + r.error + ")" : "",
    r.state === "interrupted" ? " Start it again to finish." : "");
}

/* Show a recovery's progress, re-read every second while replies are on their way. */
export function follow(ctx, slot, recovery) {
  clear(slot).append(progressLine(recovery));
  if (recovery.state !== "running" && recovery.counts.queued === 0) return;
  const path = "/api/channels/" + enc(ctx.channel.id) + "/recoveries/" + enc(recovery.id);
  let busy = false;
  const timer = every(1000, async () => {
    if (busy) return;
    busy = true;
    try {
      const r = await api("GET", path);
      clear(slot).append(progressLine(r));
      if (r.state !== "running" && r.counts.queued === 0) clearInterval(timer);
    } catch (_) { /* shown again on the next tick */ } finally { busy = false; }
  });
}

/* On opening the page: the latest recovery, if there is one. */
export async function showLatest(ctx, slot) {
  try {
    const { items } = await api("GET", "/api/channels/" + enc(ctx.channel.id) + "/recoveries?limit=1");
    if (items.length) follow(ctx, slot, items[0]);
  } catch (_) { /* the page works without it */ }
}
