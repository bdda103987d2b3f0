// The customer portal ("My data"): data manual with consent switches, history and receipts, usage ledger
// with proofs, points and rewards, data export and erasure.
import { api, ApiError, apiResponse, saveFile, StepUpRequired } from "/static/api.js";
import { completeSignIn, currentSession, signIn, signOut, takeResume } from "/static/auth.js";
import { currentLang, fmtNumber, fmtTime, initI18n, pick, t } from "/static/i18n.js";
import { confirmDialog, duration, fmtDate, fmtDateTime, plural, showReceipt } from "/portal/centre.js";
import { bytesToHex, checkAgainstMemory, hexToBytes, parseCheckpoint, verifyInclusion, verifyNote } from "/static/merkle.js";
import { clear, describeError, fieldError, guard, h, setupTabs, showError } from "/static/ui.js";

const CLIENT_ID = "portal";
// Everything the portal does; redeem and erase also need a recent sign-in (the server answers 401 with
// max_age otherwise, and the portal signs in again and then retries the action).
const SCOPE = "catalog consents usage points redeem erase";
const stepUp = (err, resume) => signIn(CLIENT_ID, SCOPE, { prompt: "login", maxAge: err.maxAge, resume });
const $ = (id) => document.getElementById(id);
const state = { matrix: null, manual: null, offers: null, linkage: null, points: null, tab: "manual", view: "field" };

// --- names in the reader's language ---------------------------------------------------------------------
const names = {
  field: (k) => { const f = (state.matrix?.fields || []).find((x) => x.key === k); return f ? pick(f, "label") : k; },
  purpose: (k) => { const p = (state.matrix?.purposes || []).find((x) => x.key === k); return p ? pick(p, "label") : k; },
  partner: (k) => { const p = (state.matrix?.partners || []).find((x) => x.key === k); return p ? pick(p, "name") : k; },
  dimension: (k) => {
    if (k === "linkage") return t("portal.linkage.dimension");
    const d = (state.manual || []).find((x) => x.key === k);
    return d ? pick(d, "label") : k;
  },
  category: (k) => { const text = t(`portal.category.${k}`); return text === `portal.category.${k}` ? k : text; },
};

// --- data manual and switches ---------------------------------------------------------------------------
function cellFor(field, purpose, partner) {
  return state.matrix.cells.find((c) => c.field === field && c.purpose === purpose && c.partner === partner);
}

function endDateValue(input) {
  // Returns [isoString|null, errorMessage|null]; the date means "until the end of that day".
  const v = input ? input.value.trim() : "";
  if (!v) return [null, null];
  const end = new Date(v + "T23:59:59");
  if (Number.isNaN(end.getTime())) return [null, t("portal.manual.badDate")];
  if (end.getTime() <= Date.now()) return [null, t("portal.manual.pastDate")];
  return [end.toISOString(), null];
}

// The offers that exist for one field (a partner's contract reads it for a purpose), plus any permission the
// customer still has on for a pair nobody offers any more (so it can be switched off).
function offersFor(fieldKey) {
  const out = (state.offers || []).filter((o) => o.fields.includes(fieldKey)).map((o) => ({ ...o, field: fieldKey }));
  for (const c of state.matrix.cells) {
    if (c.field === fieldKey && c.permitted && !out.some((o) => o.partner === c.partner && o.purpose === c.purpose)) {
      out.push({ partner: c.partner, purpose: c.purpose, field: fieldKey, fields: [fieldKey], titles: [], approved: false, orphan: true });
    }
  }
  return out;
}

function allPairs() {
  // Every (field, offer) pair shown somewhere: the offers' fields and the orphan permissions.
  return state.matrix.fields.flatMap((f) => offersFor(f.key));
}

function fieldOf(key) {
  return state.matrix.fields.find((f) => f.key === key);
}

function closeConfirmation() {
  const box = $("confirmation");
  box.hidden = true;
  box.replaceChildren();
}

// The visible outcome of a change: what now holds, in words, and each signed receipt (view, check, download).
function confirmChange(message, receipts) {
  const box = $("confirmation");
  const close = h("button", { type: "button", class: "secondary", "aria-label": t("portal.confirm.closeLabel") }, t("portal.dialog.close"));
  close.addEventListener("click", closeConfirmation);
  const list = receipts.length ? h("ul", {}, receipts.map((r) => {
    const view = h("button", { type: "button", class: "secondary", dataset: { receipt: r.id } }, t("portal.confirm.viewReceipt"));
    view.addEventListener("click", guard(() => $("manual-status"), () => showReceipt(r.id, names)));
    return h("li", {}, r.label ? `${r.label}: ` : "", t("portal.confirm.receipt", { id: r.id.slice(0, 8) }), " ", view);
  })) : null;
  box.className = "confirmation ok";
  box.replaceChildren(h("p", { id: "confirmation-text" }, h("strong", {}, message)), list, h("div", { class: "actions" }, close));
  box.hidden = false;
}

function describePair(field, purpose, partner) {
  return { field: names.field(field), purpose: names.purpose(purpose), partner: names.partner(partner) };
}

