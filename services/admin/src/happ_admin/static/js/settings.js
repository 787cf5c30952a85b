/* The channel's Settings tab: channel, assistant, and who answers & filters.
 * Operators see the settings but cannot change them (the API answers 403 ADMIN_ONLY). */
import { api, enc } from "./api.js";
import { clear, h, toast } from "./dom.js";
import { assistantFields, channelForm, deliveryField, field, linkDeliveryToUrl, outgoingFields, readChannel, rulesSection, showFieldErrors, toggleField } from "./forms.js";
import { isAdmin } from "./state.js";

export function settingsTab(ctx, body) {
  const c = ctx.channel;
  const error = h("div", { class: "form-error hidden", role: "alert" });
  const save = h("button", { class: "btn btn-primary", type: "submit", dataset: { test: "save" } }, "Save changes");
  const form = channelForm(
    "Changes reach every HAPP service within a second.",
    [
      field("name", "Name", h("input", { type: "text", value: c.name, maxlength: 200 }), null, true),
      field("outgoing_url", "Outgoing endpoint", h("input", { type: "url", value: c.outgoing_url }),
        "HTTPS only; private and loopback addresses are refused unless the deployment allows them.", true),
      deliveryField(c.delivery),
      field("rate_limit_per_second", "Rate limit (messages/s)", h("input", { type: "number", min: 1, max: 100000, value: c.rate_limit_per_second }),
        "Above it the webhook answers 429 with Retry-After."),
      toggleField("require_signature", "Require X-HAPP-Signature on incoming requests", c.require_signature, "unsigned webhook calls get 401"),
      ...outgoingFields(c),
    ],
    "The AI that answers this channel's users.",
    assistantFields(c.assistant),
    error,
    isAdmin() ? [h("button", { class: "btn", type: "reset" }, "Discard"), save]
      : h("p", { class: "small muted", dataset: { test: "read-only" } }, "Only an admin can change a channel's settings."),
    rulesSection(c));
  // Discard: the form as saved, working-hours rows included.
  linkDeliveryToUrl(form);
  form.addEventListener("reset", (event) => { event.preventDefault(); settingsTab(ctx, clear(body)); });
  if (!isAdmin()) form.querySelectorAll("input, textarea, select, button").forEach((el) => { el.disabled = true; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    save.disabled = true;
    try {
      ctx.channel = await api("PATCH", "/api/channels/" + enc(c.id), readChannel(form, false));
      showFieldErrors(form, { details: [], message: "" });
      error.classList.add("hidden");
      ctx.refreshHead();
      // Saved headers show masked again, removed ones go.
      settingsTab(ctx, clear(body));
      toast("Settings saved.");
    } catch (err) {
      showFieldErrors(form, err);
    } finally {
      save.disabled = false;
    }
  });
  body.append(form);
}
