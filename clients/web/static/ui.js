// DOM helpers shared by the pages: element builder, tabs, inline errors, live announcements.
import { ApiError, SignedOut } from "./api.js";
import { t } from "./i18n.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function announce(message) {
  const live = document.getElementById("live");
  if (live) {
    live.textContent = "";
    setTimeout(() => { live.textContent = message; }, 30);
  }
}

// A user-facing sentence for any error: never a stack trace.
export function describeError(err) {
  if (err instanceof SignedOut) return t("error.signedOut");
  if (err instanceof ApiError) {
    if (err.status === 0) return t("error.network");
    if (err.status === 403) return t("error.forbidden");
    if (err.status === 404) return t("error.notFound");
    if (err.status >= 500) return t("error.server");
    return err.message || t("error.generic");
  }
  return t("error.generic");
}

export function showError(container, err) {
  if (!container) return;
  container.replaceChildren(h("p", { class: "error", role: "alert" }, describeError(err)));
}

export function clear(container) {
  if (container) container.replaceChildren();
}

// Mark one input invalid with an inline message (aria-describedby), or clear it.
export function fieldError(input, message) {
  const id = input.id + "-error";
  let note = document.getElementById(id);
  if (!message) {
    input.removeAttribute("aria-invalid");
    if (note) note.remove();
    return;
  }
  if (!note) {
    note = h("span", { id, class: "field-error", role: "alert" });
    input.insertAdjacentElement("afterend", note);
  }
  note.textContent = message;
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", id);
}

// Accessible tabs: buttons with role=tab controlling sections; arrow keys move between tabs.
export function setupTabs(tablist, onShow) {
  const tabs = [...tablist.querySelectorAll("[role=tab]")];
  const show = (tab, focus = false) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) tab.focus();
    onShow(tab.dataset.tab);
  };
  tablist.addEventListener("click", (e) => {
    const tab = e.target.closest("[role=tab]");
    if (tab) show(tab);
  });
  tablist.addEventListener("keydown", (e) => {
    const i = tabs.indexOf(document.activeElement);
    if (i < 0) return;
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[e.key];
    if (step) {
      e.preventDefault();
      show(tabs[(i + step + tabs.length) % tabs.length], true);
    } else if (e.key === "Home") {
      e.preventDefault();
      show(tabs[0], true);
    } else if (e.key === "End") {
      e.preventDefault();
      show(tabs[tabs.length - 1], true);
    }
  });
  return (name) => show(tabs.find((tb) => tb.dataset.tab === name) || tabs[0]);
}

// Never let an error escape as an uncaught exception with a stack trace in the page.
export function guard(container, fn) {
  return async (...args) => {
    try {
      return await fn(...args);
    } catch (err) {
      showError(typeof container === "function" ? container() : container, err);
      if (err instanceof SignedOut) document.dispatchEvent(new CustomEvent("signedout"));
      return undefined;
    }
  };
}