async function toggle(sw, field, purpose, partner, untilInput) {
  const status = $("manual-status");
  clear(status);
  sw.disabled = true;
  let outcome = null;
  try {
    if (sw.checked) {
      const [until, problem] = endDateValue(untilInput);
      if (untilInput) fieldError(untilInput, problem);
      if (problem) {
        sw.checked = false;
        sw.setAttribute("aria-checked", "false");
        untilInput.focus();
        return;
      }
      const body = { field, purpose, partner };
      if (until) body.valid_until = until;
      const change = await api("/v1/me/consents", { method: "POST", body });
      const words = describePair(field, purpose, partner);
      const message = until ? t("portal.confirm.grantedUntil", { ...words, until: fmtDate(until) }) : t("portal.confirm.granted", words);
      outcome = [message, [{ id: change.receipt_id }]];
    } else {
      const cell = cellFor(field, purpose, partner);
      const receipts = [];
      for (const id of cell ? cell.grant_ids : []) {
        const change = await api(`/v1/me/consents/${id}`, { method: "DELETE" });
        receipts.push({ id: change.receipt_id });
      }
      outcome = [t("portal.confirm.withdrawn", describePair(field, purpose, partner)), receipts];
    }
    try {
      await loadMatrix();
      renderManual();
    } catch (err) {
      showError(status, err);  // the change is done all the same: still show it and its receipt
    }
    confirmChange(...outcome);  // shown once the screen shows the new state
    const again = document.getElementById(sw.id);
    if (again) again.focus();
  } catch (err) {
    sw.checked = !sw.checked;
    sw.setAttribute("aria-checked", String(sw.checked));
    if (err instanceof ApiError && err.status === 422 && untilInput) {
      fieldError(untilInput, err.message);
    } else {
      showError(status, err);
    }
  } finally {
    sw.disabled = false;
  }
}

// The catalog's promise in plain words ("shared only as one of at most 4 bands"), as the server generates it
// from the same declaration that contract checks and the emission enforce.
function sharedAs(field) {
  for (const dim of state.manual || []) {
    const entry = (dim.fields || []).find((f) => f.key === field.key);
    if (entry && entry.shared_as) return entry.shared_as[currentLang()] || entry.shared_as.en || "";
  }
  return "";
}

// What the customer gets for one offer: the service it improves and the points.
function gets(offer) {
  const purpose = (state.matrix.purposes || []).find((p) => p.key === offer.purpose);
  const service = purpose ? pick(purpose, "description") : "";
  const titles = (offer.titles || []).length ? t("portal.offers.titled", { titles: offer.titles.join(", ") }) : "";
  return h("p", { class: "gets" }, h("strong", {}, t("portal.offers.youGet")), " ", [service, titles].filter(Boolean).join(" "));
}

function earnText(field) {
  return field.points_value > 0
    ? plural("portal.offers.earn", field.points_value)
    : t("portal.offers.earnUsage");
}

function offerSwitch(fieldKey, offer, labelText, untilInput) {
  const cell = cellFor(fieldKey, offer.purpose, offer.partner);
  const id = `sw-${fieldKey}-${offer.purpose}-${offer.partner}`;
  const sw = h("input", { type: "checkbox", role: "switch", id, dataset: { field: fieldKey, purpose: offer.purpose, partner: offer.partner } });
  sw.checked = Boolean(cell && cell.permitted);
  sw.setAttribute("aria-checked", String(sw.checked));
  sw.addEventListener("change", () => {
    sw.setAttribute("aria-checked", String(sw.checked));
    toggle(sw, fieldKey, offer.purpose, offer.partner, untilInput);
  });
  const field = fieldOf(fieldKey);
  const notes = [];
  if (offer.orphan) notes.push(t("portal.offers.orphan"));
  else if (!offer.approved) notes.push(t("portal.offers.proposed"));
  if (cell && cell.permitted) {
    const grant = (state.matrix.grants || []).find((g) => cell.grant_ids.includes(g.id) && g.valid_until);
    if (grant) notes.push(t("portal.offers.until", { date: fmtDate(grant.valid_until) }));
  }
  return h("div", { class: "switch-row" }, sw,
    h("label", { for: id }, labelText),
    field ? h("span", { class: "badge earn" }, earnText(field)) : null,
    notes.length ? h("span", { class: "note muted" }, notes.join(" ")) : null);
}

function untilPicker(id) {
  const input = h("input", { type: "date", id, name: id });
  return [input, h("div", { class: "until" }, h("label", { for: id }, t("portal.manual.until")), input)];
}

function fieldCard(field) {
  const [until, untilRow] = untilPicker(`until-${field.key}`);
  const offers = offersFor(field.key);
  const on = offers.filter((o) => (cellFor(field.key, o.purpose, o.partner) || {}).permitted).length;
  const byPartner = new Map();
  for (const o of offers) {
    if (!byPartner.has(o.partner)) byPartner.set(o.partner, []);
    byPartner.get(o.partner).push(o);
  }
  const switches = offers.length
    ? h("div", { class: "switches", role: "group", "aria-label": t("portal.manual.switchesFor", { field: pick(field, "label") }) },
        [...byPartner.entries()].map(([partner, list]) => h("div", { class: "offer" },
          h("h4", {}, names.partner(partner)),
          list.flatMap((o) => [gets(o), offerSwitch(field.key, o, t("portal.offers.allowFor", { partner: names.partner(partner), purpose: names.purpose(o.purpose) }), until)]))))
    : h("p", { class: "muted nothing" }, t("portal.offers.noneForField"));
  return h("details", { class: "field", id: `field-${field.key}` },
    h("summary", {},
      h("span", { class: "label" }, pick(field, "label")),
      h("span", {},
        field.sensitivity === "sensitive" ? h("span", { class: "badge sensitive" }, t("portal.manual.sensitive")) : null, " ",
        h("span", { class: "badge" }, plural("portal.offers.points", field.points_value)), " ",
        h("span", { class: "muted" }, offers.length ? plural("portal.offers.onCount", on, { total: fmtNumber(offers.length) }) : t("portal.offers.noOffers")))),
    h("div", { class: "body" },
      h("dl", { class: "facts" },
        h("dt", {}, t("portal.manual.what")), h("dd", {}, pick(field, "description")),
        h("dt", {}, t("portal.manual.why")), h("dd", {}, pick(field, "collection_purpose")),
        h("dt", {}, t("portal.manual.where")), h("dd", {}, pick(field, "storage_location")),
        h("dt", {}, t("portal.manual.who")), h("dd", {}, pick(field, "sharing_scope")),
        h("dt", {}, t("portal.manual.how")), h("dd", { class: "promise" }, sharedAs(field)),
        h("dt", {}, t("portal.manual.retention")), h("dd", { class: "retention" }, duration(field.retention_days)),
        h("dt", {}, t("portal.manual.value")), h("dd", {}, earnText(field))),
      offers.length ? untilRow : null,
      switches));
}

