// The customer portal ("My data"): data manual with consent switches, history and receipts, usage ledger
// with proofs, points and rewards, data export and erasure.
import { api, ApiError, apiResponse, saveFile, StepUpRequired } from "/static/api.js";
import { completeSignIn, currentSession, signIn, signOut, takeResume } from "/static/auth.js";
import { currentLang, fmtNumber, fmtTime, initI18n, pick, t } from "/static/i18n.js";
import { bytesToHex, checkAgainstMemory, hexToBytes, parseCheckpoint, verifyInclusion, verifyNote } from "/static/merkle.js";
import { announce, clear, describeError, fieldError, guard, h, setupTabs, showError } from "/static/ui.js";

const CLIENT_ID = "portal";
// Everything the portal does; redeem and erase also need a recent sign-in (the server answers 401 with
// max_age otherwise, and the portal signs in again and then retries the action).
const SCOPE = "catalog consents usage points redeem erase";
const stepUp = (err, resume) => signIn(CLIENT_ID, SCOPE, { prompt: "login", maxAge: err.maxAge, resume });
const $ = (id) => document.getElementById(id);
const state = { matrix: null, manual: null, points: null, tab: "manual" };

// --- data manual and switches ---------------------------------------------------------------------------
function cellFor(field, purpose, partner) {
  return state.matrix.cells.find((c) => c.field === field && c.purpose === purpose && c.partner === partner);
}

function endDateValue(input) {
  // Returns [isoString|null, errorMessage|null]; the date means "until the end of that day".
  const v = input.value.trim();
  if (!v) return [null, null];
  const end = new Date(v + "T23:59:59");
  if (Number.isNaN(end.getTime())) return [null, t("portal.manual.badDate")];
  if (end.getTime() <= Date.now()) return [null, t("portal.manual.pastDate")];
  return [end.toISOString(), null];
}

