// The steward console: contracts (two-person rule), partner models (source review), privacy budgets, the data
// manual in every language, the job queue, access and erasure requests.
import { api } from "/static/api.js";
import { completeSignIn, currentSession, signIn, signOut } from "/static/auth.js";
import { currentLang, fmtNumber, fmtTime, initI18n, pick, t } from "/static/i18n.js";
import { announce, clear, describeError, fieldError, guard, h, setupTabs } from "/static/ui.js";
import { rangeQuery, renderDeliveries, renderLoop } from "/steward/collab.js";

const CLIENT_ID = "steward-console";
const SCOPE = "catalog admin audit";
const LANGS = [["en", "English"], ["zh-CN", "简体中文"]];
const TEXTS = ["label", "description", "collection_purpose", "storage_location", "sharing_scope"];
const $ = (id) => document.getElementById(id);
const state = { tab: "contracts", catalog: null, budgets: [] };

// A translated label for a code, or the code itself when no text exists (never an empty cell).
function label(prefix, code) {
  const key = `${prefix}.${code}`;
  const text = t(key);
  return text === key ? String(code ?? "") : text;
}

function whoami() {
  const s = currentSession();
  try {
    const payload = JSON.parse(atob(s.access_token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return payload.sub || "";
  } catch {
    return "";
  }
}

// Partners, purposes and fields by key (for human names), loaded once per sign-in and after edits.
async function catalog(force = false) {
  if (state.catalog && !force) return state.catalog;
  const [partners, purposes, fields] = await Promise.all([
    api("/v1/partners"), api("/v1/catalog/purposes"), api("/v1/catalog/fields"),
  ]);
  const byKey = (list) => Object.fromEntries(list.map((x) => [x.key, x]));
  state.catalog = { partners, purposes, fields, partner: byKey(partners), purpose: byKey(purposes), field: byKey(fields) };
  return state.catalog;
}

const partnerName = (c, key) => (c.partner[key] ? c.partner[key].name : key);
const purposeName = (c, key) => (c.purpose[key] ? pick(c.purpose[key], "label") : key);
const fieldName = (c, key) => (c.field[key] ? pick(c.field[key], "label") : key);

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function table(columns, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))));
}

