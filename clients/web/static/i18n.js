// A tiny dictionary-based i18n: one JSON file per language; catalog texts come from the API's i18n dicts.
const LANGS = ["en", "zh-CN"];
const KEY = "dataspace.lang";  // only the language preference is kept across visits
let dict = {};
let fallback = {};
let lang = "en";

export function currentLang() {
  return lang;
}

function guess() {
  const saved = localStorage.getItem(KEY);
  if (LANGS.includes(saved)) return saved;
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

async function load(code) {
  const response = await fetch(`/static/i18n/${code}.json`);
  return response.ok ? response.json() : {};
}

export async function setLang(code) {
  lang = LANGS.includes(code) ? code : "en";
  localStorage.setItem(KEY, lang);
  if (!Object.keys(fallback).length) fallback = await load("en");
  dict = lang === "en" ? fallback : await load(lang);
  document.documentElement.lang = lang;
  applyI18n(document);
}

export async function initI18n() {
  await setLang(guess());
  const select = document.getElementById("lang");
  if (select) {
    select.value = lang;
    select.addEventListener("change", async () => {
      await setLang(select.value);
      select.dispatchEvent(new CustomEvent("langchange", { bubbles: true }));
    });
  }
}

export function t(key, vars = {}) {
  const text = dict[key] ?? fallback[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

// A catalog object's text in the current language: obj.i18n[lang][name], else obj[name].
export function pick(obj, name) {
  if (!obj) return "";
  const local = obj.i18n && obj.i18n[lang];
  return (local && local[name]) || obj[name] || "";
}

export function applyI18n(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
  const title = document.querySelector("title[data-i18n]");
  if (title) document.title = t(title.dataset.i18n);
}

export function fmtTime(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString(lang);
}

export function fmtNumber(n) {
  return Number(n).toLocaleString(lang);
}
