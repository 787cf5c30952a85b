/* The channels list and the New channel page. */
import { api, enc, qs } from "./api.js";
import { h, mount, toast } from "./dom.js";
import { ago, absolute, badge, initials } from "./format.js";
import { topbar } from "./frame.js";
import { assistantFields, channelForm, deliveryField, field, linkDeliveryToUrl, modeLabel, outgoingFields, readChannel, rulesSection, showFieldErrors, toggleField } from "./forms.js";
import { isAdmin, state } from "./state.js";

export async function channelsPage(token) {
  const items = [];
  let cursor = null;
  do {
    const page = await api("GET", "/api/channels" + qs({ limit: 200, cursor }));
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  if (token !== state.routeToken) return;
  items.sort((a, b) => b.created_at.localeCompare(a.created_at));
  const head = h("div", { class: "page-head" },
    h("div", {}, h("h1", {}, "Custom Messenger"),
      h("p", {}, "Connect your own messenger via webhooks. Each channel has its own webhook URL, HMAC secret and assistant.")),
    isAdmin() ? h("a", { class: "btn btn-primary", href: "#/new", dataset: { test: "new-channel" } }, "+ New channel") : null);
  let body;
  if (!items.length) {
    body = h("div", { class: "card empty" },
      h("h2", {}, "No channels yet"),
      isAdmin()
        ? [h("p", {}, "Create a channel, point your platform at its webhook URL and give HAPP your HTTPS endpoint."),
          h("a", { class: "btn btn-primary", href: "#/new" }, "Create your first channel")]
        : h("p", {}, "You are not a member of any channel yet: ask an admin to add you."));
  } else {
    const rows = items.map((c) => h("tr", { dataset: { channel: c.id }, onclick: () => { location.hash = "#/channels/" + enc(c.id); } },
      h("td", {}, h("div", { class: "channel-cell" }, h("span", { class: "avatar" }, initials(c.name)),
        h("div", {}, h("a", { href: "#/channels/" + enc(c.id), class: "name" }, c.name),
          c.mode && c.mode !== "assistant" ? h("span", { class: "tag mode", dataset: { test: "mode" } }, modeLabel(c.mode)) : null,
          h("div", { class: "mono muted" }, c.id)))),
      h("td", {}, badge(c.status), c.deliveries_disabled ? [" ", badge("deliveries_off")] : null),
      h("td", { class: "mono small" }, h("div", { class: "ellipsis", title: c.outgoing_url }, c.outgoing_url)),
      h("td", { class: "small" }, c.require_signature ? "Required" : "Optional"),
      h("td", { class: "small muted", title: absolute(c.created_at) }, ago(c.created_at))));
    body = h("div", { class: "card" }, h("table", { class: "table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Channel"), h("th", {}, "Status"), h("th", {}, "Outgoing endpoint"),
        h("th", {}, "Incoming signature"), h("th", {}, "Created"))),
      h("tbody", {}, rows)));
  }
  mount(topbar([]), h("main", { class: "page" }, head, body));
}

export function newChannelPage() {
  const error = h("div", { class: "form-error hidden", role: "alert" });
  const submit = h("button", { class: "btn btn-primary", type: "submit", dataset: { test: "create" } }, "Create channel");
  const form = channelForm(
    "HAPP gives the channel a webhook URL and an HMAC secret; replies go to your HTTPS endpoint.",
    [
      field("name", "Name", h("input", { type: "text", placeholder: "My Website", required: true, maxlength: 200 }), null, true),
      field("outgoing_url", "Outgoing endpoint", h("input", { type: "url", placeholder: "https://api.example.com/happ", required: true }),
        "HTTPS only. HAPP POSTs each AI reply here, signed with HMAC-SHA256.", true),
      deliveryField("endpoint"),
      field("rate_limit_per_second", "Rate limit (messages/s)", h("input", { type: "number", min: 1, max: 100000, value: 100 }),
        "Above it the webhook answers 429."),
      toggleField("require_signature", "Require X-HAPP-Signature on incoming requests", false, "unsigned webhook calls get 401"),
      ...outgoingFields({}),
    ],
    "You can change all of this later in Settings.",
    assistantFields({ fallback_text: "Sorry, I can't answer right now. Please try again in a few minutes.", system_prompt: "You are a helpful, concise assistant answering users of this platform." }),
    error,
    [h("a", { class: "btn", href: "#/" }, "Cancel"), submit],
    rulesSection({}));
  linkDeliveryToUrl(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const channel = await api("POST", "/api/channels", readChannel(form, true));
      toast("Channel created. Send a test to check your endpoint.");
      location.hash = "#/channels/" + enc(channel.id) + "/webhook";
    } catch (err) {
      showFieldErrors(form, err);
    } finally {
      submit.disabled = false;
    }
  });
  mount(topbar(["New channel"]), h("main", { class: "page" },
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "New channel"),
      h("p", {}, "Connect any platform — website, mobile app, CRM — with two endpoints."))),
    form));
  form.elements.name.focus();
}
