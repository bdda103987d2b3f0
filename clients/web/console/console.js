// The compliance console: audit search (action picker, filters the server validates, named system actors),
// each entry with its inclusion proof verified here, export with in-browser verification, access/erasure
// requests, job/budget/request dashboards, consent-rate trends, and the records of processing (CSV, print).
// Next to every export: the verification key and the offline command (`dataspace audit verify`).
import { ApiError, api, apiResponse, saveFile } from "/static/api.js";
import { completeSignIn, currentSession, signIn, signOut } from "/static/auth.js";
import { bars, trendLines } from "/static/charts.js";
import { currentLang, fmtNumber, fmtTime, initI18n, pick, t } from "/static/i18n.js";
import { bytesToHex, hexToBytes, leafHash, parseCheckpoint, verifyExport, verifyInclusion, verifyNote } from "/static/merkle.js";
import { clear, describeError, fieldError, guard, h, setupTabs } from "/static/ui.js";

const CLIENT_ID = "console";
const $ = (id) => document.getElementById(id);
const state = { tab: "audit", cursor: null, query: null, log: "audit", catalog: null, keys: null };

// --- words for keys -------------------------------------------------------------------------------------
// A translation, or ``fallback`` when there is none (t() answers the key itself then).
function tr(key, fallback, vars) {
  const text = t(key, vars);
  return text === key ? fallback : text;
}

// "system:expiry-sweep" -> "System: expiry sweep"; "steward:alice" -> "Data steward: alice".
export function actorName(actor) {
  if (!actor) return "";
  if (actor === "anonymous") return t("console.actor.anonymous");
  const [role, ...rest] = actor.split(":");
  const name = rest.join(":");
  if (role === "system") return tr(`console.actor.system.${name}`, t("console.actor.system", { name }));
  return `${tr(`console.role.${role}`, role)}: ${name}`;
}

const actionName = (action) => tr(`console.action.${action}`, action);

// "job:12" -> "Job #12", "grant:4" -> "Consent #4"; anything else as recorded.
function targetName(target) {
  if (!target) return "";
  const cut = target.indexOf(":");
  if (cut < 0) return target;
  return tr(`console.target.${target.slice(0, cut)}`, target, { id: target.slice(cut + 1) });
}

function table(columns, rows, empty, rowAttrs = () => ({})) {
  if (!rows.length) return h("p", { class: "muted" }, t(empty));
  return h("table", { class: "stack" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, t(c))))),
    h("tbody", {}, rows.map((cells, r) => h("tr", rowAttrs(r), cells.map((cell, i) => h("td", { "data-label": t(columns[i]) }, cell ?? ""))))));
}

async function catalog() {
  if (!state.catalog) {
    const [fields, purposes, partners, manual] = await Promise.all([api("/v1/catalog/fields?include_retired=true"), api("/v1/catalog/purposes"), api("/v1/partners"),
      api("/v1/catalog/manual").catch(() => [])]);  // the manual's dimensions name the data categories
    state.catalog = { fields, purposes, partners, dimensions: manual };
  }
  return state.catalog;
}

function labelOf(kind, key) {
  const c = state.catalog;
  if (!c) return key;
  if (kind === "field") return pick(c.fields.find((f) => f.key === key), "label") || key;
  if (kind === "purpose") return pick(c.purposes.find((p) => p.key === key), "label") || key;
  if (kind === "dimension") return pick((c.dimensions || []).find((d) => d.key === key), "label") || key;
  if (kind === "category") { const text = t(`portal.category.${key}`); return text === `portal.category.${key}` ? key : text; }
  return pick(c.partners.find((p) => p.key === key), "name") || key;
}

// --- verification key and offline command, next to every export ------------------------------------------
async function verifierKeys() {
  if (!state.keys) state.keys = (await api("/v1/audit/checkpoint?log=audit")).verifier_keys || [];
  return state.keys;
}