// --- contracts ------------------------------------------------------------------------------------------
function paramText(v) {
  if (Array.isArray(v)) return v.join(", ");
  if (v && typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}: ${paramText(x)}`).join("; ");
  return String(v);
}

function featureText(c, f) {
  const transform = label("steward.transform", f.transform);
  const params = Object.entries(f).filter(([k]) => !["field", "transform"].includes(k))
    .map(([k, v]) => `${label("steward.param", k)} ${paramText(v)}`);
  return `${fieldName(c, f.field)}: ${transform}${params.length ? " (" + params.join("; ") + ")" : ""}`;
}

function twoPerson(contract) {
  const names = contract.approvals.map((a) => a.replace(/^steward:/, ""));
  const missing = Math.max(0, contract.required_approvals - names.length);
  let text;
  if (contract.status !== "proposed") {
    text = names.length ? t("steward.twoPerson.approvedBy", { names: names.join(", ") }) : "";
  } else if (!names.length) {
    text = t(contract.required_approvals > 1 ? "steward.twoPerson.needsTwo" : "steward.twoPerson.needsOne");
  } else {
    text = t(missing === 1 ? "steward.twoPerson.needsSecond" : "steward.twoPerson.needsMore", { names: names.join(", "), n: missing });
  }
  if (!text) return null;
  return h("p", { class: "two-person" + (contract.status === "proposed" ? " pending" : ""), "data-testid": "two-person" }, text);
}

function contractCard(c, contract) {
  const reason = h("input", { id: `reason-${contract.id}`, maxlength: "1000", "aria-label": t("steward.reason") , placeholder: t("steward.reason") });
  const approve = h("button", { type: "button" }, t("steward.approve"));
  const reject = h("button", { type: "button", class: "danger" }, t("steward.reject"));
  approve.addEventListener("click", guard(() => $("contracts-status"), async () => {
    const updated = await api(`/v1/contracts/${contract.id}/approve`, { method: "POST" });
    announce(updated.status === "approved" ? t("steward.contracts.approved") : t("steward.contracts.recorded"));
    await loadContracts();
  }));
  reject.addEventListener("click", guard(() => $("contracts-status"), async () => {
    await api(`/v1/contracts/${contract.id}/reject`, { method: "POST", body: { reason: reason.value.trim() } });
    announce(t("steward.contracts.rejected"));
    await loadContracts();
  }));
  // Revoking ends the offer: no new job starts under the contract. Two steps, so one click cannot do it.
  let revoke = null;
  if (contract.status === "approved") {
    const confirmBox = h("div", { class: "actions", hidden: true },
      h("span", {}, t("steward.contracts.revokeWarning")));
    const yes = h("button", { type: "button", class: "danger" }, t("steward.contracts.revokeConfirm"));
    const no = h("button", { type: "button", class: "secondary" }, t("steward.cancel"));
    confirmBox.append(yes, no);
    const ask = h("button", { type: "button", class: "secondary" }, t("steward.contracts.revoke"));
    ask.addEventListener("click", () => { confirmBox.hidden = false; ask.hidden = true; yes.focus(); });
    no.addEventListener("click", () => { confirmBox.hidden = true; ask.hidden = false; ask.focus(); });
    yes.addEventListener("click", guard(() => $("contracts-status"), async () => {
      await api(`/v1/contracts/${contract.id}/revoke`, { method: "POST", body: { reason: "" } });
      announce(t("steward.contracts.revoked"));
      await loadContracts();
    }));
    revoke = h("div", {}, h("div", { class: "actions" }, ask), confirmBox);
  }
  return h("article", { class: "card", "data-contract": contract.id },
    h("h3", {}, contract.title || t("steward.contracts.untitled", { id: contract.id })),
    h("p", {}, h("span", { class: "badge" }, label("steward.status", contract.status)), " ",
      contract.sensitive ? h("span", { class: "badge sensitive" }, t("steward.sensitive")) : null),
    facts([
      [t("steward.col.partner"), partnerName(c, contract.partner_key)],
      [t("steward.col.purpose"), purposeName(c, contract.purpose)],
      [t("steward.contracts.kmin"), t("steward.contracts.kminText", { k: contract.k_min })],
      [t("steward.contracts.epsilon"), t("steward.contracts.epsilonText", { e: fmtNumber(contract.epsilon_per_release) })],
      [t("steward.contracts.valid"), `${fmtTime(contract.valid_from)} – ${fmtTime(contract.valid_until)}`],
      [t("steward.contracts.proposedBy"), contract.proposed_by.replace(/^[a-z]+:/, "")],
      [t("steward.contracts.proposedAt"), fmtTime(contract.created_at)],
      [t("steward.contracts.decisions"), (contract.decision_schema.labels || []).join(", ")],
      [t("steward.contracts.reasonGiven"), contract.decision_reason],
    ]),
    h("p", {}, t("steward.contracts.features")),
    h("ul", { class: "plain" }, contract.features.map((f) => h("li", {}, featureText(c, f)))),
    twoPerson(contract),
    contract.status === "proposed" ? h("div", { class: "actions" }, approve, reason, reject) : revoke);
}

const loadContracts = guard(() => $("contracts-status"), async () => {
  clear($("contracts-status"));
  const c = await catalog();
  const status = $("c-status").value;
  const list = await api("/v1/contracts" + (status ? `?status=${status}` : ""));
  list.sort((a, b) => b.id - a.id);
  $("contracts").replaceChildren(...(list.length ? list.map((x) => contractCard(c, x)) : [h("p", { class: "muted" }, t("steward.contracts.none"))]));
});

// --- models ---------------------------------------------------------------------------------------------
function checkText(check) {
  return t(`steward.check.${check.check}`, { limit: check.limit ? fmtNumber(Math.round(check.limit / 1024)) : "", features: check.features ?? "" });
}

const showReview = guard(() => $("models-status"), async (id) => {
  const c = await catalog();
  const r = await api(`/v1/models/${id}/review`);
  const m = r.model;
  const names = r.approvals.map((a) => a.replace(/^steward:/, ""));
  const awaiting = m.kind === "python" && m.status === "uploaded";
  const parts = [
    h("h3", { id: "review-title", tabindex: "-1" }, t("steward.models.reviewTitle", { id: m.id })),
    facts([
      [t("steward.col.partner"), partnerName(c, r.partner_key)],
      [t("steward.models.kind"), label("steward.kind", m.kind)],
      [t("steward.col.status"), label("steward.modelStatus", m.status)],
      [t("steward.models.uploadedBy"), r.uploaded_by.replace(/^[a-z]+:/, "")],
      [t("steward.models.uploadedAt"), fmtTime(m.created_at)],
      [t("steward.models.sha"), m.sha256],
    ]),
    h("p", {}, t("steward.models.checks")),
    h("ul", { class: "plain", id: "review-checks" }, r.checks.map((ch) => h("li", {}, "✓ " + checkText(ch)))),
  ];
  if (m.kind === "python") {
    parts.push(h("p", { class: "two-person" + (awaiting ? " pending" : "") },
      names.length ? t("steward.models.approvals", { names: names.join(", "), have: names.length, need: r.required_approvals })
                   : t("steward.models.noApprovals", { need: r.required_approvals })));
    parts.push(h("p", {}, t("steward.models.source")), h("pre", { class: "source", tabindex: "0", "aria-label": t("steward.models.source") }, r.source || ""));
  }
  if (awaiting) {
    const approve = h("button", { type: "button" }, t("steward.approve"));
    const reject = h("button", { type: "button", class: "danger" }, t("steward.reject"));
    approve.addEventListener("click", guard(() => $("models-status"), async () => {
      await api(`/v1/models/${id}/approve`, { method: "POST" });
      announce(t("steward.models.approved"));
      await loadModels();
      await showReview(id);
    }));
    reject.addEventListener("click", guard(() => $("models-status"), async () => {
      await api(`/v1/models/${id}/reject`, { method: "POST", body: { reason: "" } });
      announce(t("steward.models.rejected"));
      await loadModels();
      await showReview(id);
    }));
    parts.push(h("div", { class: "actions" }, approve, reject));
  }
  $("review").replaceChildren(h("div", { class: "card" }, ...parts));
  $("review-title").focus();
});

const loadModels = guard(() => $("models-status"), async () => {
  clear($("models-status"));
  const c = await catalog();
  const list = (await api("/v1/models")).sort((a, b) => b.id - a.id);
  $("models").replaceChildren(...(list.length ? list.map((m) => {
    const open = h("button", { type: "button", class: "secondary" }, t("steward.models.review"));
    open.addEventListener("click", () => showReview(m.id));
    return h("article", { class: "card", "data-model": m.id },
      h("h3", {}, t("steward.models.cardTitle", { id: m.id, kind: label("steward.kind", m.kind) })),
      h("p", {}, h("span", { class: "badge" }, label("steward.modelStatus", m.status))),
      facts([
        [t("steward.models.contract"), `#${m.contract_id}`],
        [t("steward.models.size"), t("steward.models.sizeText", { kb: fmtNumber(Math.max(1, Math.round(m.size_bytes / 1024))) })],
        [t("steward.models.uploadedAt"), fmtTime(m.created_at)],
      ]),
      h("div", { class: "actions" }, open));
  }) : [h("p", { class: "muted" }, t("steward.models.none"))]));
  void c;
});