function byFieldView() {
  const dims = state.manual || [];
  const byDim = new Map();
  for (const f of state.matrix.fields) {
    if (!byDim.has(f.dimension)) byDim.set(f.dimension, []);
    byDim.get(f.dimension).push(f);
  }
  const known = new Set(dims.map((d) => d.key));
  const order = [...dims, ...[...byDim.keys()].filter((k) => !known.has(k)).map((k) => ({ key: k, label: k }))];
  return order.filter((dim) => (byDim.get(dim.key) || []).length).map((dim) =>
    h("section", { class: "dimension", "aria-labelledby": `dim-${dim.key}` },
      h("h3", { id: `dim-${dim.key}` }, pick(dim, "label")),
      h("p", { class: "muted" }, pick(dim, "description")),
      byDim.get(dim.key).map(fieldCard)));
}

// Grants that make anything of this partner's permitted: the cells' grants and its own direct grants.
function grantsOfPartner(partner) {
  const ids = new Set(state.matrix.cells.filter((c) => c.partner === partner && c.permitted).flatMap((c) => c.grant_ids));
  for (const g of state.matrix.grants || []) if (g.partner === partner && g.state === "active") ids.add(g.id);
  return [...ids];
}

async function withdrawAll(partner, button) {
  const ids = grantsOfPartner(partner);
  const ok = await confirmDialog({
    title: t("portal.offers.withdrawAllTitle", { partner: names.partner(partner) }),
    body: h("p", {}, plural("portal.offers.withdrawAllBody", ids.length, { partner: names.partner(partner) })),
    confirm: t("portal.offers.withdrawAllConfirm"),
    danger: true,
  });
  if (!ok) return;
  button.disabled = true;
  const receipts = [];
  try {
    for (const id of ids) {
      const grant = (state.matrix.grants || []).find((g) => g.id === id) || {};
      const change = await api(`/v1/me/consents/${id}`, { method: "DELETE" });
      const what = grant.field ? names.field(grant.field) : names.dimension(grant.dimension || "");
      receipts.push({ id: change.receipt_id, label: `${what} · ${names.purpose(grant.purpose || "")}` });
    }
  } finally {
    confirmChange(plural("portal.offers.withdrawnAll", receipts.length, { partner: names.partner(partner) }), receipts);
    await loadMatrix();
    renderManual();
    const again = document.querySelector(`[data-withdraw-all="${CSS.escape(partner)}"]`);
    if (again) again.focus();
  }
}

function partnerView() {
  const partners = [...new Set(allPairs().map((o) => o.partner))];
  if (!partners.length) return [h("p", { class: "muted" }, t("portal.offers.noneAtAll"))];
  return partners.map((partner) => {
    const info = (state.offers || []).find((o) => o.partner === partner) || {};
    const meta = (state.matrix.partners || []).find((p) => p.key === partner) || {};
    const pairs = allPairs().filter((o) => o.partner === partner);
    const on = grantsOfPartner(partner).length;
    const all = h("button", { type: "button", class: "danger", disabled: on === 0, dataset: { withdrawAll: partner } },
      t("portal.offers.withdrawAll", { partner: names.partner(partner) }));
    all.addEventListener("click", guard(() => $("manual-status"), () => withdrawAll(partner, all)));
    const [until, untilRow] = untilPicker(`until-p-${partner}`);
    const purposes = [...new Set(pairs.map((o) => o.purpose))];
    return h("section", { class: "partner-group", "aria-labelledby": `partner-${partner}`, dataset: { partner } },
      h("div", { class: "group-head" }, h("h3", { id: `partner-${partner}` }, names.partner(partner)), all),
      h("p", { class: "muted" }, [meta.category ? names.category(meta.category) : "", pick({ description: info.partner_description || meta.description, i18n: info.partner_i18n || meta.i18n }, "description")].filter(Boolean).join(" · ")),
      h("p", {}, on ? plural("portal.offers.partnerOn", on) : t("portal.offers.partnerNone")),
      untilRow,
      purposes.map((purpose) => {
        const list = pairs.filter((o) => o.purpose === purpose);
        return h("div", { class: "offer", role: "group", "aria-label": `${names.partner(partner)} · ${names.purpose(purpose)}` },
          h("h4", {}, names.purpose(purpose)), gets(list[0]),
          list.map((o) => offerSwitch(o.field, o, names.field(o.field), until)));
      }));
  });
}

function purposeView() {
  const purposes = [...new Set(allPairs().map((o) => o.purpose))];
  if (!purposes.length) return [h("p", { class: "muted" }, t("portal.offers.noneAtAll"))];
  return purposes.map((purpose) => {
    const p = (state.matrix.purposes || []).find((x) => x.key === purpose) || {};
    const pairs = allPairs().filter((o) => o.purpose === purpose);
    const [until, untilRow] = untilPicker(`until-u-${purpose}`);
    const partners = [...new Set(pairs.map((o) => o.partner))];
    return h("section", { class: "purpose-group", "aria-labelledby": `purpose-${purpose}`, dataset: { purpose } },
      h("h3", { id: `purpose-${purpose}` }, names.purpose(purpose)),
      h("p", {}, h("strong", {}, t("portal.offers.improves")), " ", pick(p, "description")),
      untilRow,
      partners.map((partner) => {
        const list = pairs.filter((o) => o.partner === partner);
        const titles = list[0].titles || [];
        return h("div", { class: "offer", role: "group", "aria-label": `${names.partner(partner)} · ${names.purpose(purpose)}` },
          h("h4", {}, names.partner(partner)),
          titles.length ? h("p", { class: "muted" }, t("portal.offers.titled", { titles: titles.join(", ") })) : null,
          list.map((o) => offerSwitch(o.field, o, names.field(o.field), until)));
      }));
  });
}