const showVerifyBoxes = guard(() => null, async () => {
  const keys = await verifierKeys();
  for (const slot of document.querySelectorAll(".verify-slot")) {
    const file = slot.dataset.file;
    const command = `dataspace audit verify ${file} ${keys.map((k) => `--key '${k}'`).join(" ")}`;
    slot.replaceChildren(h("div", { class: "verify-box" },
      h("h3", {}, t("console.verify.title")),
      h("p", {}, t("console.verify.intro")),
      h("p", {}, h("strong", {}, t("console.verify.key")), " ", ...keys.map((k) => h("code", { class: "verify-key" }, k))),
      h("p", {}, h("strong", {}, t("console.verify.command"))),
      h("pre", { class: "verify-command" }, command),
      h("p", { class: "muted" }, t("console.verify.remote"))));
  }
});

// --- audit search ---------------------------------------------------------------------------------------
const FAMILY_ORDER = ["consent", "job", "release", "contract", "model", "catalog", "subject", "points", "oauth", "auth", "authz", "audit"];

const loadActions = guard(() => $("audit-status"), async () => {
  const log = $("f-log").value;
  const body = await api(`/v1/audit/actions?log=${log}`);
  const families = new Map();
  for (const a of body.actions) {
    const fam = a.split(".")[0];
    if (!families.has(fam)) families.set(fam, []);
    families.get(fam).push(a);
  }
  const order = [...families.keys()].sort((a, b) => (FAMILY_ORDER.indexOf(a) + 1 || 99) - (FAMILY_ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b));
  const select = $("f-action");
  const current = select.value;
  select.replaceChildren(h("option", { value: "" }, t("console.audit.anyAction")),
    ...order.map((fam) => h("optgroup", { label: tr(`console.family.${fam}`, fam) },
      families.get(fam).length > 1 ? h("option", { value: `${fam}.*` }, t("console.audit.allOf", { family: tr(`console.family.${fam}`, fam) })) : null,
      families.get(fam).map((a) => h("option", { value: a }, actionName(a) === a ? a : `${actionName(a)} (${a})`)))));
  select.value = current;
  $("actors").replaceChildren(...["system:job-runner", "system:expiry-sweep", "system:authorization-server", "system:backup", "system:consent-service", "anonymous"]
    .map((a) => h("option", { value: a }, actorName(a))));
});

function readFilters() {
  const form = $("audit-form");
  const q = new URLSearchParams();
  for (const el of form.elements) {
    if (!el.name || !el.value.trim()) continue;
    fieldError(el, null);
    q.set(el.name, el.type === "datetime-local" ? new Date(el.value).toISOString() : el.value.trim());
  }
  q.set("limit", "50");
  return q;
}

// A 422 from the server names the bad filter: mark that input; the message says why.
function showFilterError(err) {
  const names = { since: "f-since", until: "f-until", action: "f-action", actor: "f-actor", partner: "f-partner", subject_id: "f-subject" };
  let marked = false;
  for (const e of err.errors || []) {
    const name = (e.loc || []).at(-1);
    if (names[name]) { fieldError($(names[name]), t("console.audit.badValue", { msg: e.msg })); marked = true; }
  }
  if (!marked && /since|until/.test(err.message)) { fieldError($("f-until"), t("console.audit.badRange")); marked = true; }
  $("audit-status").replaceChildren(h("p", { class: "error", role: "alert", id: "filter-error" }, t("console.audit.badFilter", { detail: err.message })));
}

