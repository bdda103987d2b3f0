// The partner view: propose contracts from the catalog, upload models (signature check), submit jobs after a
// budget confirmation, follow them, read DP results as charts with their noise interval, see the budget.
// Job data follows the output-privacy rules (dataspace/jobs/outcomes.py): it shows what the API gives (a
// status, a fixed reason code, times on the release tick, noisy aggregates) and never derives counts.
import { ApiError, api } from "/static/api.js";
import { accessToken, completeSignIn, currentSession, signIn, signOut } from "/static/auth.js";
import { intervalBars } from "/static/charts.js";
import { currentLang, fmtNumber, fmtTime, initI18n, pick, t } from "/static/i18n.js";
import { announce, clear, describeError, fieldError, guard, h, setupTabs } from "/static/ui.js";
import { rangeQuery, renderDeliveries, renderPublished, renderReleases } from "/steward/collab.js";

const CLIENT_ID = "partner-view";
const $ = (id) => document.getElementById(id);
const state = { fields: [], purposes: [], contracts: [], models: [], budgets: [], jobs: [], tab: "contracts", poll: null };
const eps = (x) => Number(x).toLocaleString(currentLang(), { maximumFractionDigits: 3 });

// --- small builders -------------------------------------------------------------------------------------
// A table that becomes label/value rows on a phone (td[data-label], see workbench.css).
function table(columns, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, t(empty));
  return h("table", { class: "stack" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, t(c))))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell, i) => h("td", { "data-label": t(columns[i]) }, cell ?? ""))))));
}

const fieldByKey = (key) => state.fields.find((f) => f.key === key);
const purposeLabel = (key) => pick(state.purposes.find((p) => p.key === key), "label") || key;
const fieldLabel = (key) => pick(fieldByKey(key), "label") || key;
const list = (xs) => xs.map((x) => fmtNumber(x)).join(", ");

// A contract feature in words: "Age, in bands split at 30, 45, 60".
function featureText(f) {
  const name = fieldLabel(f.field);
  switch (f.transform) {
    case "bin": return t("partner.feature.bin", { field: name, edges: list(f.edges || []) });
    case "quantile": return t("partner.feature.quantile", { field: name, q: f.q });
    case "topcode": return t("partner.feature.topcode", { field: name, lower: f.lower ?? "–", upper: f.upper ?? "–", step: f.step ?? "–" });
    case "group": return t("partner.feature.group", { field: name, groups: Object.keys(f.groups || {}).join(", ") });
    case "identity": return t("partner.feature.identity", { field: name });
    default: return `${name}: ${f.transform}`;
  }
}

function decisionText(schema) {
  if (Array.isArray(schema.labels)) return t("partner.decision.labels", { labels: schema.labels.join(", ") });
  return t("partner.decision.range", { min: schema.min ?? schema.minimum, max: schema.max ?? schema.maximum });
}

const statusWord = (kind, status) => t(`partner.${kind}.status.${status}`);

// --- loading --------------------------------------------------------------------------------------------
async function loadCatalog() {
  if (state.fields.length) return;
  const [fields, purposes] = await Promise.all([api("/v1/catalog/fields"), api("/v1/catalog/purposes")]);
  state.fields = fields.filter((f) => f.status !== "retired");
  state.purposes = purposes;
}

async function loadMine() {
  const [contracts, models, budgets] = await Promise.all([api("/v1/partner/contracts"), api("/v1/partner/models"), api("/v1/partner/budget")]);
  state.contracts = contracts;
  state.models = models;
  state.budgets = budgets;
}