function renderManual() {
  const root = $("manual");
  const open = new Set([...root.querySelectorAll("details[open]")].map((d) => d.id));
  const view = { partner: partnerView, purpose: purposeView }[state.view] || byFieldView;
  root.replaceChildren(...view());
  for (const id of open) { const d = document.getElementById(id); if (d) d.open = true; }
  renderLinkage();
}

// --- linkage: partners that would bring their own records about the customer ----------------------------
// A linkage grant is a consent grant on the pseudo-dimension "linkage" naming one partner and one purpose.
const kindName = (kind) => (kind ? t(`portal.linkage.kind.${kind}`) : "–");

function linkagePartnerName(o) {
  const known = (state.matrix?.partners || []).some((p) => p.key === o.partner);
  return known ? names.partner(o.partner) : o.partner_name || o.partner;
}

function linkageGrants(partner, purpose) {
  return (state.matrix?.grants || []).filter((g) => g.dimension === "linkage" && g.partner === partner && g.purpose === purpose && g.state === "active");
}

// One entry per (partner, purpose): the offers of its contracts merged, plus a grant still on for a pair
// nobody offers any more (so it can be withdrawn).
function linkageOffers() {
  const out = [];
  for (const o of state.linkage?.offers || []) {
    const same = out.find((x) => x.partner === o.partner && x.purpose === o.purpose);
    if (!same) out.push({ ...o, columns: [...o.columns] });
    else for (const c of o.columns) if (!same.columns.some((x) => x.key === c.key)) same.columns.push(c);
  }
  for (const g of state.matrix?.grants || []) {
    if (g.dimension === "linkage" && g.state === "active" && !out.some((o) => o.partner === g.partner && o.purpose === g.purpose)) {
      out.push({ partner: g.partner, purpose: g.purpose, identifier: null, columns: [], orphan: true });
    }
  }
  return out;
}

// What a partner column means, for the usage ledger and the list of links.
function partnerColumnMeaning(key) {
  for (const o of state.linkage?.offers || []) {
    const c = o.columns.find((x) => x.key === key);
    if (c) return c.meaning;
  }
  return key;
}

async function loadLinkage() {
  const [matrix, linkage] = await Promise.all([api("/v1/me/consents"), api("/v1/me/linkage")]);
  state.matrix = matrix;
  state.linkage = linkage;
}

async function toggleLinkage(sw, offer) {
  const status = $("manual-status");
  clear(status);
  const words = { partner: linkagePartnerName(offer), purpose: names.purpose(offer.purpose) };
  const revert = () => { sw.checked = !sw.checked; sw.setAttribute("aria-checked", String(sw.checked)); };
  sw.disabled = true;
  try {
    let outcome;
    if (sw.checked) {
      const change = await api("/v1/me/consents", { method: "POST", body: { dimension: "linkage", partner: offer.partner, purpose: offer.purpose } });
      outcome = [t("portal.linkage.granted", words), [{ id: change.receipt_id }]];
    } else {
      const ok = await confirmDialog({
        title: t("portal.linkage.withdrawTitle", words),
        body: h("p", {}, t("portal.linkage.withdrawBody", words)),
        confirm: t("portal.linkage.withdrawConfirm"),
        danger: true,
      });
      if (!ok) {
        revert();
        return;
      }
      const receipts = [];
      for (const g of linkageGrants(offer.partner, offer.purpose)) {
        const change = await api(`/v1/me/consents/${g.id}`, { method: "DELETE" });
        receipts.push({ id: change.receipt_id });
      }
      outcome = [t("portal.linkage.withdrawn", words), receipts];
    }
    try {
      await loadLinkage();
      renderManual();
    } catch (err) {
      showError(status, err);  // the change is done all the same: still show it and its receipt
    }
    confirmChange(...outcome);
    const again = document.getElementById(sw.id);
    if (again) again.focus();
  } catch (err) {
    revert();
    showError(status, err);
  } finally {
    sw.disabled = false;
  }
}

function linkageOffer(offer) {
  const partner = linkagePartnerName(offer);
  const id = `link-${offer.partner}-${offer.purpose}`;
  const on = linkageGrants(offer.partner, offer.purpose).length > 0;
  const sw = h("input", { type: "checkbox", role: "switch", id, dataset: { partner: offer.partner, purpose: offer.purpose } });
  sw.checked = on;
  sw.setAttribute("aria-checked", String(on));
  sw.addEventListener("change", () => {
    sw.setAttribute("aria-checked", String(sw.checked));
    toggleLinkage(sw, offer);
  });
  const link = (state.linkage?.links || []).find((l) => l.partner === offer.partner && l.purpose === offer.purpose);
  const notes = [];
  if (offer.orphan) notes.push(t("portal.linkage.orphan"));
  if (link) notes.push(t("portal.linkage.isLinked", { date: fmtDate(link.linked_at) }));
  const purpose = (state.matrix?.purposes || []).find((p) => p.key === offer.purpose);
  const facts = offer.orphan ? null : h("dl", { class: "facts" },
    h("dt", {}, t("portal.linkage.brings", { partner })),
    h("dd", {}, h("ul", { class: "brings" }, offer.columns.map((c) => h("li", { dataset: { column: c.key } }, c.meaning)))),
    h("dt", {}, t("portal.linkage.why")), h("dd", {}, purpose ? pick(purpose, "description") : names.purpose(offer.purpose)),
    h("dt", {}, t("portal.linkage.matchedOn")), h("dd", {}, kindName(offer.identifier)),
    h("dt", {}, t("portal.linkage.how")), h("dd", {}, t("portal.linkage.howText", { partner })));
  return h("div", { class: "offer linkage-offer", role: "group", "aria-label": `${partner} · ${names.purpose(offer.purpose)}`, dataset: { partner: offer.partner, purpose: offer.purpose } },
    h("h4", {}, partner),
    facts,
    h("div", { class: "switch-row" }, sw,
      h("label", { for: id }, t("portal.linkage.grant", { partner, purpose: names.purpose(offer.purpose) })),
      notes.length ? h("span", { class: "note muted" }, notes.join(" ")) : null));
}