const searchAudit = guard(() => $("audit-status"), async (more = false) => {
  clear($("audit-status"));
  if (!more) {
    for (const el of $("audit-form").elements) if (el.id) fieldError(el, null);
    state.query = readFilters();
    state.cursor = null;
    state.log = $("f-log").value;
  }
  const q = new URLSearchParams(state.query);
  if (state.cursor) q.set("cursor", state.cursor);
  let page;
  try {
    page = await api("/v1/audit/events?" + q.toString());
  } catch (err) {
    if (err instanceof ApiError && err.status === 422) {
      showFilterError(err);
      $("audit-results").replaceChildren();
      $("audit-more").hidden = true;
      return;
    }
    throw err;
  }
  const log = state.log;
  const rows = page.items.map((e) => h("tr", { class: "clickable", "data-index": e.index ?? "" },
    h("td", { "data-label": t("console.audit.col.index") }, h("button", { type: "button", class: "secondary", onclick: () => openEntry(e, log) }, e.index === null || e.index === undefined ? t("console.audit.pending") : `#${e.index}`)),
    h("td", { "data-label": t("console.audit.col.time") }, fmtTime(e.time)),
    h("td", { "data-label": t("console.audit.col.actor") }, log === "usage" ? labelOf("partner", e.partner) : actorName(e.actor)),
    h("td", { "data-label": t("console.audit.col.action") }, log === "usage" ? (e.fields || []).map((f) => labelOf("field", f)).join(", ") : actionName(e.action)),
    h("td", { "data-label": t("console.audit.col.target") }, log === "usage" ? labelOf("purpose", e.purpose) : targetName(e.target)),
    h("td", { "data-label": t("console.audit.col.result") }, e.result ?? e.decision ?? "")));
  for (const row of rows) row.addEventListener("click", (ev) => { if (!ev.target.closest("button")) row.querySelector("button").click(); });
  let tbody = $("audit-results").querySelector("tbody");
  if (!more || !tbody) {
    tbody = h("tbody", {});
    const cols = log === "usage" ? ["index", "time", "partner", "fields", "purpose", "result"] : ["index", "time", "actor", "action", "target", "result"];
    $("audit-results").replaceChildren(page.items.length ? h("table", { class: "stack", id: "audit-table" },
      h("thead", {}, h("tr", {}, cols.map((k) => h("th", { scope: "col" }, t(`console.audit.col.${k}`))))),
      tbody) : h("p", { class: "muted" }, t("console.audit.none")));
  }
  tbody.append(...rows);
  state.cursor = page.next_cursor;
  $("audit-more").hidden = !state.cursor;
});

// --- entry detail with its inclusion proof, verified in this browser ----------------------------------------
function entryFacts(entry) {
  const facts = [
    ["console.audit.col.time", fmtTime(entry.time)],
    ["console.audit.col.actor", entry.actor ? actorName(entry.actor) : ""],
    ["console.audit.col.action", entry.action ? actionName(entry.action) : ""],
    ["console.audit.col.target", targetName(entry.target)],
    ["console.audit.col.result", entry.result ?? entry.decision],
    ["console.entry.request", entry.request_id],
  ].filter(([, v]) => v !== undefined && v !== null && v !== "");
  return h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, t(k)), h("dd", {}, String(v))]));
}

async function openEntry(e, log) {
  const dialog = $("entry");
  const body = $("entry-body");
  const status = h("div", { id: "proof-result", role: "status" }, t("console.entry.checking"));
  body.replaceChildren(entryFacts(e), status);
  dialog.showModal();
  await guard(() => status, async () => {
    if (e.index === null || e.index === undefined) {
      status.replaceChildren(h("p", { class: "muted" }, t("console.entry.pending")));
      return;
    }
    const cp = await api(`/v1/audit/checkpoint?log=${log}`);
    const proof = await api(`/v1/audit/proofs/inclusion?log=${log}&index=${e.index}&tree_size=${cp.size}`);
    const bytes = new TextEncoder().encode(proof.entry || "");
    const leaf = await leafHash(bytes);
    const leafOk = bytesToHex(leaf) === proof.leaf_hash;
    const signed = JSON.parse(proof.entry || "{}");
    const sameEntry = ["time", "action", "actor", "target"].every((k) => signed[k] === undefined || signed[k] === e[k]);
    const checkpoint = parseCheckpoint(cp.note);
    const included = leafOk && await verifyInclusion(e.index, cp.size, leaf, proof.hashes.map(hexToBytes), checkpoint.root);
    const signature = await verifyNote(cp.note, cp.verifier_keys || []);
    const ok = leafOk && sameEntry && included && signature !== false;
    const line = (good, key, vars) => h("li", {}, `${good ? "✓" : "✗"} ${t(key, vars)}`);
    status.replaceChildren(
      h("p", { class: ok ? "ok" : "error", id: "proof-verdict" }, ok ? t("console.entry.verified", { index: e.index, size: cp.size }) : t("console.entry.failed")),
      h("ul", { class: "plain" },
        line(leafOk && sameEntry, "console.entry.leafOk", { hash: proof.leaf_hash.slice(0, 16) + "…" }),
        line(included, "console.entry.inclusionOk", { steps: proof.hashes.length, root: bytesToHex(checkpoint.root).slice(0, 16) + "…" }),
        signature === null ? h("li", {}, `? ${t("console.entry.sigUnknown")}`) : line(signature, "console.entry.sigOk", { origin: checkpoint.origin })),
      h("h3", {}, t("console.entry.signed")),
      h("pre", { class: "entry-json", tabindex: "0" }, JSON.stringify(signed, null, 2)),
      h("h3", {}, t("console.entry.checkpoint")),
      h("pre", { class: "entry-json", tabindex: "0" }, cp.note));
  })();
}