// --- budgets --------------------------------------------------------------------------------------------
const loadBudgets = guard(() => $("budgets-status"), async () => {
  const c = await catalog();
  const fill = (select, items, text) => {
    const keep = select.value;
    select.replaceChildren(...items.map((x) => h("option", { value: x.key }, text(x))));
    if (keep) select.value = keep;
  };
  fill($("b-partner"), c.partners, (p) => p.name);
  fill($("b-purpose"), c.purposes, (p) => pick(p, "label"));
  const list = await api("/v1/privacy-budgets");
  state.budgets = list;
  showCurrentBudget();
  $("budgets").replaceChildren(table(
    [t("steward.col.partner"), t("steward.col.purpose"), t("steward.budgets.total"), t("steward.budgets.spent"), t("steward.budgets.remaining"), t("steward.budgets.updated")],
    list.map((b) => [partnerName(c, b.partner_key), purposeName(c, b.purpose), fmtNumber(b.epsilon_total), fmtNumber(b.epsilon_spent), fmtNumber(b.epsilon_remaining), fmtTime(b.updated_at)]),
    t("steward.budgets.none")));
});

// What the chosen partner and purpose have now, so the steward sees what a new total replaces.
function showCurrentBudget() {
  const b = (state.budgets || []).find((x) => x.partner_key === $("b-partner").value && x.purpose === $("b-purpose").value);
  $("budget-current").textContent = b
    ? t("steward.budgets.current", { total: fmtNumber(b.epsilon_total), remaining: fmtNumber(b.epsilon_remaining) })
    : t("steward.budgets.noneYet");
}

