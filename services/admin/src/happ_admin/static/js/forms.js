/* Form fields, the channel form and its sections, and showing validation errors. */
import { h } from "./dom.js";

export function field(name, label, control, hint, wide) {
  control.id = control.id || "f-" + name.replace(/\./g, "-");
  control.name = name;
  return h("div", { class: "field" + (wide ? " wide" : ""), dataset: { field: name } },
    h("label", { for: control.id }, label), control,
    hint ? h("span", { class: "hint" }, hint) : null,
    h("span", { class: "error hidden" }));
}

export function toggleField(name, label, checked, hint) {
  const input = h("input", { type: "checkbox", name, id: "f-" + name, checked: !!checked });
  return h("div", { class: "field wide", dataset: { field: name } },
    h("label", { class: "toggle", for: "f-" + name }, input,
      h("span", {}, h("span", { class: "label" }, label), hint ? h("span", { class: "hint" }, " — " + hint) : null)),
    h("span", { class: "error hidden" }));
}

/* Show a 422's details next to their fields. A detail's field is a dotted path
 * ("routes.2.pattern", "working_hours.intervals.0"): it goes to the field with the
 * longest matching prefix; on a one-item-per-line field it says which line. */
export function showFieldErrors(form, err) {
  form.querySelectorAll(".field").forEach((f) => {
    f.classList.remove("invalid");
    const e = f.querySelector(":scope > .error");
    if (e) { e.textContent = ""; e.classList.add("hidden"); }
  });
  let shown = false;
  for (const d of err.details || []) {
    const path = String(d.field || "").split(".");
    let f = null;
    let rest = [];
    for (let n = path.length; n > 0 && !f; n--) {
      f = form.querySelector('[data-field="' + CSS.escape(path.slice(0, n).join(".")) + '"]');
      rest = path.slice(n);
    }
    if (!f) continue;
    const e = f.querySelector(":scope > .error");
    if (!e) continue;
    f.classList.add("invalid");
    const line = f.dataset.lines !== undefined && /^\d+$/.test(rest[0] || "") ? "Line " + (Number(rest[0]) + 1) + ": " : "";
    const problem = line + String(d.problem || "").replace(/^Value error, /, "");
    e.textContent = e.textContent ? e.textContent + "; " + problem : problem;
    e.classList.remove("hidden");
    shown = true;
  }
  const banner = form.querySelector(".form-error");
  if (banner) {
    banner.textContent = err.message || "";
    banner.classList.toggle("hidden", !err.message || (shown && err.code === "INVALID_PAYLOAD"));
  }
}