// --- export and verification ----------------------------------------------------------------------------
const exportAndVerify = guard(() => $("export-result"), async (event) => {
  event.preventDefault();
  const log = $("x-log").value;
  const out = $("export-result");
  clear(out);
  const checkpoint = await api(`/v1/audit/checkpoint?log=${log}`);
  const response = await apiResponse(`/v1/audit/export?log=${log}&format=jsonl`);
  const text = await response.text();
  const result = await verifyExport(text, checkpoint.verifier_keys || []);
  const save = h("button", { type: "button", class: "secondary" }, t("console.export.save"));
  save.addEventListener("click", () => saveFile(`${log}-export.jsonl`, text, "application/x-ndjson"));
  out.replaceChildren(
    h("p", { class: result.ok ? "ok" : "error", role: "status", id: "verify-result" },
      result.ok ? t("console.export.ok", { entries: result.entries, root: result.root.slice(0, 16) + "…" })
                : t("console.export.bad", { reason: result.reason })),
    result.ok ? h("p", { class: "muted" }, result.signature === true ? t("console.export.sigOk") : t("console.export.sigUnknown")) : null,
    h("pre", { class: "muted" }, `${checkpoint.note}`),
    save);
  for (const slot of document.querySelectorAll(".verify-slot")) slot.dataset.file = `${log}-export.jsonl`;
  await showVerifyBoxes();
});

// --- requests -------------------------------------------------------------------------------------------
function outcomeText(r) {
  const o = r.outcome || {};
  if (r.kind === "erasure") return t("console.requests.erased", { grants: o.grants_withdrawn ?? 0, decisions: o.decisions_deleted ?? 0, accounts: o.accounts_disabled ?? 0 });
  if (r.kind === "access") return t("console.requests.exported", { format: o.format || "" });
  return JSON.stringify(o);
}

const showRequests = guard(() => $("requests-status"), async () => {
  const kind = $("r-kind").value;
  const items = await api("/v1/compliance/requests" + (kind ? `?kind=${kind}` : ""));
  $("requests").replaceChildren(table(
    ["console.requests.col.ref", "console.requests.col.kind", "console.requests.col.subject", "console.requests.col.by", "console.requests.col.at", "console.requests.col.done", "console.requests.col.outcome"],
    items.map((r) => [`#${r.id}`, t(`console.requests.kind.${r.kind}`), `#${r.subject_id}`, actorName(r.requested_by), fmtTime(r.requested_at),
      r.completed_at ? fmtTime(r.completed_at) : t("console.requests.open"), outcomeText(r)]),
    "console.requests.none"));
});

// --- dashboards -----------------------------------------------------------------------------------------
function dayKey(iso) {
  return new Date(iso).toISOString().slice(0, 10);
}