const saveBudget = guard(() => $("budgets-status"), async (event) => {
  event.preventDefault();
  clear($("budgets-status"));
  const total = $("b-total");
  const value = Number(total.value);
  if (total.value.trim() === "" || !Number.isFinite(value) || value < 0 || value > 1000) {
    fieldError(total, t("steward.budgets.bad"));
    return;
  }
  fieldError(total, null);
  await api("/v1/privacy-budgets", { method: "PUT", body: { partner_key: $("b-partner").value, purpose: $("b-purpose").value, epsilon_total: value } });
  $("budgets-status").replaceChildren(h("p", { class: "ok", role: "status" }, t("steward.budgets.saved")));
  await loadBudgets();
});

// --- data manual ----------------------------------------------------------------------------------------
function textInputs(prefix, obj, names) {
  return h("div", { class: "lang-grid" }, LANGS.map(([code, name]) => h("fieldset", { lang: code },
    h("legend", {}, name),
    names.map((n) => {
      const id = `${prefix}-${n}-${code}`;
      const value = code === "en" ? obj[n] || "" : ((obj.i18n || {})[code] || {})[n] || "";
      const long = ["description", "collection_purpose", "sharing_scope"].includes(n);
      return [h("label", { for: id }, t(`steward.text.${n}`)),
        long ? h("textarea", { id, rows: "2", dataset: { name: n, lang: code } }, value)
             : h("input", { id, value, dataset: { name: n, lang: code } })];
    }).flat())));
}

function readTexts(form, obj) {
  const base = {};
  const i18n = JSON.parse(JSON.stringify(obj.i18n || {}));
  for (const el of form.querySelectorAll("[data-name]")) {
    const value = el.value.trim();
    if (el.dataset.lang === "en") base[el.dataset.name] = value;
    else {
      i18n[el.dataset.lang] = i18n[el.dataset.lang] || {};
      if (value) i18n[el.dataset.lang][el.dataset.name] = value;
      else delete i18n[el.dataset.lang][el.dataset.name];
    }
  }
  return { base, i18n };
}

// ``numbers``: whole-number settings edited beside the texts, as [name, min, max].
function editor(kind, obj, title, names, save, numbers = []) {
  const prefix = `${kind}-${obj.key}`;
  const numberInputs = numbers.map(([n, min, max]) => h("div", {},
    h("label", { for: `${prefix}-${n}` }, t(`steward.number.${n}`)),
    h("input", { id: `${prefix}-${n}`, type: "number", min, max, step: "1", inputmode: "numeric", value: obj[n], dataset: { number: n, min, max } })));
  const form = h("form", { novalidate: true, "data-edit": `${kind}:${obj.key}` },
    numbers.length ? h("div", { class: "grid-form" }, numberInputs) : null, textInputs(prefix, obj, names));
  const status = h("div", {});
  form.append(h("div", { class: "actions" }, h("button", { type: "submit" }, t("steward.save"))), status);
  form.addEventListener("submit", guard(() => status, async (event) => {
    event.preventDefault();
    const { base, i18n } = readTexts(form, obj);
    const missing = form.querySelector('[data-lang="en"][data-name="label"], [data-lang="en"][data-name="name"]');
    if (missing && !missing.value.trim()) { fieldError(missing, t("steward.required")); return; }
    if (missing) fieldError(missing, null);
    let valid = true;
    for (const input of form.querySelectorAll("[data-number]")) {
      const value = Number(input.value);
      const ok = input.value.trim() !== "" && Number.isInteger(value) && value >= Number(input.dataset.min) && value <= Number(input.dataset.max);
      fieldError(input, ok ? null : t("steward.number.bad", { min: fmtNumber(input.dataset.min), max: fmtNumber(input.dataset.max) }));
      if (ok) base[input.dataset.number] = value;
      else valid = false;
    }
    if (!valid) return;
    await save(base, i18n);
    status.replaceChildren(h("p", { class: "ok", role: "status" }, t("steward.saved")));
    announce(t("steward.saved"));
    await catalog(true);
  }));
  return h("details", { class: "field" }, h("summary", {}, h("span", { class: "label" }, title)), h("div", { class: "body" }, form));
}