// --- contracts ------------------------------------------------------------------------------------------
const showContracts = guard(() => $("contracts"), async () => {
  await loadCatalog();
  await loadMine();
  const rows = state.contracts.map((c) => [
    h("span", {}, h("strong", {}, c.title || purposeLabel(c.purpose)), h("div", { class: "muted" }, `#${c.id}`)),
    purposeLabel(c.purpose),
    h("span", { class: `badge status-${c.status}` }, statusWord("contract", c.status)),
    h("ul", { class: "plain" }, c.features.map((f) => h("li", {}, featureText(f)))),
    decisionText(c.decision_schema),
    t("partner.contracts.kValue", { k: fmtNumber(c.k_min) }),
    `ε ${eps(c.epsilon_per_release)}`,
    fmtTime(c.valid_until),
  ]);
  $("contracts").replaceChildren(table(
    ["partner.col.contract", "partner.col.purpose", "partner.col.status", "partner.col.features", "partner.col.decides", "partner.col.k", "partner.col.eps", "partner.col.validUntil"],
    rows, "partner.contracts.none"));
});

// --- propose --------------------------------------------------------------------------------------------
const TRANSFORM_ORDER = ["bin", "quantile", "topcode", "group", "identity"];

function paramInputs(field, transform) {
  const id = (name) => `pf-${field.key}-${name}`;
  const limits = (field.transforms || {})[transform] || {};
  const hint = (key, vars) => h("span", { class: "help" }, t(key, vars));
  const box = (name, label, input, help) => h("div", {}, h("label", { for: id(name) }, t(label)), input, help);
  const maxValues = limits.max_values;
  switch (transform) {
    case "bin":
      return [box("edges", "partner.param.edges", h("input", { id: id("edges"), "data-param": "edges", inputmode: "decimal", placeholder: "30, 45, 60" }),
        hint("partner.param.edgesHelp", { max: maxValues ? maxValues - 1 : "–", width: limits.min_width ?? "–" }))];
    case "quantile":
      return [box("q", "partner.param.q", h("input", { id: id("q"), "data-param": "q", type: "number", min: 2, max: maxValues || 100, step: 1, value: Math.min(4, maxValues || 4) }),
        hint("partner.param.qHelp", { max: maxValues || 100 }))];
    case "topcode":
      return [
        box("lower", "partner.param.lower", h("input", { id: id("lower"), "data-param": "lower", type: "number", step: "any" })),
        box("upper", "partner.param.upper", h("input", { id: id("upper"), "data-param": "upper", type: "number", step: "any" })),
        box("step", "partner.param.step", h("input", { id: id("step"), "data-param": "step", type: "number", step: "any", min: limits.min_step || 0 }),
          hint("partner.param.stepHelp", { step: limits.min_step ?? "–", max: maxValues ?? "–" })),
      ];
    case "group":
      return [box("groups", "partner.param.groups", h("textarea", { id: id("groups"), "data-param": "groups", rows: 3, placeholder: "north: Beijing, Tianjin\nsouth: Guangzhou, Shenzhen" }),
        hint("partner.param.groupsHelp", { members: limits.min_members ?? 1, max: maxValues ?? "–" }))];
    default:
      return [hint("partner.param.identityHelp", {})];
  }
}

function fieldChooser(field) {
  const allowed = TRANSFORM_ORDER.filter((name) => name in (field.transforms || {}));
  const promise = (field.shared_as || {})[currentLang()] || (field.shared_as || {}).en || "";
  const use = h("input", { type: "checkbox", id: `pf-${field.key}`, "data-field": field.key, disabled: !allowed.length });
  const select = h("select", { id: `pf-${field.key}-transform`, disabled: true },
    allowed.map((name) => h("option", { value: name }, t(`partner.transform.${name}`))));
  const params = h("div", { class: "grid-form params" });
  const refresh = () => {
    select.disabled = !use.checked;
    params.hidden = !use.checked;
    params.replaceChildren(...paramInputs(field, select.value));
  };
  use.addEventListener("change", refresh);
  select.addEventListener("change", refresh);
  refresh();
  return h("fieldset", { class: "field-choice", "data-key": field.key },
    h("legend", {}, h("label", { class: "inline", for: use.id }, use, " ", pick(field, "label")),
      field.sensitivity === "sensitive" ? h("span", { class: "badge sensitive" }, t("partner.propose.sensitive")) : null),
    h("p", { class: "promise" }, allowed.length ? promise : t("partner.propose.notShared")),
    allowed.length ? h("div", {}, h("label", { for: select.id }, t("partner.propose.transform")), select) : null,
    params);
}