async function toggle(sw, field, purpose, partner, untilInput) {
  const status = $("manual-status");
  clear(status);
  sw.disabled = true;
  try {
    if (sw.checked) {
      const [until, problem] = endDateValue(untilInput);
      fieldError(untilInput, problem);
      if (problem) {
        sw.checked = false;
        untilInput.focus();
        return;
      }
      const body = { field, purpose, partner };
      if (until) body.valid_until = until;
      const change = await api("/v1/me/consents", { method: "POST", body });
      announce(t("portal.manual.granted", { receipt: change.receipt_id }));
    } else {
      const cell = cellFor(field, purpose, partner);
      for (const id of cell ? cell.grant_ids : []) await api(`/v1/me/consents/${id}`, { method: "DELETE" });
      announce(t("portal.manual.withdrawn"));
    }
    await loadMatrix();
    renderManual();
    const again = document.getElementById(sw.id);
    if (again) again.focus();
  } catch (err) {
    sw.checked = !sw.checked;
    if (err instanceof ApiError && err.status === 422) {
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

function fieldCard(field) {
  const untilId = `until-${field.key}`;
  const until = h("input", { type: "date", id: untilId, name: untilId });
  const switches = h("div", { class: "switches", role: "group", "aria-label": t("portal.manual.switchesFor", { field: pick(field, "label") }) });
  for (const partner of state.matrix.partners) {
    for (const purpose of state.matrix.purposes) {
      const cell = cellFor(field.key, purpose.key, partner.key);
      const id = `sw-${field.key}-${purpose.key}-${partner.key}`;
      const sw = h("input", { type: "checkbox", role: "switch", id, dataset: { field: field.key, purpose: purpose.key, partner: partner.key } });
      sw.checked = Boolean(cell && cell.permitted);
      sw.setAttribute("aria-checked", String(sw.checked));
      sw.addEventListener("change", () => {
        sw.setAttribute("aria-checked", String(sw.checked));
        toggle(sw, field.key, purpose.key, partner.key, until);
      });
      switches.append(h("div", { class: "switch-row" }, sw,
        h("label", { for: id }, t("portal.manual.switchLabel", { partner: partner.name, purpose: pick(purpose, "label") }))));
    }
  }
  const granted = state.matrix.cells.filter((c) => c.field === field.key && c.permitted).length;
  return h("details", { class: "field", id: `field-${field.key}` },
    h("summary", {},
      h("span", { class: "label" }, pick(field, "label")),
      h("span", {},
        field.sensitivity === "sensitive" ? h("span", { class: "badge sensitive" }, t("portal.manual.sensitive")) : null, " ",
        h("span", { class: "badge" }, t("portal.manual.points", { points: field.points_value })), " ",
        h("span", { class: "muted" }, t("portal.manual.sharedWith", { n: granted })))),
    h("div", { class: "body" },
      h("dl", { class: "facts" },
        h("dt", {}, t("portal.manual.what")), h("dd", {}, pick(field, "description")),
        h("dt", {}, t("portal.manual.why")), h("dd", {}, pick(field, "collection_purpose")),
        h("dt", {}, t("portal.manual.usedFor")), h("dd", {}, (field.used_for || []).join(", ")),
        h("dt", {}, t("portal.manual.where")), h("dd", {}, pick(field, "storage_location")),
        h("dt", {}, t("portal.manual.who")), h("dd", {}, pick(field, "sharing_scope")),
        h("dt", {}, t("portal.manual.how")), h("dd", { class: "promise" }, sharedAs(field)),
        h("dt", {}, t("portal.manual.retention")), h("dd", {}, t("portal.manual.days", { n: field.retention_days })),
        h("dt", {}, t("portal.manual.value")), h("dd", {}, t("portal.manual.points", { points: field.points_value }))),
      h("div", { class: "until" },
        h("label", { for: untilId }, t("portal.manual.until")), " ", until),
      switches));
}

function renderManual() {
  const root = $("manual");
  const open = new Set([...root.querySelectorAll("details[open]")].map((d) => d.id));
  const dims = state.manual || [];
  const byDim = new Map();
  for (const f of state.matrix.fields) {
    if (!byDim.has(f.dimension)) byDim.set(f.dimension, []);
    byDim.get(f.dimension).push(f);
  }
  const sections = [];
  const known = new Set(dims.map((d) => d.key));
  const order = [...dims, ...[...byDim.keys()].filter((k) => !known.has(k)).map((k) => ({ key: k, label: k }))];
  for (const dim of order) {
    const fields = byDim.get(dim.key) || [];
    if (!fields.length) continue;
    sections.push(h("section", { class: "dimension", "aria-labelledby": `dim-${dim.key}` },
      h("h3", { id: `dim-${dim.key}` }, pick(dim, "label")),
      h("p", { class: "muted" }, pick(dim, "description")),
      fields.map(fieldCard)));
  }
  root.replaceChildren(...sections);
  for (const id of open) { const d = document.getElementById(id); if (d) d.open = true; }
}

async function loadMatrix() {
  state.matrix = await api("/v1/me/consents");
}

const showManual = guard(() => $("manual-status"), async () => {
  const [matrix, manual] = await Promise.all([api("/v1/me/consents"), api("/v1/catalog/manual").catch(() => [])]);
  state.matrix = matrix;
  state.manual = manual;
  renderManual();
});

// --- history and receipts -------------------------------------------------------------------------------
const showHistory = guard(() => $("history-status"), async () => {
  if (!state.matrix) await loadMatrix();
  const events = await api("/v1/me/consents/history");
  if (!events.length) {
    $("history").replaceChildren(h("p", { class: "muted" }, t("portal.history.empty")));
    return;
  }
  const rows = events.map((e) => {
    const download = h("button", { type: "button", class: "secondary", "aria-label": t("portal.history.receiptFor", { id: e.receipt_id }) }, t("portal.history.receipt"));
    download.addEventListener("click", guard(() => $("history-status"), async () => {
      const receipt = await api(`/v1/me/receipts/${encodeURIComponent(e.receipt_id)}`);
      saveFile(`receipt-${e.receipt_id}.json`, typeof receipt === "string" ? receipt : JSON.stringify(receipt, null, 2));
      announce(t("portal.history.downloaded"));
    }));
    return h("tr", {},
      h("td", {}, fmtTime(e.at)),
      h("td", {}, t(`portal.history.kind.${e.kind}`)),
      h("td", {}, [e.field || e.dimension, e.purpose, e.partner || e.partner_category].filter(Boolean).join(" · ")),
      h("td", {}, e.valid_until ? fmtTime(e.valid_until) : "–"),
      h("td", {}, download));
  });
  $("history").replaceChildren(h("table", {},
    h("thead", {}, h("tr", {}, ["when", "what", "scope", "until", "now", "receipt"].map((k) => h("th", { scope: "col" }, t(`portal.history.col.${k}`))))),
    h("tbody", {}, rows)));
});

// --- usage ledger with proofs ---------------------------------------------------------------------------
async function checkProof(index, out) {
  const p = await api(`/v1/me/usage/${index}/proof`);
  const cp = parseCheckpoint(p.checkpoint);
      // The grant's state now, computed by the server when read (an ended window shows expired at once).
      h("td", { class: `state-${e.grant_state}` }, t(`portal.history.now.${e.grant_state}`)),
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
  const partners = new Map(m.partners.map((p) => [p.key, p.name]));
  const purposes = new Map(m.purposes.map((p) => [p.key, pick(p, "label")]));
  $("usage").replaceChildren(h("ol", { class: "timeline" }, uses.map((u) => {
    const out = h("div", {});
    const pending = u.index === null || u.index === undefined;
    const button = h("button", { type: "button", class: "secondary", disabled: pending }, t("portal.usage.check"));
    button.addEventListener("click", guard(out, () => checkProof(u.index, out)));
    return h("li", { dataset: { fields: u.fields.join(" "), index: u.index } },
      h("strong", {}, u.fields.map((f) => labels.get(f) || f).join(", ")), " — ",
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
async function redeem(reward, button, key = crypto.randomUUID()) {
  const status = $("points-status");
  clear(status);
  button.disabled = true;
  try {
    const r = await api("/v1/me/redemptions", { method: "POST", body: { reward_key: reward.key, quantity: 1 }, headers: { "Idempotency-Key": key } });
    status.replaceChildren(h("p", { class: "ok", role: "status" }, t("portal.points.redeemed", { reward: pick(reward, "name"), balance: fmtNumber(r.balance_after) })));
    await showPoints();
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

const showPoints = guard(() => $("points-status"), async () => {
  const [points, rewards, redemptions] = await Promise.all([
    api("/v1/me/points"), api("/v1/rewards"), api("/v1/me/redemptions").catch(() => []),
  ]);
  state.points = points;
  state.rewards = rewards;
  $("balance").textContent = fmtNumber(points.balance);
  $("tier").textContent = points.tier ? points.tier.name : "";
  $("rewards").replaceChildren(...rewards.filter((r) => r.active !== false).map((r) => {
    const button = h("button", { type: "button", "aria-label": t("portal.points.redeemFor", { reward: pick(r, "name") }) }, t("portal.points.redeem"));
    if (points.balance < r.cost || r.stock === 0) button.disabled = true;
    button.addEventListener("click", () => redeem(r, button));
    return h("div", { class: "card", dataset: { reward: r.key } },
      h("h4", {}, pick(r, "name")),
      h("p", { class: "muted" }, pick(r, "description")),
      h("p", {}, t("portal.points.cost", { cost: fmtNumber(r.cost) })),
      button);
  }));
  $("redemptions").replaceChildren(redemptions.length
    ? h("table", {}, h("tbody", {}, redemptions.map((r) => h("tr", {},
        h("td", {}, r.reward_name || r.reward_key), h("td", {}, fmtNumber(r.cost)), h("td", {}, r.status)))))
    : h("p", { class: "muted" }, t("portal.points.none")));
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
  try {
    await api("/v1/me?confirm=" + encodeURIComponent("erase my data"), { method: "DELETE" });
  } catch (err) {
    if (err instanceof StepUpRequired) return stepUp(err, { action: "erase" });
    throw err;
  }
  await signOut();
  $("app").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  $("signin-error").replaceChildren(h("p", { class: "ok", role: "status" }, t("portal.account.erased")));
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
const loaders = { manual: showManual, history: showHistory, usage: showUsage, points: showPoints, account: async () => {} };

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