const loadManual = guard(() => $("manual-status"), async () => {
  const c = await catalog(true);
  $("fields").replaceChildren(...c.fields.map((f) => editor("field", f, `${pick(f, "label")} · ${label("steward.sensitivity", f.sensitivity)} · v${f.version}`, TEXTS,
    (base, i18n) => api(`/v1/catalog/fields/${encodeURIComponent(f.key)}`, { method: "PATCH", body: { ...base, i18n } }),
    [["points_value", 0, 1000000], ["retention_days", 1, 36500]])));
  $("purposes").replaceChildren(...c.purposes.map((p) => editor("purpose", p, pick(p, "label"), ["label", "description"],
    (base, i18n) => api("/v1/catalog/purposes", { method: "POST", body: {
      key: p.key, label: base.label, description: base.description, dpv_term: p.dpv_term, lawful_basis: p.lawful_basis, parent: p.parent, i18n,
    } }))));
  $("partners").replaceChildren(...c.partners.map((p) => editor("partner", { ...p, i18n: p.i18n || {} }, `${pick(p, "name")} · ${p.category}`, ["name", "description"],
    (base, i18n) => api("/v1/partners", { method: "POST", body: { key: p.key, name: base.name, category: p.category, description: base.description, i18n } }))));
  // Offers are what contracts make possible: a partner, a purpose and the fields it reads.
  const list = await api("/v1/contracts");
  const offers = new Map();
  for (const x of list.filter((y) => ["proposed", "approved"].includes(y.status))) {  // what customers are asked for
    const key = `${x.partner_key}|${x.purpose}`;
    const o = offers.get(key) || { partner: x.partner_key, purpose: x.purpose, fields: new Set(), statuses: new Set() };
    x.features.forEach((f) => o.fields.add(f.field));
    o.statuses.add(x.status);
    offers.set(key, o);
  }
  $("offers").replaceChildren(table(
    [t("steward.col.partner"), t("steward.col.purpose"), t("steward.manual.offerFields"), t("steward.col.status")],
    [...offers.values()].map((o) => [partnerName(c, o.partner), purposeName(c, o.purpose), [...o.fields].map((f) => fieldName(c, f)).join(", "),
      [...o.statuses].map((s) => label("steward.status", s)).join(", ")]),
    t("steward.manual.noOffers")));
});

// --- jobs and requests ----------------------------------------------------------------------------------
const loadJobs = guard(() => $("jobs-status"), async () => {
  clear($("jobs-status"));
  const c = await catalog();
  const status = $("j-status").value;
  const list = await api("/v1/jobs?limit=100" + (status ? `&status=${status}` : ""));
  $("jobs").replaceChildren(table(
    [t("steward.jobs.id"), t("steward.col.partner"), t("steward.models.contract"), t("steward.col.status"), t("steward.jobs.progress"), t("steward.jobs.submitted"), t("steward.jobs.finished"), t("steward.jobs.problem")],
    list.map((j) => [`#${j.id}`, partnerName(c, j.partner_key), `#${j.contract_id}`, label("steward.job", j.status),
      j.shards_total ? t("steward.jobs.shards", { done: j.shards_done, total: j.shards_total }) : t("steward.jobs.whole"),
      fmtTime(j.created_at), fmtTime(j.finished_at) || "—", j.error_detail || (j.error ? label("steward.reason", j.error) : "")]),
    t("steward.jobs.none")));
});

function outcomeText(outcome) {
  if (!outcome || typeof outcome !== "object") return "";
  return Object.entries(outcome).map(([k, v]) => `${label("steward.outcome", k)}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join("; ");
}

const loadRequests = guard(() => $("requests-status"), async () => {
  const list = await api("/v1/compliance/requests");
  $("requests").replaceChildren(table(
    [t("steward.jobs.id"), t("steward.requests.kind"), t("steward.requests.customer"), t("steward.requests.by"), t("steward.requests.at"), t("steward.requests.done"), t("steward.requests.outcome")],
    list.map((r) => [`#${r.id}`, label("steward.request", r.kind), `#${r.subject_id}`, String(r.requested_by || "").replace(/^[a-z]+:/, ""),
      fmtTime(r.requested_at), fmtTime(r.completed_at) || t("steward.requests.pending"), outcomeText(r.outcome)]),
    t("steward.requests.none")));
});