const showPropose = guard(() => $("propose-status"), async () => {
  await loadCatalog();
  if (!$("p-purpose").options.length) {
    $("p-purpose").replaceChildren(...state.purposes.map((p) => h("option", { value: p.key }, pick(p, "label"))));
    const until = new Date(Date.now() + 180 * 86400000);
    $("p-until").value = until.toISOString().slice(0, 10);
  }
  if (!$("p-fields").children.length) $("p-fields").replaceChildren(...state.fields.map(fieldChooser));
});

const numbers = (text) => text.split(/[,，\s]+/).filter(Boolean).map(Number);

// One feature from its fieldset, or throws {input, message} for an inline error.
function readFeature(set) {
  const key = set.dataset.key;
  const field = fieldByKey(key);
  const transform = $(`pf-${key}-transform`).value;
  const limits = (field.transforms || {})[transform] || {};
  const get = (name) => $(`pf-${key}-${name}`);
  const bad = (name, message) => { throw { input: get(name), message }; };
  const feature = { field: key, transform };
  if (transform === "bin") {
    const edges = numbers(get("edges").value);
    if (!edges.length || edges.some((x) => !Number.isFinite(x))) bad("edges", t("partner.param.badNumbers"));
    if (edges.some((x, i) => i && x <= edges[i - 1])) bad("edges", t("partner.param.increasing"));
    if (limits.max_values && edges.length + 1 > limits.max_values) bad("edges", t("partner.param.tooFine", { max: limits.max_values }));
    if (limits.min_width && edges.some((x, i) => i && x - edges[i - 1] < limits.min_width)) bad("edges", t("partner.param.tooNarrow", { width: limits.min_width }));
    feature.edges = edges;
  } else if (transform === "quantile") {
    const q = Number(get("q").value);
    if (!Number.isInteger(q) || q < 2 || (limits.max_values && q > limits.max_values)) bad("q", t("partner.param.tooFine", { max: limits.max_values || 100 }));
    feature.q = q;
  } else if (transform === "topcode") {
    for (const name of ["lower", "upper", "step"]) {
      const raw = get(name).value.trim();
      if (raw) feature[name] = Number(raw);
    }
    if (feature.lower === undefined && feature.upper === undefined) bad("upper", t("partner.param.needBound"));
    if (limits.min_step && !(feature.step >= limits.min_step)) bad("step", t("partner.param.stepTooSmall", { step: limits.min_step }));
  } else if (transform === "group") {
    const groups = {};
    for (const line of get("groups").value.split("\n")) {
      const [label, rest] = line.split(/[:：]/);
      if (!label || !label.trim() || rest === undefined) continue;
      groups[label.trim()] = rest.split(/[,，]/).map((x) => x.trim()).filter(Boolean);
    }
    if (!Object.keys(groups).length) bad("groups", t("partner.param.needGroups"));
    feature.groups = groups;
  }
  return feature;
}

