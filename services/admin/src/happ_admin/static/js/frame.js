/* The frame around every screen: the top bar (breadcrumbs, the main nav with the
 * inbox count, who is signed in) and the error card. */
import { h } from "./dom.js";
import { state } from "./state.js";
import { attention, onInboxChange } from "./live.js";

let signOutHandler = () => {};
export function onSignOut(fn) { signOutHandler = fn; }

// One counter element, moved into each new top bar and kept current by the live updates.
const inboxCount = h("span", { class: "count hidden", dataset: { test: "inbox-count" } });
onInboxChange(() => {
  const { waiting, unread, total } = attention();
  inboxCount.textContent = String(total);
  inboxCount.title = waiting + " waiting for a person · " + unread + " unread in yours";
  inboxCount.classList.toggle("hidden", total === 0);
});

function navLink(href, label, active, extra) {
  return h("a", { class: "nav-link" + (active ? " active" : ""), href, dataset: { nav: label.toLowerCase() } }, label, extra || null);
}

/* crumbs: the trail after "Custom Messenger"; section: which nav link is lit. */
export function topbar(crumbs, section) {
  section = section || "channels";
  const trail = [h("a", { href: "#/" }, "Integrations"), h("span", { class: "sep" }, "/")];
  if (!crumbs.length) trail.push(h("span", { class: "here" }, "Custom Messenger"));
  else trail.push(h("a", { href: "#/" }, "Custom Messenger"));
  crumbs.forEach((c, i) => {
    trail.push(h("span", { class: "sep" }, "/"));
    trail.push(h("span", { class: i === crumbs.length - 1 ? "here" : "" }, c));
  });
  const user = state.user;
  return h("header", { class: "topbar" },
    h("a", { class: "logo", href: "#/" }, h("span", { class: "logo-mark" }, "H"), "HAPP"),
    h("nav", { class: "mainnav", "aria-label": "Main" },
      navLink("#/", "Channels", section === "channels"),
      navLink("#/inbox", "Inbox", section === "inbox", inboxCount)),
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, trail),
    h("div", { class: "spacer" }),
    h("a", { class: "btn btn-ghost btn-sm", href: "/docs", target: "_blank", rel: "noopener" }, "API docs"),
    user ? h("span", { class: "who", dataset: { test: "who" }, title: user.role === "admin" ? "Admin" : "Operator" },
      h("span", { class: "who-name" }, user.name), h("span", { class: "role " + user.role }, user.role)) : null,
    h("button", { class: "btn btn-sm", type: "button", dataset: { test: "sign-out" }, onclick: () => signOutHandler() }, "Sign out"),
  );
}

export function errorCard(err) {
  return h("div", { class: "card card-pad" },
    h("h2", {}, err.status === 404 ? "Not found" : err.code === "ADMIN_ONLY" || err.code === "NOT_A_MEMBER" ? "Not allowed" : "Something went wrong"),
    h("p", { class: "muted" }, err.message),
    h("p", { class: "small muted" }, err.code || ""),
    h("div", { class: "btn-row" }, h("a", { class: "btn", href: "#/" }, "Back to channels")));
}