function renderLinkage() {
  const box = $("linkage");
  const offers = linkageOffers();
  const links = state.linkage?.links || [];
  if (!offers.length && !links.length) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  const linked = links.length
    ? h("ul", { id: "linkage-links" }, links.map((l) => h("li", { dataset: { partner: l.partner } },
        t("portal.linkage.linkedLine", { partner: linkagePartnerName(l), purpose: names.purpose(l.purpose), kind: kindName(l.matched_on), date: fmtDate(l.linked_at) }), " ",
        t("portal.linkage.linkedColumns", { columns: l.partner_columns.map(partnerColumnMeaning).join(", ") }))))
    : h("p", { class: "muted", id: "linkage-links" }, t("portal.linkage.noneLinked"));
  box.replaceChildren(
    h("h3", { id: "linkage-title" }, t("portal.linkage.title")),
    h("p", { class: "muted" }, t("portal.linkage.intro")),
    ...offers.map(linkageOffer),
    h("h4", { id: "linkage-linked-title" }, t("portal.linkage.linkedTitle")),
    linked);
  box.hidden = false;
}

async function loadMatrix() {
  state.matrix = await api("/v1/me/consents");
}

const showManual = guard(() => $("manual-status"), async () => {
  const [matrix, manual, offers, linkage] = await Promise.all([
    api("/v1/me/consents"), api("/v1/catalog/manual").catch(() => []), api("/v1/me/offers"),
    api("/v1/me/linkage").catch(() => ({ offers: [], links: [] })),
  ]);
  state.matrix = matrix;
  state.manual = manual;
  state.offers = offers;
  state.linkage = linkage;
  renderManual();
});

// --- what we hold about you -----------------------------------------------------------------------------
function valueText(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "boolean") return t(value ? "portal.held.yes" : "portal.held.no");
  if (typeof value === "number") return fmtNumber(value);
  if (typeof value === "string" && /^\d{4}-\d{2}-\d{2}/.test(value)) return fmtDate(value);
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

const showHeld = guard(() => $("held-status"), async () => {
  const [profile] = await Promise.all([api("/v1/me/profile"), state.matrix ? null : loadMatrix()]);
  if (!state.manual) state.manual = await api("/v1/catalog/manual").catch(() => []);
  if (!profile.values.length) {
    $("held").replaceChildren(h("p", { class: "muted" }, t("portal.held.empty")));
    return;
  }
  const col = (k) => t(`portal.held.col.${k}`);
  const rows = profile.values.map((v) => {
    const f = fieldOf(v.field);
    return h("tr", { dataset: { field: v.field } },
      h("th", { scope: "row", "data-label": col("field") }, names.field(v.field)),
      h("td", { "data-label": col("value"), class: "held-value" }, valueText(v.value)),
      h("td", { "data-label": col("retention") }, f ? duration(f.retention_days) : "–"),
      h("td", { "data-label": col("where") }, f ? pick(f, "storage_location") : "–"));
  });
  $("held").replaceChildren(
    h("p", { class: "muted" }, t("portal.held.updated", { date: fmtDateTime(profile.updated_at) })),
    h("table", { class: "stack" },
      h("caption", { class: "sr-only" }, t("portal.held.title")),
      h("thead", {}, h("tr", {}, ["field", "value", "retention", "where"].map((k) => h("th", { scope: "col" }, col(k))))),
      h("tbody", {}, rows)));
});

// --- history and receipts -------------------------------------------------------------------------------
function historySentence(e) {
  if (e.dimension === "linkage") {
    return t(`portal.linkage.says.${e.kind}`, { partner: names.partner(e.partner), purpose: names.purpose(e.purpose) });
  }
  const what = e.field ? names.field(e.field) : t("portal.history.allOf", { dimension: names.dimension(e.dimension || "") });
  const who = e.partner ? names.partner(e.partner) : t("portal.history.anyPartner", { category: names.category(e.partner_category || "") });
  return t(`portal.history.says.${e.kind}`, { field: what, partner: who, purpose: names.purpose(e.purpose) });
}