const propose = guard(() => $("propose-status"), async (event) => {
  event.preventDefault();
  const status = $("propose-status");
  clear(status);
  for (const el of $("propose-form").querySelectorAll("[aria-invalid]")) fieldError(el, null);
  const features = [];
  try {
    for (const set of $("p-fields").querySelectorAll("fieldset.field-choice")) {
      if ($(`pf-${set.dataset.key}`).checked) features.push(readFeature(set));
    }
  } catch (problem) {
    if (problem && problem.input) { fieldError(problem.input, problem.message); problem.input.focus(); return; }
    throw problem;
  }
  if (!features.length) {
    status.replaceChildren(h("p", { class: "error", role: "alert" }, t("partner.propose.noFields")));
    return;
  }
  const kind = document.querySelector("input[name=p-kind]:checked").value;
  const decision = kind === "labels"
    ? { labels: $("p-labels").value.split(/[,，]/).map((x) => x.trim()).filter(Boolean) }
    : { min: Number($("p-min").value), max: Number($("p-max").value) };
  const body = {
    purpose: $("p-purpose").value,
    title: $("p-title").value.trim(),
    features,
    decision_schema: decision,
    k_min: Number.parseInt($("p-k").value, 10),
    epsilon_per_release: Number($("p-eps").value),
    valid_until: new Date(`${$("p-until").value}T23:59:59Z`).toISOString(),
  };
  const c = await api("/v1/partner/contracts", { method: "POST", body });
  const message = t("partner.propose.done", { id: c.id, approvals: c.required_approvals });
  status.replaceChildren(h("p", { class: "ok", role: "status", id: "propose-done" }, message));
  announce(message);
  state.contracts = [];
});

// --- models ---------------------------------------------------------------------------------------------
function signatureText(m) {
  const s = m.signature || {};
  if (m.kind === "onnx") {
    const input = (s.inputs || [])[0];
    return t("partner.models.onnxOk", { features: s.feature_count ?? "–", input: input ? `${input.name} ${JSON.stringify(input.shape)}` : "–", output: s.output_name || "–" });
  }
  return t("partner.models.pythonOk", { features: (s.feature_names || []).join(", ") });
}

const showModels = guard(() => $("models"), async () => {
  await loadCatalog();
  await loadMine();
  const select = $("m-contract");
  const current = select.value;
  select.replaceChildren(...state.contracts.filter((c) => c.status === "approved").map((c) => h("option", { value: c.id }, `#${c.id} ${c.title || purposeLabel(c.purpose)}`)));
  if (current) select.value = current;
  $("models").replaceChildren(table(
    ["partner.col.model", "partner.col.contract", "partner.col.kind", "partner.col.status", "partner.col.signature", "partner.col.uploaded"],
    state.models.map((m) => [`#${m.id}`, `#${m.contract_id}`, t(`partner.models.${m.kind}Short`),
      h("span", { class: `badge status-${m.status}` }, statusWord("model", m.status)), signatureText(m), fmtTime(m.created_at)]),
    "partner.models.none"));
});

