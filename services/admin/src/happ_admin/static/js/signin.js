/* Sign in with a username and password (operators and admins), or with an
 * admin token; either is exchanged for an HttpOnly session cookie. */
import { api } from "./api.js";
import { clear, dialog, h } from "./dom.js";
import { leave, state } from "./state.js";

const app = document.getElementById("app");

export function showSignIn(message, onSignedIn, useToken) {
  leave();
  if (dialog.open) dialog.close();
  let tokenMode = !!useToken;
  const username = h("input", {
    type: "text", id: "username", name: "username", autocomplete: "username", spellcheck: "false",
    placeholder: "Username", dataset: { test: "username" },
  });
  const password = h("input", {
    type: "password", id: "password", name: "password", autocomplete: "current-password",
    placeholder: "Password", dataset: { test: "password" },
  });
  const token = h("input", {
    type: "password", id: "token", name: "token", autocomplete: "off", spellcheck: "false",
    placeholder: "Admin token", dataset: { test: "token" },
  });
  const userFields = h("div", { class: "signin-fields" },
    h("div", { class: "field" }, h("label", { for: "username" }, "Username"), username),
    h("div", { class: "field" }, h("label", { for: "password" }, "Password"), password));
  const tokenFields = h("div", { class: "signin-fields" },
    h("div", { class: "field" }, h("label", { for: "token" }, "Admin token"), token,
      h("span", { class: "hint" }, "A token from HAPP_ADMIN_TOKEN (make run prints it).")));
  const toggle = h("button", { class: "link-btn", type: "button", dataset: { test: "use-token" } });
  const error = h("div", { class: "form-error" + (message ? "" : " hidden"), role: "alert" }, message || "");
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, "Sign in");
  const form = h("form", { novalidate: true }, userFields, tokenFields, submit, h("div", { class: "signin-alt" }, toggle), error);

  function show() {
    userFields.classList.toggle("hidden", tokenMode);
    tokenFields.classList.toggle("hidden", !tokenMode);
    toggle.textContent = tokenMode ? "Sign in with a username and password" : "Sign in with an admin token";
    (tokenMode ? token : username).focus();
  }
  toggle.addEventListener("click", () => { tokenMode = !tokenMode; error.classList.add("hidden"); show(); });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.classList.add("hidden");
    submit.disabled = true;
    try {
      const body = tokenMode ? { token: token.value } : { username: username.value.trim(), password: password.value };
      const session = await api("POST", "/api/session", body);
      state.csrf = session.csrf_token;
      token.value = "";
      password.value = "";
      if (!location.hash || location.hash === "#/signin") location.hash = "#/";
      await onSignedIn(session);
    } catch (err) {
      if (err.status === 401) error.textContent = tokenMode ? "That token is not valid." : "Wrong username or password.";
      else if (err.status === 422 && !tokenMode) error.textContent = "Enter your username and password.";
      else error.textContent = err.message;
      error.classList.remove("hidden");
      (tokenMode ? token : password).select();
    } finally {
      submit.disabled = false;
    }
  });
  clear(app).append(h("div", { class: "signin" },
    h("div", { class: "card" },
      h("div", { class: "logo" }, h("span", { class: "logo-mark" }, "H"), "HAPP"),
      h("h1", {}, "Sign in"),
      h("p", { class: "lead" }, "Custom Messenger: channels, the operators' inbox, request log and conversations."),
      form)));
  show();
}