const dashJobs = guard(() => $("dash-jobs"), async () => {
  const jobs = await api("/v1/jobs?limit=500");
  const statuses = ["queued", "running", "succeeded", "failed", "cancelled"];
  const counts = statuses.map((s) => jobs.filter((j) => j.status === s).length);
  const reasons = new Map();
  for (const j of jobs) if (j.error) reasons.set(j.error, (reasons.get(j.error) || 0) + 1);
  const chart = h("div", { class: "chart" });
  $("dash-jobs").replaceChildren(...[
    h("ul", { class: "kpis" }, statuses.map((s, i) => h("li", {}, h("strong", {}, fmtNumber(counts[i])), t(`console.jobs.${s}`)))),
    chart,
    reasons.size ? h("p", { class: "muted" }, t("console.dash.reasons"), " ", [...reasons].map(([code, n]) => `${tr(`partner.reason.${code}`, code)} (${n})`).join(" · ")) : null,
  ].filter(Boolean));
  bars(chart, statuses.map((s) => t(`console.jobs.${s}`)), [{ name: t("console.dash.jobCount"), values: counts }], { label: t("console.dash.jobs") });
});

const dashBudgets = guard(() => $("dash-budgets"), async () => {
  await catalog();
  const budgets = await api("/v1/privacy-budgets");
  if (!budgets.length) { $("dash-budgets").replaceChildren(h("p", { class: "muted" }, t("console.dash.noBudgets"))); return; }
  const chart = h("div", { class: "chart" });
  const labels = budgets.map((b) => `${labelOf("partner", b.partner_key)} · ${labelOf("purpose", b.purpose)}`);
  $("dash-budgets").replaceChildren(chart, table(["console.dash.col.who", "console.dash.col.spent", "console.dash.col.left"],
    budgets.map((b, i) => [labels[i], `ε ${fmtNumber(b.epsilon_spent)}`, `ε ${fmtNumber(b.epsilon_remaining)} / ${fmtNumber(b.epsilon_total)}`]), "console.dash.noBudgets"));
  bars(chart, budgets.map((b) => [labelOf("partner", b.partner_key), labelOf("purpose", b.purpose)]), [
    { name: t("console.dash.spent"), values: budgets.map((b) => b.epsilon_spent), color: "#b35900" },
    { name: t("console.dash.left"), values: budgets.map((b) => b.epsilon_remaining), color: "#1d7a46" },
  ], { label: t("console.dash.budgets"), horizontal: true, stacked: true });
});

const dashRequests = guard(() => $("dash-requests"), async () => {
  const items = await api("/v1/compliance/requests");
  const days = [];
  for (let i = 29; i >= 0; i--) days.push(new Date(Date.now() - i * 86400000).toISOString().slice(0, 10));
  const per = (kind) => days.map((d) => items.filter((r) => r.kind === kind && dayKey(r.requested_at) === d).length);
  const chart = h("div", { class: "chart" });
  $("dash-requests").replaceChildren(
    h("ul", { class: "kpis" }, ["access", "erasure"].map((k) => h("li", {}, h("strong", {}, fmtNumber(items.filter((r) => r.kind === k).length)), t(`console.requests.kind.${k}`)))),
    chart);
  const fmt = new Intl.DateTimeFormat(currentLang(), { month: "short", day: "numeric" });
  bars(chart, days.map((d) => fmt.format(new Date(`${d}T12:00:00Z`))), [
    { name: t("console.requests.kind.access"), values: per("access") },
    { name: t("console.requests.kind.erasure"), values: per("erasure") },
  ], { label: t("console.dash.requests"), stacked: true });
});

const showDash = async () => { await Promise.all([dashJobs(), dashBudgets(), dashRequests()]); };