// The model is the raw request body; api() sends JSON only, so this one call builds its own request.
async function uploadBytes(contractId, kind, bytes) {
  const token = await accessToken();
  const response = await fetch(`/v1/partner/models?contract_id=${encodeURIComponent(contractId)}&kind=${kind}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json", "Content-Type": "application/octet-stream" },
    body: bytes,
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

const upload = guard(() => $("upload-status"), async (event) => {
  event.preventDefault();
  const status = $("upload-status");
  clear(status);
  fieldError($("m-file"), null);
  const file = $("m-file").files[0];
  if (!file) { fieldError($("m-file"), t("partner.models.noFile")); return; }
  if (!$("m-contract").value) { status.replaceChildren(h("p", { class: "error", role: "alert" }, t("partner.models.noContract"))); return; }
  let model;
  try {
    model = await uploadBytes($("m-contract").value, $("m-kind").value, await file.arrayBuffer());
  } catch (err) {
    if (err instanceof ApiError && err.status === 422) {
      status.replaceChildren(h("p", { class: "error", role: "alert", id: "upload-result" }, t("partner.models.rejected", { reason: err.message })));
      return;
    }
    throw err;
  }
  const message = model.status === "ready" ? t("partner.models.ready", { id: model.id }) : t("partner.models.review", { id: model.id });
  status.replaceChildren(h("div", { class: "ok", role: "status", id: "upload-result" }, h("strong", {}, message), h("div", {}, signatureText(model))));
  announce(message);
  await showModels();
});

// --- jobs -----------------------------------------------------------------------------------------------
const usable = (m) => ["ready", "approved"].includes(m.status) && state.contracts.some((c) => c.id === m.contract_id && c.status === "approved");

function progress(j) {
  const steps = ["submitted", "waiting", "done"];
  const at = j.status === "queued" || j.status === "running" ? 1 : 2;
  return h("ol", { class: "steps", "aria-label": t("partner.jobs.progress") }, steps.map((s, i) =>
    h("li", { class: i < at ? "done" : i === at ? "current" : "", "aria-current": i === at ? "step" : null },
      i === 2 && at === 2 ? statusWord("job", j.status) : t(`partner.jobs.step.${s}`))));
}

const showJobs = guard(() => $("jobs"), async () => {
  await loadCatalog();
  const [jobs] = await Promise.all([api("/v1/partner/jobs"), loadMine()]);
  state.jobs = jobs;
  const select = $("j-model");
  const current = select.value;
  select.replaceChildren(...state.models.filter(usable).map((m) => {
    const c = state.contracts.find((x) => x.id === m.contract_id);
    return h("option", { value: m.id }, t("partner.jobs.modelOption", { id: m.id, contract: c.title || `#${c.id}`, eps: eps(c.epsilon_per_release) }));
  }));
  if (current) select.value = current;
  $("jobs").replaceChildren(table(
    ["partner.col.job", "partner.col.model", "partner.col.submitted", "partner.col.progress", "partner.col.outcome"],
    jobs.map((j) => [
      `#${j.id}`, `#${j.model_id} · #${j.contract_id}`, fmtTime(j.created_at), progress(j),
      j.status === "succeeded"
        ? h("button", { type: "button", class: "secondary", "data-job": j.id, onclick: () => showResult(j.id) }, t("partner.jobs.release"))
        : j.error ? h("span", {}, t(`partner.reason.${j.error}`)) : j.finished_at ? fmtTime(j.finished_at) : t("partner.jobs.pending"),
    ]),
    "partner.jobs.none"));
  schedulePoll();
});

// Follow progress: poll while a job waits for its outcome and the jobs tab is open.
function schedulePoll() {
  clearTimeout(state.poll);
  const waiting = state.jobs.some((j) => j.status === "queued" || j.status === "running");
  if (waiting && state.tab === "jobs") state.poll = setTimeout(() => showJobs(), 4000);
}

function confirmSpend(text, after, ok, enabled) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-after").textContent = after;
  $("confirm-ok").textContent = ok;
  $("confirm-ok").disabled = !enabled;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

const submitJob = guard(() => $("job-status"), async (event) => {
  event.preventDefault();
  const status = $("job-status");
  clear(status);
  const model = state.models.find((m) => String(m.id) === $("j-model").value);
  if (!model) { status.replaceChildren(h("p", { class: "error", role: "alert" }, t("partner.jobs.noModel"))); return; }
  await loadMine();  // the budget as it is now, not as it was when the tab opened
  const contract = state.contracts.find((c) => c.id === model.contract_id);
  const budget = state.budgets.find((b) => b.purpose === contract.purpose);
  const cost = Number(contract.epsilon_per_release);
  const left = budget ? Number(budget.epsilon_remaining) : 0;
  const enough = left + 1e-9 >= cost;
  const ok = await confirmSpend(
    t("partner.confirm.text", { eps: eps(cost), purpose: purposeLabel(contract.purpose) }),
    enough ? t("partner.confirm.left", { left: eps(left), after: eps(Math.max(0, left - cost)) }) : t("partner.confirm.short", { left: eps(left) }),
    t("partner.confirm.ok", { eps: eps(cost) }),
    enough);
  if (!ok) { announce(t("partner.confirm.cancelled")); return; }
  const job = await api("/v1/partner/jobs", { method: "POST", body: { model_id: model.id } });
  const message = t("partner.jobs.submitted", { id: job.id, eps: eps(cost) });
  status.replaceChildren(h("p", { class: "ok", role: "status" }, message));
  announce(message);
  await showJobs();
});