export function assistantFields(a) {
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

export function readAssistant(form) {
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

/* The channel form's body for POST (creating) or PATCH /api/channels. */
export function readChannel(form, creating) {
  return {
    name: form.elements.name.value,
    outgoing_url: form.elements.outgoing_url.value,
    delivery: form.elements.delivery.value,
    rate_limit_per_second: Number(form.elements.rate_limit_per_second.value),
    require_signature: form.elements.require_signature.checked,
    assistant: readAssistant(form),
    ...readOutgoing(form, creating),
    ...readRules(form, creating),
  };
}

export function channelForm(channelNote, channelFields, assistantNote, assistantList, error, actions, rules) {
  return h("form", { class: "channel-form", novalidate: true },
    h("div", { class: "grid-2" },
      h("section", { class: "card card-pad" }, h("div", { class: "fieldset-title" }, "Channel"), h("p", {}, channelNote),
        h("div", { class: "form-grid" }, channelFields)),
      h("section", { class: "card card-pad" }, h("div", { class: "fieldset-title" }, "Assistant"), h("p", {}, assistantNote),
        h("div", { class: "form-grid" }, assistantList))),
    rules || null,
    error,
    h("div", { class: "form-actions bare" }, actions));
}

// --- who answers & filters (SPEC §6a) ------------------------------------------------------------

export const MODES = [
  ["assistant", "AI assistant answers", "The assistant answers every message; nobody takes over."],
  ["assistant_with_handoff", "AI, hands off to a person", "The assistant answers until a handoff: a keyword, a route, its own decision, a failure, or an operator's Take over."],
  ["operators", "People answer (no AI)", "Every message waits in the Inbox for an operator; the user is told once with the handoff text."],
];

export function modeLabel(mode) { return (MODES.find(([m]) => m === mode) || [mode, mode])[1]; }

const DAYS = [["mon", "Mon"], ["tue", "Tue"], ["wed", "Wed"], ["thu", "Thu"], ["fri", "Fri"], ["sat", "Sat"], ["sun", "Sun"]];

function linesField(name, label, values, hint, placeholder) {
  const el = field(name, label, h("textarea", { rows: 3, spellcheck: "false", placeholder }, (values || []).join("\n")), hint);
  el.dataset.lines = "";
  return el;
}

function lines(text) { return text.split("\n").map((s) => s.trim()).filter(Boolean); }

function routeLine(r) { return (r.match || "keyword") + ": " + r.pattern; }

function parseRoute(line) {
  const m = /^(keyword|regex)\s*:\s*(.*)$/i.exec(line);
  return m ? { match: m[1].toLowerCase(), pattern: m[2] } : { match: "keyword", pattern: line };
}

function intervalRow(rows, interval) {
  interval = interval || { days: ["mon", "tue", "wed", "thu", "fri"], start: "09:00", end: "18:00" };
  const row = h("div", { class: "field wh-row" },
    h("div", { class: "wh-days" }, DAYS.map(([d, label]) =>
      h("label", { class: "day" }, h("input", { type: "checkbox", value: d, checked: interval.days.includes(d), dataset: { day: d } }), h("span", {}, label)))),
    h("input", { type: "text", class: "wh-time", value: interval.start, placeholder: "09:00", "aria-label": "From", dataset: { part: "start" } }),
    h("span", { class: "muted" }, "–"),
    h("input", { type: "text", class: "wh-time", value: interval.end, placeholder: "18:00", "aria-label": "Until", dataset: { part: "end" } }),
    h("button", { class: "btn btn-ghost btn-sm", type: "button", "aria-label": "Remove these hours", onclick: () => { row.remove(); renumber(rows); } }, "✕"),
    h("span", { class: "error hidden" }));
  rows.append(row);
  renumber(rows);
}

function renumber(rows) {
  [...rows.children].forEach((row, i) => { row.dataset.field = "working_hours.intervals." + i; });
}

function workingHoursField(wh) {
  const zone = h("input", { type: "text", id: "f-working_hours-timezone", name: "working_hours.timezone", value: wh ? wh.timezone : "",
    placeholder: "Europe/Kyiv", spellcheck: "false" });
  const rows = h("div", { class: "wh-rows", dataset: { test: "working-hours" } });
  for (const interval of (wh && wh.intervals) || []) intervalRow(rows, interval);
  const add = h("button", { class: "btn btn-sm", type: "button", dataset: { test: "add-hours" }, onclick: () => {
    intervalRow(rows);
    if (!zone.value.trim()) zone.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } }, "+ Add hours");
  return h("div", { class: "field wide", dataset: { field: "working_hours" } },
    h("label", { for: "f-working_hours-timezone" }, "Working hours"),
    h("span", { class: "hint" }, "Empty: always open. Outside these hours a message gets the off-hours text, or waits for a person when there is none."),
    h("div", { class: "field", dataset: { field: "working_hours.timezone" } },
      h("div", { class: "wh-zone" }, h("span", { class: "small muted" }, "Time zone"), zone),
      h("span", { class: "error hidden" })),
    rows,
    h("div", {}, add),
    h("span", { class: "error hidden" }));
}

function readWorkingHours(form) {
  const zone = form.elements["working_hours.timezone"].value.trim();
  const rows = [...form.querySelectorAll(".wh-row")];
  if (!zone && !rows.length) return null;
  return {
    timezone: zone,
    intervals: rows.map((row) => ({
      days: [...row.querySelectorAll("input[data-day]")].filter((i) => i.checked).map((i) => i.value),
      start: row.querySelector("[data-part=start]").value.trim(),
      end: row.querySelector("[data-part=end]").value.trim(),
    })),
  };
}

/* The "Who answers & filters" card: mode, handoff, routes, ignore list, hours, pace. */
export function rulesSection(c) {
  c = c || {};
  const mode = h("select", {}, MODES.map(([value, label]) => h("option", { value, selected: (c.mode || "assistant") === value }, label)));
  const modeHint = h("span", { class: "hint" });
  const showHint = () => { modeHint.textContent = (MODES.find(([m]) => m === mode.value) || ["", "", ""])[2]; };
  mode.addEventListener("change", showHint);
  const modeField = field("mode", "Who answers", mode, null, true);
  modeField.querySelector("select").after(modeHint);
  showHint();
  return h("section", { class: "card card-pad rules", dataset: { test: "rules" } },
    h("div", { class: "fieldset-title" }, "Who answers & filters"),
    h("p", {}, "Applied to each incoming message before the assistant, in this order: ignore list, sender pace, working hours, routes and handoff keywords."),
    h("div", { class: "form-grid" },
      modeField,
      linesField("handoff_keywords", "Handoff keywords", c.handoff_keywords, "One per line. A message containing one goes to a person (whole words, any case).", "human agent\noperator"),
      field("handoff_text", "Handoff text", h("textarea", { rows: 3 }, c.handoff_text || "Connecting you to a person. Please stay with us."),
        "Sent to the user when the conversation moves to a person."),
      (() => {
        const f = field("routes", "Routes to a person", h("textarea", { rows: 3, spellcheck: "false", placeholder: "keyword: refund\nregex: ^order\\s+\\d+" },
          (c.routes || []).map(routeLine).join("\n")),
          "One per line: “keyword: refund” or “regex: ^order\\s+\\d+”. A matching message skips the assistant.");
        f.dataset.lines = "";
        return f;
      })(),
      linesField("ignore_senders", "Ignored senders", c.ignore_senders, "One sender_id per line: accepted and logged, never answered.", "spam_bot_1"),
      workingHoursField(c.working_hours),
      field("off_hours_text", "Off-hours text", h("textarea", { rows: 2, placeholder: "Empty: messages outside working hours wait for a person." }, c.off_hours_text || ""),
        "Sent outside working hours."),
      field("sender_rate_per_minute", "Messages per sender per minute",
        h("input", { type: "number", min: 1, max: 10000, step: 1, value: c.sender_rate_per_minute ?? "", placeholder: "No limit" }),
        "Beyond it: one notice, then silence until the minute passes. Empty: no limit."),
      field("rate_notice_text", "Rate notice text", h("textarea", { rows: 2 }, c.rate_notice_text ||
        "You are sending messages faster than we can answer them. Please wait a moment."),
        "The one notice a sender gets when over the limit.", true)));
}

/* The rules as the API takes them. creating: leave out what is empty, so defaults apply. */
export function readRules(form, creating) {
  const v = (n) => form.elements[n].value;
  const rate = v("sender_rate_per_minute").trim();
  const out = {
    mode: v("mode"),
    handoff_keywords: lines(v("handoff_keywords")),
    handoff_text: v("handoff_text"),
    ignore_senders: lines(v("ignore_senders")),
    routes: lines(v("routes")).map(parseRoute),
    working_hours: readWorkingHours(form),
    off_hours_text: v("off_hours_text").trim() ? v("off_hours_text") : null,
    sender_rate_per_minute: rate === "" ? null : Number(rate),
    rate_notice_text: v("rate_notice_text"),
  };
  if (creating) {
    for (const [k, value] of Object.entries(out)) if (value === null || value === "") delete out[k];
  }
  return out;
}

// --- how replies leave: POSTed, in the webhook's response, or both -------------------------------

const DELIVERY_MODES = [
  ["endpoint", "POSTed to the outgoing endpoint"],
  ["response", "Only in the webhook's response (Prefer: wait) and GET /replies: no endpoint"],
  ["both", "Both: in the response when waited for, and POSTed"],
];

/* The delivery select; the outgoing endpoint is required unless replies never
 * leave by POST. Call once the form holds both fields. */
export function deliveryField(value) {
  const select = h("select", { dataset: { test: "delivery-mode" } },
    DELIVERY_MODES.map(([mode, label]) => h("option", { value: mode }, label)));
  select.value = value || "endpoint";
  return field("delivery", "Replies", select,
    "Response: the integrator gets each reply in the webhook's response or fetches it; nothing is POSTed.", true);
}

export function linkDeliveryToUrl(form) {
  const sync = () => { form.elements.outgoing_url.required = form.elements.delivery.value !== "response"; };
  form.elements.delivery.addEventListener("change", sync);
  sync();
}

// --- outgoing requests: the channel's own headers and typing events -------------------------------

/* A header row. A saved header shows its name and a masked value: its value never
 * reaches the browser; typing a new one replaces it, ✕ removes it. A new row has
 * both inputs. */
function headerRow(rows, name) {
  const saved = name !== undefined;
  const nameInput = h("input", { type: "text", class: "hdr-name", value: saved ? name : "", readonly: saved, placeholder: "Authorization",
    spellcheck: "false", "aria-label": "Header name", dataset: { part: "name" } });
  const valueInput = h("input", { type: "text", class: "hdr-value", autocomplete: "off", spellcheck: "false", "aria-label": "Header value",
    placeholder: saved ? "•••• (unchanged; type to replace)" : "Value", dataset: { part: "value" } });
  const row = h("div", { class: "field hdr-row", dataset: { saved: saved ? name : "", field: "outgoing_headers." + (saved ? name : "") } },
    nameInput, valueInput,
    h("button", { class: "btn btn-ghost btn-sm", type: "button", "aria-label": "Remove this header", onclick: () => {
      if (saved) { row.classList.add("hidden"); row.dataset.removed = "1"; } else row.remove();
    } }, "✕"),
    h("span", { class: "error hidden" }));
  if (!saved) nameInput.addEventListener("input", () => { row.dataset.field = "outgoing_headers." + nameInput.value.trim(); });
  rows.append(row);
}

export function outgoingFields(c) {
  c = c || {};
  const rows = h("div", { class: "hdr-rows", dataset: { test: "outgoing-headers" } });
  for (const name of Object.keys(c.outgoing_headers || {})) headerRow(rows, name);
  const add = h("button", { class: "btn btn-sm", type: "button", dataset: { test: "add-header" }, onclick: () => headerRow(rows) }, "+ Add header");
  return [
    h("div", { class: "field wide", dataset: { field: "outgoing_headers" } },
      h("label", {}, "Outgoing headers"),
      h("span", { class: "hint" }, "Added to every request to your endpoint, e.g. an Authorization your gateway needs. Values are write-only: HAPP never shows them again."),
      rows, h("div", {}, add), h("span", { class: "error hidden" })),
    toggleField("typing_events", "Send typing events", c.typing_events,
      "a best-effort {\"event\": \"typing\"} before each AI answer, never after it"),
    field("outgoing_rate_per_second", "Outgoing pace (requests/s)",
      h("input", { type: "number", min: 0, max: 10000, value: c.outgoing_rate_per_second || 0 }),
      "at most this many requests per second to your endpoint, all replicas together; 0: no cap"),
    field("outgoing_max_concurrency", "Outgoing requests at once",
      h("input", { type: "number", min: 0, max: 1000, value: c.outgoing_max_concurrency || 0 }),
      "at most this many in flight to your endpoint; 0: the service's default (32)"),
  ];
}

/* What the form changes: a new or replaced value per header, null for a removed one.
 * creating: only the new headers. */
export function readOutgoing(form, creating) {
  const headers = {};
  for (const row of form.querySelectorAll(".hdr-row")) {
    const saved = row.dataset.saved;
    const name = row.querySelector("[data-part=name]").value.trim();
    const value = row.querySelector("[data-part=value]").value;
    if (saved && row.dataset.removed) headers[saved] = null;
    else if (name && (value !== "" || !saved)) headers[name] = value;
  }
  const out = {
    typing_events: form.elements.typing_events.checked,
    outgoing_rate_per_second: Number(form.elements.outgoing_rate_per_second.value),
    outgoing_max_concurrency: Number(form.elements.outgoing_max_concurrency.value),
  };
  if (!creating || Object.keys(headers).length) out.outgoing_headers = headers;
  return out;
}