// --- consent statistics ---------------------------------------------------------------------------------
const showStats = guard(() => $("stats-status"), async () => {
  await catalog();
  const by = $("s-by").value;
  const stats = await api("/v1/consents/stats?step_hours=24");
  const times = [...new Set(stats.series.map((p) => p.at))].sort();
  const groups = new Map();
  for (const p of stats.series) {
    const g = groups.get(p[by]) || new Map();
    const at = g.get(p.at) || { permitted: 0, subjects: 0 };
    at.permitted += p.permitted;
    at.subjects += p.subjects;
    g.set(p.at, at);
    groups.set(p[by], g);
  }
  if (!groups.size) {
    for (const id of ["stats-trend", "stats-chart", "stats-table"]) $(id).replaceChildren();
    $("stats-chart").replaceChildren(h("p", { class: "muted" }, t("console.stats.none")));
    return;
  }
  const rate = (g, at) => { const x = g.get(at); return x && x.subjects ? x.permitted / x.subjects : null; };
  const last = times[times.length - 1];
  const rows = [...groups.entries()].map(([key, g]) => ({ key, label: labelOf(by, key), series: times.map((at) => rate(g, at)), now: rate(g, last) || 0 }))
    .sort((a, b) => b.now - a.now);
  const fmt = new Intl.DateTimeFormat(currentLang(), { month: "short", day: "numeric" });
  trendLines($("stats-trend"), times.map((at) => fmt.format(new Date(at))), rows.slice(0, 8).map((r) => ({ name: r.label, values: r.series })),
    { label: t("console.stats.trendChart", { by: t(`console.stats.${by}`) }) });
  bars($("stats-chart"), rows.map((r) => r.label), [{ name: t("console.stats.rate"), values: rows.map((r) => Math.round(r.now * 1000) / 10) }],
    { label: t("console.stats.chart", { by: t(`console.stats.${by}`) }), horizontal: true, percent: true });
  $("stats-table").replaceChildren(table([`console.stats.${by}`, "console.stats.rate"],
    rows.map((r) => [r.label, `${(r.now * 100).toFixed(1)}%`]), "console.stats.none"));
});

// --- records of processing ------------------------------------------------------------------------------
const RECORD_COLUMNS = ["purpose", "purpose_label", "description", "legal_basis", "dpv_purpose", "data_categories", "fields", "special_categories",
  "recipients", "recipient_categories", "retention", "international_transfers", "safeguards"];

function retentionText(days) {
  if (days === 365) return t("console.records.year");
  if (days % 365 === 0) return t("console.records.years", { n: days / 365 });
  return t("console.records.days", { n: days });
}

// The server's fixed safeguard sentences (dataspace/compliance/service.py SAFEGUARDS) in the page's language.
const SAFEGUARDS = [["customer values encrypted", "encrypted"], ["partners receive only", "features"], ["partner models run", "sandbox"],
  ["partners see results only", "dp"], ["every use recorded", "ledger"]];
const safeguardText = (s) => {
  const hit = SAFEGUARDS.find(([start]) => s.startsWith(start));
  return hit ? t(`console.records.safeguard.${hit[1]}`) : s;
};

function retentionOf(r) {
  const days = (r.fields || []).map((f) => f.retention_days);
  return days.length ? t("console.records.upTo", { kept: retentionText(Math.max(...days)) }) : t("console.records.noFields");
}

function flat(value) {
  if (Array.isArray(value)) return value.map((v) => (typeof v === "object" && v ? v.label || v.key || "" : String(v))).join("; ");
  return value === null || value === undefined ? "" : String(value);
}

function csvCell(value) {
  const s = flat(value);
  return /[",\n;]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function recordsCsv(body) {
  const c = body.controller || {};
  const head = ["controller", "controller_address", "controller_email", "dpo", ...RECORD_COLUMNS];
  const lines = [head.join(",")];
  for (const r of body.records) lines.push([c.name, c.address, c.email, c.dpo, ...RECORD_COLUMNS.map((k) => r[k])].map(csvCell).join(","));
  return "\ufeff" + lines.join("\r\n") + "\r\n";  // a BOM so spreadsheets read the Chinese labels as UTF-8
}

function factList(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "" && !(Array.isArray(v) && !v.length))
    .flatMap(([k, v]) => [h("dt", {}, t(k)), h("dd", {}, Array.isArray(v) ? h("ul", { class: "plain" }, v.map((x) => h("li", {}, x))) : v)]));
}