// --- results --------------------------------------------------------------------------------------------
async function showResult(jobId) {
  const panel = $("result");
  panel.hidden = false;
  await guard(() => panel, async () => {
    const release = await api(`/v1/partner/jobs/${jobId}/results`);
    const r = release.result || {};
    const noise = release.noise || {};
    const w = noise.count || 0;
    const chart = h("div", { class: "chart", id: "result-chart" });
    const intro = h("p", { class: "muted" }, t("partner.result.noise", { eps: eps(release.epsilon), width: eps(w), confidence: Math.round((noise.confidence || 0.95) * 100) }));
    let rows;
    let tableEl;
    if (r.kind === "label_counts") {
      rows = Object.entries(r.counts || {}).map(([label, n]) => ({ label, value: n, low: n === null ? null : Math.max(0, n - w), high: n === null ? null : n + w }));
      tableEl = table(["partner.result.label", "partner.result.count", "partner.result.interval"],
        rows.map((x) => [x.label, x.value === null ? t("partner.result.suppressed", { k: r.k_min }) : fmtNumber(x.value),
          x.value === null ? "–" : `${fmtNumber(Math.round(x.low))} – ${fmtNumber(Math.round(x.high))}`]), "partner.result.none");
    } else if (r.suppressed) {
      rows = [];
      tableEl = h("p", {}, t("partner.result.meanSuppressed", { k: r.k_min }));
    } else {
      const mw = noise.mean || 0;
      rows = [{ label: t("partner.result.mean"), value: r.mean, low: r.mean - mw, high: r.mean + mw }];
      tableEl = table(["partner.result.label", "partner.result.value", "partner.result.interval"], [
        [t("partner.result.count"), fmtNumber(r.count), `${fmtNumber(Math.max(0, Math.round(r.count - w)))} – ${fmtNumber(Math.round(r.count + w))}`],
        [t("partner.result.mean"), fmtNumber(r.mean), `${fmtNumber(r.mean - mw)} – ${fmtNumber(r.mean + mw)}`],
      ], "partner.result.none");
    }
    panel.replaceChildren(h("h3", { id: "result-title", tabindex: "-1" }, t("partner.result.title", { id: jobId })), intro, chart, h("div", { class: "table-wrap" }, tableEl));
    if (rows.length) {
      intervalBars(chart, rows, {
        label: t("partner.result.chart", { id: jobId }),
        valueName: r.kind === "label_counts" ? t("partner.result.count") : t("partner.result.mean"),
        intervalName: t("partner.result.interval"),
      });
    }
    $("result-title").focus();
  })();
}

// --- budget ---------------------------------------------------------------------------------------------
const showBudget = guard(() => $("budget"), async () => {
  await loadCatalog();
  await loadMine();
  if (!state.budgets.length) { $("budget").replaceChildren(h("p", { class: "muted" }, t("partner.budget.none"))); return; }
  $("budget").replaceChildren(h("div", { class: "cards" }, state.budgets.map((b) => {
    const id = `meter-${b.purpose}`;
    const perJob = state.contracts.filter((c) => c.purpose === b.purpose && c.status === "approved").map((c) => Number(c.epsilon_per_release));
    const cheapest = perJob.length ? Math.min(...perJob) : null;
    return h("div", { class: "card budget-card" },
      h("h3", { id: `${id}-label` }, purposeLabel(b.purpose)),
      h("meter", { id, min: 0, max: b.epsilon_total || 1, value: b.epsilon_remaining, low: (b.epsilon_total || 1) * 0.2, high: (b.epsilon_total || 1) * 0.5, optimum: b.epsilon_total || 1, "aria-labelledby": `${id}-label` }),
      h("p", { class: "budget-left" }, t("partner.budget.left", { left: eps(b.epsilon_remaining), total: eps(b.epsilon_total), spent: eps(b.epsilon_spent) })),
      cheapest ? h("p", { class: "muted" }, t("partner.budget.jobs", { n: fmtNumber(Math.floor((b.epsilon_remaining + 1e-9) / cheapest)), eps: eps(cheapest) })) : null);
  })));
});