const showHistory = guard(() => $("history-status"), async () => {
  if (!state.matrix) await loadMatrix();
  if (!state.manual) state.manual = await api("/v1/catalog/manual").catch(() => []);
  const events = await api("/v1/me/consents/history");
  if (!events.length) {
    $("history").replaceChildren(h("p", { class: "muted" }, t("portal.history.empty")));
    return;
  }
  const col = (k) => t(`portal.history.col.${k}`);
  const rows = events.map((e) => {
    const view = h("button", { type: "button", class: "secondary", "aria-label": t("portal.history.viewFor", { id: e.receipt_id.slice(0, 8) }) }, t("portal.history.view"));
    view.addEventListener("click", guard(() => $("history-status"), () => showReceipt(e.receipt_id, names)));
    return h("tr", { dataset: { kind: e.kind } },
      h("td", { "data-label": col("when") }, fmtDateTime(e.at)),
      h("td", { "data-label": col("what"), class: "sentence" }, h("span", { class: `kind kind-${e.kind}` }, t(`portal.history.kind.${e.kind}`)), ": ", historySentence(e)),
      h("td", { "data-label": col("until") }, e.valid_until ? fmtDate(e.valid_until) : t("portal.history.noEnd")),
      // The grant's state now, computed by the server when read (an ended window shows expired at once).
      h("td", { "data-label": col("now"), class: `state-${e.grant_state}` }, t(`portal.history.now.${e.grant_state}`)),
      h("td", { "data-label": col("receipt") }, view));
  });
  $("history").replaceChildren(h("table", { class: "stack" },
    h("thead", {}, h("tr", {}, ["when", "what", "until", "now", "receipt"].map((k) => h("th", { scope: "col" }, col(k))))),
    h("tbody", {}, rows)));
});

// --- usage ledger with proofs ---------------------------------------------------------------------------
async function checkProof(index, out) {
  const p = await api(`/v1/me/usage/${index}/proof`);
  const cp = parseCheckpoint(p.checkpoint);
  const included = await verifyInclusion(index, p.tree_size, hexToBytes(p.leaf_hash), p.hashes.map(hexToBytes), cp.root);
  const signed = await verifyNote(p.checkpoint, p.verifier_keys || []);
  const ok = included && cp.size === p.tree_size && signed !== false;
  out.replaceChildren(h("p", { class: ok ? "ok" : "error", role: "status" },
    ok ? t("portal.usage.proofOk", { index, size: cp.size, root: bytesToHex(cp.root).slice(0, 16) })
       : t("portal.usage.proofBad")));
}

// Checkpoint memory: on every visit, check the ledger shown now extends the one this browser verified
// before (a consistency proof); if not, say so plainly and offer both signed checkpoints as evidence.
async function checkLedger() {
  const current = await api("/v1/me/usage/checkpoint");
  const result = await checkAgainstMemory(current, async (first, second) =>
    (await api(`/v1/me/usage/consistency?first=${first}&second=${second}`)).hashes);
  const box = $("log-memory");
  if (["first", "same", "extended"].includes(result.status)) {
    box.replaceChildren();
    return;
  }
  const download = (name, note) => {
    const b = h("button", { type: "button", class: "secondary" }, t(`portal.ledger.download.${name}`));
    b.addEventListener("click", () => saveFile(`ledger-checkpoint-${name}.txt`, note, "text/plain"));
    return b;
  };
  box.replaceChildren(h("div", { class: "error", role: "alert", id: "ledger-warning", dataset: { status: result.status } },
    h("strong", {}, t("portal.ledger.warningTitle")), " ",
    t(`portal.ledger.${result.status}`),
    h("div", {}, result.remembered ? download("remembered", result.remembered) : null, " ", download("current", result.current))));
}

const showUsage = guard(() => $("usage-status"), async () => {
  const usage = await api("/v1/me/usage");
  // One ledger entry per use names every field the job read: show each use once, with its fields.
  const byUse = new Map();
  for (const f of usage.fields || []) {
    for (const u of f.uses || []) {
      const key = `${u.job_id}|${u.time}|${u.index}`;
      if (!byUse.has(key)) byUse.set(key, { ...u, fields: [] });
      byUse.get(key).fields.push(f.field);
    }
  }
  const uses = [...byUse.values()];
  uses.sort((a, b) => String(b.time).localeCompare(String(a.time)));
  if (!uses.length) {
    $("usage").replaceChildren(h("p", { class: "muted" }, t("portal.usage.empty")));
    return;
  }
  const m = state.matrix || { fields: [], partners: [], purposes: [] };
  const labels = new Map(m.fields.map((f) => [f.key, pick(f, "label")]));
  if (!state.linkage) state.linkage = await api("/v1/me/linkage").catch(() => ({ offers: [], links: [] }));
  // The partner's own records: the linkage itself and each of its columns a job or decision joined.
  const label = (f) => {
    if (f.startsWith("linkage:")) return t("portal.linkage.usageLinked", { kind: kindName(f.slice(8)) });
    if (f.startsWith("partner:")) return t("portal.linkage.usageColumn", { meaning: partnerColumnMeaning(f.slice(8)) });
    return labels.get(f) || f;
  };
  const partners = new Map(m.partners.map((p) => [p.key, p.name]));
  const purposes = new Map(m.purposes.map((p) => [p.key, pick(p, "label")]));
  $("usage").replaceChildren(h("ol", { class: "timeline" }, uses.map((u) => {
    const out = h("div", {});
    const pending = u.index === null || u.index === undefined;
    const button = h("button", { type: "button", class: "secondary", disabled: pending }, t("portal.usage.check"));
    button.addEventListener("click", guard(out, () => checkProof(u.index, out)));
    return h("li", { dataset: { fields: u.fields.join(" "), index: u.index } },
      h("strong", {}, u.fields.map(label).join(", ")), " — ",
      t("portal.usage.line", {
        partner: partners.get(u.partner) || u.partner,
        purpose: purposes.get(u.purpose) || u.purpose,
        time: fmtTime(u.time),
      }),
      u.result ? h("div", { class: "muted" }, t("portal.usage.result", { result: u.result })) : null,
      h("div", {}, button, " ", h("span", { class: "muted" }, pending ? t("portal.usage.pending") : t("portal.usage.entry", { index: u.index }))),
      out);
  })));
});

// --- points and rewards ---------------------------------------------------------------------------------
function tierName(name) {
  const text = t(`portal.tier.name.${name}`);
  return text === `portal.tier.name.${name}` ? name : text;
}