const showRecords = guard(() => $("records-status"), async () => {
  await catalog();
  const body = await api("/v1/compliance/records-of-processing");
  state.records = body;
  const c = body.controller || {};
  $("records").replaceChildren(
    h("div", { class: "record", id: "controller" }, h("h3", {}, t("console.records.controller")), factList([
      ["console.records.name", c.name], ["console.records.address", c.address], ["console.records.email", c.email],
      ["console.records.phone", c.phone], ["console.records.dpo", c.dpo], ["console.records.notice", c.url],
      ["console.records.generated", fmtTime(body.generated_at)]])),
    ...body.records.map((r) => h("div", { class: "record" },
      h("h3", {}, labelOf("purpose", r.purpose) || r.purpose_label),
      factList([
        ["console.records.description", pick(state.catalog.purposes.find((p) => p.key === r.purpose), "description") || r.description],
        ["console.records.legal", [r.legal_basis, r.dpv_purpose].filter(Boolean).join(" · ")],
        ["console.records.categories", (r.data_categories || []).map((k) => labelOf("dimension", k)).join(", ")],
        ["console.records.data", (r.fields || []).map((f) => `${labelOf("field", f.key)} · ${t(`console.records.sens.${f.sensitivity}`)} · ${retentionText(f.retention_days)}`)],
        ["console.records.special", (r.special_categories || []).map((k) => labelOf("field", k))],
        ["console.records.recipients", (r.recipients || []).join(", ") || t("console.records.noRecipients")],
        ["console.records.recipientCategories", (r.recipient_categories || []).map((k) => labelOf("category", k)).join(", ")],
        ["console.records.storage", retentionOf(r)],
        ["console.records.transfers", String(r.international_transfers || "").startsWith("none") ? t("console.records.noTransfers") : r.international_transfers],
        ["console.records.security", (r.safeguards || []).map(safeguardText)],
        ["console.records.contracts", (r.contracts || []).map((x) => t("console.records.contract", { id: x.id, partner: labelOf("partner", x.partner), until: fmtTime(x.valid_until) }))],
      ]))));
});

function downloadRecords() {
  if (!state.records) return;
  saveFile("records-of-processing.csv", recordsCsv(state.records), "text/csv;charset=utf-8");
}

// --- wiring ---------------------------------------------------------------------------------------------
const loaders = {
  audit: async () => { await catalog(); await loadActions(); if (!state.query) await searchAudit(); },
  export: showVerifyBoxes,
  requests: showRequests,
  dash: async () => { await catalog(); await showDash(); },
  stats: showStats,
  records: async () => { await Promise.all([showRecords(), showVerifyBoxes()]); },
};

function view(signedIn, message) {
  $("signin").hidden = signedIn;
  $("app").hidden = !signedIn;
  $("signout").hidden = !signedIn;
  if (message) $("signin-error").replaceChildren(h("p", { class: "error", role: "alert" }, message));
}

async function main() {
  await initI18n();
  $("signin-button").addEventListener("click", () => signIn(CLIENT_ID));
  $("signout").addEventListener("click", async () => { await signOut(); view(false); });
  $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); searchAudit(false); });
  $("audit-more").addEventListener("click", () => searchAudit(true));
  $("f-log").addEventListener("change", () => { $("f-action").value = ""; loadActions(); });
  $("export-form").addEventListener("submit", exportAndVerify);
  $("s-by").addEventListener("change", showStats);
  $("r-kind").addEventListener("change", showRequests);
  $("records-csv").addEventListener("click", downloadRecords);
  $("records-print").addEventListener("click", () => window.print());
  document.addEventListener("signedout", () => view(false, t("error.signedOut")));
  const select = setupTabs($("tabs"), (name) => { state.tab = name; loaders[name](); });
  document.addEventListener("langchange", () => { state.query = null; if (currentSession()) loaders[state.tab](); });
  try {
    await completeSignIn();
  } catch (err) {
    view(false, describeError(err));
    return;
  }
  if (!currentSession()) { view(false); return; }
  view(true);
  select("audit");
}

main().catch(() => view(false, t("error.generic")));