// --- collaboration dashboard ------------------------------------------------------------------------------
const releaseNumbers = guard(() => $("collab-status"), async (contractId, button) => {
  const group = state.collab.customer_numbers.find((g) => g.contract_id === contractId);
  const left = group.epsilon_remaining;
  const enough = left === null || left + 1e-9 >= group.release_epsilon;
  const ok = await confirmSpend(
    t("collab.confirm", { eps: eps(group.release_epsilon) }),
    left === null ? "" : enough ? t("partner.confirm.left", { left: eps(left), after: eps(Math.max(0, left - group.release_epsilon)) }) : t("partner.confirm.short", { left: eps(left) }),
    t("collab.release", { eps: eps(group.release_epsilon) }),
    enough);
  if (!ok) return;
  button.disabled = true;
  await api(`/v1/partner/collaboration/${contractId}/releases`, { method: "POST" });
  await showCollab();
  announce(t("collab.released"));
});

const showCollab = guard(() => $("collab-status"), async () => {
  clear($("collab-status"));
  const data = await api(`/v1/partner/collaboration?${rangeQuery($("collab-range").value)}`);
  state.collab = data;
  $("collab-deliveries").replaceChildren();
  $("collab-releases").replaceChildren();
  renderDeliveries($("collab-deliveries"), data, { showPartner: false });
  $("collab-published-box").hidden = !data.published.length;
  $("collab-published").replaceChildren();
  renderPublished($("collab-published"), data);
  if (!data.customer_numbers.length) $("collab-releases").append(h("p", { class: "muted" }, t("collab.noDecisionContracts")));
  for (const group of data.customer_numbers) renderReleases($("collab-releases"), group, releaseNumbers);
});

// --- wiring ---------------------------------------------------------------------------------------------
const loaders = { contracts: showContracts, propose: showPropose, models: showModels, jobs: showJobs, budget: showBudget, collab: showCollab };

function view(signedIn, message) {
  $("signin").hidden = signedIn;
  $("app").hidden = !signedIn;
  $("signout").hidden = !signedIn;
  if (message) $("signin-error").replaceChildren(h("p", { class: "error", role: "alert" }, message));
}

function toggleDecisionKind() {
  const labels = document.querySelector("input[name=p-kind]:checked").value === "labels";
  $("p-labels-box").hidden = !labels;
  $("p-range-box").hidden = labels;
  $("p-range-box2").hidden = labels;
}

async function main() {
  await initI18n();
  $("signin-button").addEventListener("click", () => signIn(CLIENT_ID));
  $("signout").addEventListener("click", async () => { await signOut(); view(false); });
  $("propose-form").addEventListener("submit", propose);
  $("upload-form").addEventListener("submit", upload);
  $("job-form").addEventListener("submit", submitJob);
  $("collab-range").addEventListener("change", showCollab);
  for (const radio of document.querySelectorAll("input[name=p-kind]")) radio.addEventListener("change", toggleDecisionKind);
  document.addEventListener("signedout", () => view(false, t("error.signedOut")));
  const select = setupTabs($("tabs"), (name) => { state.tab = name; loaders[name](); });
  document.addEventListener("langchange", () => {
    $("p-fields").replaceChildren();  // rebuilt in the new language on the next visit
    $("p-purpose").replaceChildren();
    $("result").hidden = true;  // shown again, in the new language, when asked for
    for (const id of ["propose-status", "upload-status", "job-status"]) clear($(id));
    $("result").replaceChildren();
    if (currentSession()) loaders[state.tab]();
  });
  try {
    await completeSignIn();
  } catch (err) {
    view(false, describeError(err));
    return;
  }
  if (!currentSession()) { view(false); return; }
  view(true);
  select("contracts");
}

main().catch(() => view(false, t("error.generic")));
