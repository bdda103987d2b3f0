// The compliance console: audit search, export with in-browser verification, consent statistics with a
// chart, records of processing.
import { api, apiResponse, saveFile } from "/static/api.js";
import { completeSignIn, currentSession, signIn, signOut } from "/static/auth.js";
import { fmtTime, initI18n, t } from "/static/i18n.js";
import { verifyExport } from "/static/merkle.js";
import { clear, describeError, fieldError, guard, h, setupTabs } from "/static/ui.js";

const CLIENT_ID = "console";
const $ = (id) => document.getElementById(id);
const state = { tab: "audit", cursor: null, query: null };

// --- audit search ---------------------------------------------------------------------------------------
function readFilters() {
  const form = $("audit-form");
  const q = new URLSearchParams();
  let valid = true;
  const subject = $("f-subject");
  fieldError(subject, null);
  fieldError($("f-until"), null);
  if (subject.value.trim() && !/^\d+$/.test(subject.value.trim())) {
    fieldError(subject, t("console.audit.badSubject"));
    valid = false;
  }
  const since = $("f-since").value;
  const until = $("f-until").value;
  if (since && until && new Date(since) >= new Date(until)) {
    fieldError($("f-until"), t("console.audit.badRange"));
    valid = false;
  }
  for (const el of form.elements) {
    if (!el.name || !el.value.trim()) continue;
    const value = el.type === "datetime-local" ? new Date(el.value).toISOString() : el.value.trim();
    q.set(el.name, value);
  }
  q.set("limit", "50");
  return valid ? q : null;
}

const searchAudit = guard(() => $("audit-status"), async (more = false) => {
  clear($("audit-status"));
  if (!more) {
    state.query = readFilters();
    state.cursor = null;
    if (!state.query) return;
  }
  const q = new URLSearchParams(state.query);
  if (state.cursor) q.set("cursor", state.cursor);
  const page = await api("/v1/audit/events?" + q.toString());
  const rows = page.items.map((e) => h("tr", {},
    h("td", {}, e.index ?? ""), h("td", {}, fmtTime(e.time)), h("td", {}, e.actor ?? ""),
    h("td", {}, e.action ?? e.field ?? ""), h("td", {}, e.target ?? e.partner ?? ""), h("td", {}, e.result ?? e.decision ?? "")));
  let tbody = $("audit-results").querySelector("tbody");
  if (!more || !tbody) {
    tbody = h("tbody", {});
    $("audit-results").replaceChildren(page.items.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["index", "time", "actor", "action", "target", "result"].map((k) => h("th", { scope: "col" }, t(`console.audit.col.${k}`))))),
      tbody) : h("p", { class: "muted" }, t("console.audit.none")));
  }
  tbody.append(...rows);
  state.cursor = page.next_cursor;
  $("audit-more").hidden = !state.cursor;
});

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
});

// --- consent statistics ---------------------------------------------------------------------------------
function barChart(rows, by) {
  const width = 640;
  const bar = 22;
  const labelWidth = 190;
  const height = rows.length * (bar + 6) + 10;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", t("console.stats.chart", { by: t(`console.stats.${by}`) }));
  rows.forEach(([key, rate], i) => {
    const y = 5 + i * (bar + 6);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "0");
    label.setAttribute("y", String(y + bar * 0.7));
    label.textContent = key;
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("class", "bar");
    rect.setAttribute("x", String(labelWidth));
    rect.setAttribute("y", String(y));
    rect.setAttribute("height", String(bar));
    rect.setAttribute("width", String(Math.max(1, rate * (width - labelWidth - 60))));
    const value = document.createElementNS(ns, "text");
    value.setAttribute("x", String(labelWidth + rate * (width - labelWidth - 60) + 6));
    value.setAttribute("y", String(y + bar * 0.7));
    value.textContent = `${(rate * 100).toFixed(1)}%`;
    svg.append(label, rect, value);
  });
  return svg;
}

const showStats = guard(() => $("stats-status"), async () => {
  const by = $("s-by").value;
  const stats = await api("/v1/consents/stats?step_hours=720");
  const latest = new Map();
  for (const p of stats.series) {
    const key = `${p.field}|${p.purpose}|${p.partner}`;
    const prev = latest.get(key);
    if (!prev || p.at > prev.at) latest.set(key, p);
  }
  const groups = new Map();
  for (const p of latest.values()) {
    const g = groups.get(p[by]) || { permitted: 0, subjects: 0 };
    g.permitted += p.permitted;
    g.subjects += p.subjects;
    groups.set(p[by], g);
  }
  const rows = [...groups.entries()].map(([k, g]) => [k, g.subjects ? g.permitted / g.subjects : 0]).sort((a, b) => b[1] - a[1]);
  if (!rows.length) {
    $("stats-chart").replaceChildren(h("p", { class: "muted" }, t("console.stats.none")));
    $("stats-table").replaceChildren();
    return;
  }
  $("stats-chart").replaceChildren(barChart(rows, by));
  $("stats-table").replaceChildren(h("table", {},
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t(`console.stats.${by}`)), h("th", { scope: "col" }, t("console.stats.rate")))),
    h("tbody", {}, rows.map(([k, r]) => h("tr", {}, h("td", {}, k), h("td", {}, `${(r * 100).toFixed(1)}%`))))));
});

// --- records of processing ------------------------------------------------------------------------------
const showRecords = guard(() => $("records-status"), async () => {
  const body = await api("/v1/compliance/records-of-processing");
  $("records").replaceChildren(h("table", {},
    h("thead", {}, h("tr", {}, ["purpose", "legal", "data", "recipients", "storage"].map((k) => h("th", { scope: "col" }, t(`console.records.col.${k}`))))),
    h("tbody", {}, body.records.map((r) => h("tr", {},
      h("td", {}, h("strong", {}, r.purpose_label || r.purpose), h("div", { class: "muted" }, r.description || "")),
      h("td", {}, [r.dpv_purpose, r.legal_basis].filter(Boolean).join(" · ")),
      h("td", {}, (r.fields || []).map((f) => f.label).join(", ") || "–"),
      h("td", {}, (r.recipients || []).join(", ") || "–"),
      h("td", {}, r.retention || ""))))));
});

// --- wiring ---------------------------------------------------------------------------------------------
const loaders = { audit: async () => { if (!state.query) await searchAudit(); }, export: async () => {}, stats: showStats, records: showRecords };

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
  $("export-form").addEventListener("submit", exportAndVerify);
  $("s-by").addEventListener("change", showStats);
  document.addEventListener("signedout", () => view(false, t("error.signedOut")));
  const select = setupTabs($("tabs"), (name) => { state.tab = name; loaders[name](); });
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
