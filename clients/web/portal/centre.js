// The consent centre's plain words and dialogs: plurals, durations and dates in the reader's language, a
// confirmation dialog, and a receipt viewer that checks the receipt's Ed25519 signature in the browser.
import { api, saveFile } from "/static/api.js";
import { currentLang, fmtNumber, t } from "/static/i18n.js";
import { h } from "/static/ui.js";

// "1 permission on" / "3 permissions on": keys `${key}.one` and `${key}.other` (Chinese has only "other").
export function plural(key, n, vars = {}) {
  const rule = new Intl.PluralRules(currentLang()).select(n);
  const wanted = `${key}.${rule}`;
  const text = t(wanted, { n: fmtNumber(n), ...vars });
  return text === wanted ? t(`${key}.other`, { n: fmtNumber(n), ...vars }) : text;
}

function unit(name, n) {
  return new Intl.NumberFormat(currentLang(), { style: "unit", unit: name, unitDisplay: "long" }).format(n);
}

// A retention period in the largest unit that says it exactly ("10 years", "6 months", "45 days").
export function duration(days) {
  if (days >= 365 && days % 365 === 0) return unit("year", days / 365);
  if (days >= 30 && days % 30 === 0) return unit("month", days / 30);
  if (days >= 60) return t("portal.words.about", { span: unit("month", Math.round(days / 30.44)) });
  return unit("day", days);
}

export function fmtDate(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleDateString(currentLang(), { dateStyle: "medium" });
}

export function fmtDateTime(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString(currentLang(), { dateStyle: "medium", timeStyle: "short" });
}

// --- dialogs (native <dialog>: modal, focus kept inside, Escape cancels) ---------------------------------
function dialogBox() {
  let box = document.getElementById("dialog");
  if (!box) {
    box = h("dialog", { id: "dialog", "aria-labelledby": "dialog-title" });
    document.body.append(box);
  }
  return box;
}

function openDialog(title, body, buttons) {
  const box = dialogBox();
  box.replaceChildren(h("h2", { id: "dialog-title" }, title), h("div", { class: "dialog-body" }, body), h("div", { class: "dialog-actions" }, buttons));
  const opener = document.activeElement;
  box.addEventListener("close", () => { if (opener && opener.isConnected) opener.focus(); }, { once: true });
  box.showModal();
  return box;
}

// Ask before acting; resolves true only when the person presses the confirm button.
export function confirmDialog({ title, body, confirm, danger = false }) {
  return new Promise((resolve) => {
    const yes = h("button", { type: "button", class: danger ? "danger" : "" }, confirm);
    const no = h("button", { type: "button", class: "secondary" }, t("portal.dialog.cancel"));
    const box = openDialog(title, body, [no, " ", yes]);
    let answer = false;
    yes.addEventListener("click", () => { answer = true; box.close(); });
    no.addEventListener("click", () => box.close());
    box.addEventListener("close", () => resolve(answer), { once: true });
    no.focus();  // the safe choice has the focus
  });
}

export function infoDialog(title, body) {
  const close = h("button", { type: "button" }, t("portal.dialog.close"));
  const box = openDialog(title, body, [close]);
  close.addEventListener("click", () => box.close());
  close.focus();
  return box;
}

// --- receipts -------------------------------------------------------------------------------------------
// The receipt's signature covers its canonical JSON without the signature member: keys sorted, no spaces.
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

// true / false, or null when this browser cannot check Ed25519 signatures.
export async function verifyReceipt(doc, keys) {
  const sig = doc.signature || {};
  const key = keys[sig.kid];
  if (sig.alg !== "Ed25519" || !key) return false;
  const { signature, ...body } = doc;
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  let pub;
  try {
    pub = await crypto.subtle.importKey("raw", bytes(key), { name: "Ed25519" }, false, ["verify"]);
  } catch {
    return null;
  }
  try {
    return await crypto.subtle.verify({ name: "Ed25519" }, pub, bytes(sig.value), new TextEncoder().encode(canonical(body)));
  } catch {
    return false;
  }
}

const STATES = { "dpv:ConsentGiven": "given", "dpv:ConsentWithdrawn": "withdrawn", "dpv:ConsentExpired": "expired" };

// Show one receipt: what it records in words, whether its signature checks out, and a download.
export async function showReceipt(receiptId, names) {
  const [text, keys] = await Promise.all([api(`/v1/me/receipts/${encodeURIComponent(receiptId)}`), api("/v1/keys/receipts")]);
  const raw = typeof text === "string" ? text : JSON.stringify(text);
  const doc = typeof text === "string" ? JSON.parse(text) : text;
  const ok = await verifyReceipt(doc, keys || {});
  const info = (doc.pii_information || [])[0] || {};
  const recipient = (doc.recipient_third_parties || [])[0] || {};
  const purpose = (doc.purposes || [])[0] || {};
  const state = STATES[doc.state] || "given";
  const verdict = ok === true ? h("p", { class: "ok", role: "status", id: "receipt-verdict" }, t("portal.receipt.valid", { kid: doc.signature.kid }))
    : ok === false ? h("p", { class: "error", role: "alert", id: "receipt-verdict" }, t("portal.receipt.invalid"))
    : h("p", { class: "muted", id: "receipt-verdict" }, t("portal.receipt.unchecked"));
  const download = h("button", { type: "button", class: "secondary" }, t("portal.receipt.download"));
  download.addEventListener("click", () => saveFile(`receipt-${receiptId}.json`, raw));
  const facts = h("dl", { class: "facts" },
    h("dt", {}, t("portal.receipt.what")), h("dd", {}, t(`portal.receipt.state.${state}`)),
    h("dt", {}, t("portal.receipt.data")), h("dd", {}, info.field ? names.field(info.field) : names.dimension(info.dimension || "")),
    h("dt", {}, t("portal.receipt.purpose")), h("dd", {}, names.purpose(purpose.purpose || "")),
    h("dt", {}, t("portal.receipt.recipient")), h("dd", {}, recipient.partner ? names.partner(recipient.partner) : names.category(recipient.partner_category || "")),
    h("dt", {}, t("portal.receipt.issued")), h("dd", {}, fmtDateTime(doc.issued_at)),
    h("dt", {}, t("portal.receipt.id")), h("dd", { class: "mono" }, receiptId));
  const body = [verdict, facts, h("p", {}, download), h("details", {}, h("summary", {}, t("portal.receipt.raw")), h("pre", {}, JSON.stringify(doc, null, 2)))];
  infoDialog(t("portal.receipt.title"), body);
}