const addPartner = guard(() => $("partner-status"), async (event) => {
  event.preventDefault();
  clear($("partner-status"));
  const key = $("p-key");
  const required = [$("p-name"), $("p-category")];
  let valid = true;
  fieldError(key, /^[a-z][a-z0-9_]{0,63}$/.test(key.value.trim()) ? null : t("steward.partners.badKey"));
  if (key.getAttribute("aria-invalid")) valid = false;
  for (const input of required) {
    fieldError(input, input.value.trim() ? null : t("steward.required"));
    if (!input.value.trim()) valid = false;
  }
  if (!/^[a-z][a-z0-9_]{0,63}$/.test($("p-category").value.trim()) && $("p-category").value.trim()) {
    fieldError($("p-category"), t("steward.partners.badKey"));
    valid = false;
  }
  if (!valid) return;
  await api("/v1/partners", { method: "POST", body: {
    key: key.value.trim(), name: $("p-name").value.trim(), category: $("p-category").value.trim(), description: $("p-description").value.trim(),
  } });
  $("partner-form").reset();
  await loadManual();
  $("partner-status").replaceChildren(h("p", { class: "ok", role: "status" }, t("steward.partners.added")));
});

// --- collaboration dashboard ------------------------------------------------------------------------------
// A card's dead letters, each with a Replay button (same event id, same consented copy).
const showDeadLetters = guard(() => $("collab-status"), async (row, box) => {
  const list = await api(`/v1/event-deliveries?status=dead&contract_id=${row.contract_id}&partner_id=${row.partner_id}`);
  const replay = (d) => {
    const button = h("button", { type: "button", class: "secondary" }, t("collab.replay"));
    button.addEventListener("click", guard(() => box, async () => {
      button.disabled = true;
      await api(`/v1/event-deliveries/${d.id}/replay`, { method: "POST" });
      button.replaceWith(h("span", { class: "ok", role: "status" }, t("collab.replayed")));
    }));
    return button;
  };
  box.replaceChildren(h("div", { class: "table-wrap", tabindex: "0" }, table(
    [t("collab.eventId"), t("collab.lastError"), t("collab.attempts"), t("collab.time"), t("collab.action")],
    list.map((d) => [d.event_id, d.last_error || "", fmtNumber(d.attempts), fmtTime(d.created_at), replay(d)]),
    t("collab.noDead"))));
});

const loadCollab = guard(() => $("collab-status"), async () => {
  clear($("collab-status"));
  const data = await api(`/v1/steward/collaboration?${rangeQuery($("collab-range").value)}`);
  $("collab-deliveries").replaceChildren();
  $("collab-loop").replaceChildren();
  renderDeliveries($("collab-deliveries"), data, { deadLetters: showDeadLetters });
  renderLoop($("collab-loop"), data);
  announce(t("collab.loaded"));
});

const loaders = { contracts: loadContracts, models: loadModels, budgets: loadBudgets, manual: loadManual, jobs: loadJobs, requests: loadRequests, collab: loadCollab };

function view(signedIn, message) {
  $("signin").hidden = signedIn;
  $("app").hidden = !signedIn;
  $("signout").hidden = !signedIn;
  if (signedIn) $("whoami").textContent = t("steward.whoami", { name: whoami() });
  if (message) $("signin-error").replaceChildren(h("p", { class: "error", role: "alert" }, message));
}

async function main() {
  await initI18n();
  $("signin-button").addEventListener("click", () => signIn(CLIENT_ID, SCOPE));
  $("signout").addEventListener("click", async () => { await signOut(); view(false); });
  $("c-status").addEventListener("change", loadContracts);
  $("j-status").addEventListener("change", loadJobs);
  $("jobs-refresh").addEventListener("click", loadJobs);
  $("collab-range").addEventListener("change", loadCollab);
  $("collab-refresh").addEventListener("click", loadCollab);
  $("budget-form").addEventListener("submit", saveBudget);
  $("b-partner").addEventListener("change", showCurrentBudget);
  $("b-purpose").addEventListener("change", showCurrentBudget);
  $("partner-form").addEventListener("submit", addPartner);
  document.addEventListener("signedout", () => view(false, t("error.signedOut")));
  $("lang").addEventListener("langchange", () => { if (currentSession()) { view(true); loaders[state.tab](); } });
  const select = setupTabs($("tabs"), (name) => { state.tab = name; clear($("review")); loaders[name](); });
  try {
    await completeSignIn();
  } catch (err) {
    view(false, describeError(err));
    return;
  }
  if (!currentSession()) { view(false); return; }
  view(true);
  select("contracts");
  void currentLang;
}

main().catch(() => view(false, t("error.generic")));