function showVoucher(reward, r) {
  const copy = h("button", { type: "button", class: "secondary" }, t("portal.voucher.copy"));
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(r.voucher_code); copy.textContent = t("portal.voucher.copied"); } catch { copy.disabled = true; }
  });
  $("redeemed").replaceChildren(h("div", { class: "ok", role: "status", id: "voucher", tabindex: "-1" },
    h("p", {}, h("strong", {}, t("portal.points.redeemed", { reward: pick(reward, "name"), balance: fmtNumber(r.balance_after) }))),
    r.voucher_code ? h("p", {}, t("portal.voucher.code"), " ", h("span", { class: "voucher mono", id: "voucher-code" }, r.voucher_code), " ", copy) : null,
    h("p", { class: "muted" }, t("portal.voucher.how"))));
  $("voucher").focus();
}

// Redeem after the person confirmed (a dialog); the same Idempotency-Key across a step-up sign-in, so a
// reward is never charged twice.
async function redeem(reward, button, key = crypto.randomUUID()) {
  const status = $("points-status");
  clear(status);
  button.disabled = true;
  try {
    const r = await api("/v1/me/redemptions", { method: "POST", body: { reward_key: reward.key, quantity: 1 }, headers: { "Idempotency-Key": key } });
    await showPoints();
    showVoucher(reward, r);
  } catch (err) {
    if (err instanceof StepUpRequired) {
      await stepUp(err, { action: "redeem", reward: reward.key, key });  // same key: never charged twice
    } else if (err instanceof ApiError && err.code === "insufficient_funds") {
      status.replaceChildren(h("p", { class: "error", role: "alert" }, t("portal.points.notEnough")));
    } else {
      showError(status, err);
    }
  } finally {
    button.disabled = false;
  }
}

async function askToRedeem(reward, button) {
  const balance = state.points ? state.points.balance : 0;
  const ok = await confirmDialog({
    title: t("portal.redeem.title", { reward: pick(reward, "name") }),
    body: [
      h("p", {}, t("portal.redeem.body", { reward: pick(reward, "name"), cost: fmtNumber(reward.cost), after: fmtNumber(balance - reward.cost) })),
      pick(reward, "description") ? h("p", { class: "muted" }, pick(reward, "description")) : null,
    ],
    confirm: t("portal.redeem.confirm", { cost: fmtNumber(reward.cost) }),
  });
  if (ok) await redeem(reward, button);
}

function tierExplained(points) {
  const tier = points.tier || { name: "bronze" };
  const levels = points.tiers || [];
  const next = tier.next_tier
    ? plural("portal.tier.toNext", tier.points_to_next_tier, { tier: tierName(tier.next_tier) })
    : t("portal.tier.top");
  return [
    h("p", {}, t("portal.tier.yours", { tier: tierName(tier.name), earned: fmtNumber(points.lifetime_earned) }), " ", next),
    h("p", { class: "muted" }, t("portal.tier.what")),
    h("ol", {}, levels.map((l) => h("li", { "aria-current": l.name === tier.name ? "true" : null },
      t("portal.tier.level", { tier: tierName(l.name), points: fmtNumber(l.lifetime_points) }), " — ", t(`portal.tier.means.${l.name}`)))),
  ];
}

function postingText(p) {
  const [kind, ref] = (p.reference || "").split(":");
  if (p.kind === "authorization_bonus") return t("portal.earn.bonus", { field: names.field(kind === "field" ? ref : "") });
  if (p.kind === "usage") return t("portal.earn.usage");
  if (p.kind === "redemption") {
    const reward = (state.rewards || []).find((r) => r.key === ref);
    return t("portal.earn.redemption", { reward: reward ? pick(reward, "name") : ref || "" });
  }
  if (p.kind === "expiry") return t("portal.earn.expiry");
  return t("portal.earn.correction", { reason: p.reason });
}

const showPoints = guard(() => $("points-status"), async () => {
  const [points, rewards, redemptions, postings] = await Promise.all([
    api("/v1/me/points"), api("/v1/rewards"), api("/v1/me/redemptions").catch(() => []),
    api("/v1/me/points/postings?limit=50").catch(() => ({ items: [] })), state.matrix ? null : loadMatrix(),
  ]);
  state.points = points;
  state.rewards = rewards;
  $("balance").textContent = fmtNumber(points.balance);
  $("tier").textContent = points.tier ? tierName(points.tier.name) : "";
  $("tier-explained").replaceChildren(...tierExplained(points));
  $("rewards").replaceChildren(...rewards.filter((r) => r.active !== false).map((r) => {
    const button = h("button", { type: "button", "aria-label": t("portal.points.redeemFor", { reward: pick(r, "name") }) }, t("portal.points.redeem"));
    if (points.balance < r.cost || r.stock === 0) button.disabled = true;
    button.addEventListener("click", () => askToRedeem(r, button));
    return h("div", { class: "card", dataset: { reward: r.key } },
      h("h4", {}, pick(r, "name")),
      h("p", { class: "muted" }, pick(r, "description")),
      h("p", {}, plural("portal.offers.points", r.cost)),
      r.stock === 0 ? h("p", { class: "muted" }, t("portal.redeem.outOfStock")) : null,
      button);
  }));
  const rc = (k) => t(`portal.redemptions.col.${k}`);
  $("redemptions").replaceChildren(redemptions.length
    ? h("table", { class: "stack" },
        h("thead", {}, h("tr", {}, ["date", "reward", "points", "voucher", "status"].map((k) => h("th", { scope: "col" }, rc(k))))),
        h("tbody", {}, redemptions.map((r) => {
          const reward = rewards.find((x) => x.key === r.reward_key);
          return h("tr", {},
            h("td", { "data-label": rc("date") }, fmtDateTime(r.created_at)),
            h("td", { "data-label": rc("reward") }, reward ? pick(reward, "name") : r.reward_name || r.reward_key),
            h("td", { "data-label": rc("points"), class: "amount" }, fmtNumber(r.cost)),
            h("td", { "data-label": rc("voucher"), class: "mono" }, r.voucher_code || "–"),
            h("td", { "data-label": rc("status") }, t(`portal.redemptions.status.${r.status}`)));
        })))
    : h("p", { class: "muted" }, t("portal.points.none")));
  const ec = (k) => t(`portal.earn.col.${k}`);
  const items = postings.items || [];
  $("earnings").replaceChildren(items.length
    ? h("table", { class: "stack" },
        h("thead", {}, h("tr", {}, ["date", "what", "points"].map((k) => h("th", { scope: "col" }, ec(k))))),
        h("tbody", {}, items.map((p) => h("tr", { dataset: { kind: p.kind } },
          h("td", { "data-label": ec("date") }, fmtDateTime(p.created_at)),
          h("td", { "data-label": ec("what") }, postingText(p)),
          h("td", { "data-label": ec("points"), class: `amount ${p.amount >= 0 ? "plus" : "minus"}` }, (p.amount > 0 ? "+" : "") + fmtNumber(p.amount))))))
    : h("p", { class: "muted" }, t("portal.earn.none")));
});

