/* The channel's Request Log tab: the list (live refresh, filters) and the request detail. */
import { api, enc, qs } from "./api.js";
import { clear, copyButton, h } from "./dom.js";
import { ago, absolute, badge, duration, prettyJson, statusLine, statusPill } from "./format.js";
import { every, state } from "./state.js";
import { resendButton } from "./thread.js";

const LOG_REFRESH_MS = 3000;

export const STATUS_FILTERS = [["", "All statuses"], ["2xx", "2xx Success"], ["4xx", "4xx Client error"],
  ["5xx", "5xx Server error"], ["error", "No response"], ["failed", "All failures"]];

export async function logTab(ctx, body, selectedId) {
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
        e.message_id && e.message_id.startsWith("tst_") ? h("span", { class: "tag" }, "test") : null,
        e.message_id && e.message_id.startsWith("typ_") ? h("span", { class: "tag" }, "typing") : null),
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
  every(LOG_REFRESH_MS, () => {
    if (view.live && !document.hidden && ctx.token === state.routeToken) load(false).catch(() => {});
  });
}

export function renderDetailEmpty(detail) {
  clear(detail).append(h("div", { class: "placeholder" }, h("div", { class: "big-icon" }, "☰"),
    h("div", {}, "Select a request to see its payload, status and timing.")));
}

export function renderDetail(ctx, detail, e) {
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
    // The channel's own headers: names only, HAPP never keeps their values.
    e.outgoing_headers && Object.keys(e.outgoing_headers).length ? [h("dt", {}, "Your headers"),
      h("dd", { class: "mono", dataset: { test: "detail-headers" } }, Object.keys(e.outgoing_headers).map((n) => n + ": ••••").join(", "))] : null,
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
  // Test sends and typing events are no message of a conversation.
  if (e.message_id && !/^(tst|typ)_/.test(e.message_id)) loadMessage(ctx, messageSlot, e.message_id);
}

export async function loadMessage(ctx, slot, messageId) {
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
  if (reply && ["delivered", "failed", "canceled"].includes(reply.status)) row.append(resendButton(ctx.channel.id, reply.message_id, () => loadMessage(ctx, clear(slot), messageId)));
  parts.push(row);
  clear(slot).append(...parts);
}
