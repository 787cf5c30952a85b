/* DOM helpers. Every piece of data goes into the page with textContent (h()),
 * never as HTML, so nothing a webhook caller sends can run here. */

const app = document.getElementById("app");
export const dialog = document.getElementById("dialog");

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
export function mount(...children) { clear(app).append(...children); }

export function toast(message, kind) {
  const el = h("div", { class: "toast" + (kind === "bad" ? " bad" : "") }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), 4200);
}

export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain-HTTP admin on a LAN address: no async clipboard there.
  const area = h("textarea", { class: "offscreen", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

export function copyButton(getText, label) {
  const button = h("button", { class: "btn btn-sm", type: "button", dataset: { test: "copy" } }, label || "Copy");
  button.addEventListener("click", async () => {
    try {
      await copyText(getText());
      button.textContent = "Copied ✓";
    } catch (_) {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = label || "Copy"; }, 1600);
  });
  return button;
}

export function openDialog(title, content, actions) {
  clear(dialog).append(h("form", { method: "dialog" },
    h("div", { class: "dialog-body" }, h("h2", {}, title), content),
    h("div", { class: "dialog-actions" }, actions)));
  dialog.showModal();
}