// --- account: export and erasure ------------------------------------------------------------------------
const doExport = guard(() => $("export-status"), async () => {
  clear($("export-status"));
  // JSON Lines (a header, one line per record, a manifest with counts and SHA-256 per section), saved as sent.
  const response = await apiResponse("/v1/me/export");
  saveFile("my-data.jsonl", await response.blob());
  $("export-status").replaceChildren(h("p", { class: "ok", role: "status" }, t("portal.account.exported")));
});

const doErase = guard(() => $("erase-status"), async (event) => {
  event.preventDefault();
  const input = $("erase-confirm");
  if (input.value.trim() !== "ERASE") {
    fieldError(input, t("portal.account.eraseMismatch"));
    input.focus();
    return;
  }
  fieldError(input, null);
  await eraseAccount();
});

async function eraseAccount() {
  let outcome;
  try {
    outcome = await api("/v1/me?confirm=" + encodeURIComponent("erase my data"), { method: "DELETE" });
  } catch (err) {
    if (err instanceof StepUpRequired) return stepUp(err, { action: "erase" });
    throw err;
  }
  await signOut();
  $("app").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  // The sign-in is gone now: the reference and the signed receipts in this answer are the person's proof.
  const download = h("button", { type: "button", class: "secondary" }, t("portal.erasure.download"));
  download.addEventListener("click", () => saveFile(`erasure-${outcome.reference || "confirmation"}.json`, JSON.stringify(outcome, null, 2)));
  $("signin-error").replaceChildren(h("div", { class: "ok", role: "status", id: "erasure-done" },
    h("p", {}, h("strong", {}, t("portal.account.erased"))),
    outcome.reference ? h("p", {}, t("portal.erasure.reference"), " ", h("span", { class: "mono", id: "erasure-reference" }, outcome.reference)) : null,
    h("p", {}, plural("portal.erasure.summary", outcome.grants_withdrawn || 0, { when: fmtDateTime(outcome.completed_at) })),
    h("p", { class: "muted" }, t("portal.erasure.keep")),
    download));
}

// After a step-up sign-in: retry the action that asked for it (the person confirmed it before signing in).
async function resumeAction(resume, selectTab) {
  if (resume.action === "erase") {
    selectTab("account");
    await guard(() => $("erase-status"), eraseAccount)();
  } else if (resume.action === "redeem") {
    selectTab("points");
    await showPoints();
    const reward = (state.rewards || []).find((r) => r.key === resume.reward);
    const button = document.querySelector(`[data-reward="${CSS.escape(resume.reward)}"] button`) || h("button");
    if (reward) await redeem(reward, button, resume.key);
  }
}

// --- wiring ---------------------------------------------------------------------------------------------
const loaders = { manual: showManual, held: showHeld, history: showHistory, usage: showUsage, points: showPoints, account: async () => {} };

function showSignedIn() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
}

function showSignedOut(message) {
  $("app").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  if (message) $("signin-error").replaceChildren(h("p", { class: "error", role: "alert" }, message));
}

async function main() {
  await initI18n();
  $("signin-button").addEventListener("click", () => signIn(CLIENT_ID, SCOPE));
  $("signout").addEventListener("click", async () => { await signOut(); showSignedOut(); });
  $("export").addEventListener("click", doExport);
  $("erase-form").addEventListener("submit", doErase);
  for (const radio of document.querySelectorAll("input[name=view]")) {
    radio.addEventListener("change", () => {
      state.view = radio.value;
      closeConfirmation();
      if (state.matrix && state.offers) renderManual();
    });
  }
  document.addEventListener("signedout", () => showSignedOut(t("error.signedOut")));
  document.addEventListener("langchange", () => loaders[state.tab]());
  const selectTab = setupTabs($("tabs"), (name) => { state.tab = name; loaders[name](); });
  let session = null;
  try {
    session = await completeSignIn();
  } catch (err) {
    showSignedOut(err.code === "access_denied" ? t("error.denied") : describeError(err));
    return;
  }
  if (!session && !currentSession()) {
    showSignedOut();
    return;
  }
  showSignedIn();
  checkLedger().catch(() => {});  // a failed check never blocks the portal; a detected fork shows a warning
  const resume = session ? takeResume() : null;
  if (resume) {
    await resumeAction(resume, selectTab);
    return;
  }
  selectTab(location.hash.replace("#", "") || "manual");
}

main().catch(() => showSignedOut(t("error.generic")));
