// The partner view: contracts, jobs with their DP-noised aggregate results, remaining privacy budget.
// Renders whatever columns the API returns, so it follows the partner API as it evolves.
import { api } from "/static/api.js";
import { completeSignIn, currentSession, signIn, signOut } from "/static/auth.js";
import { initI18n, t } from "/static/i18n.js";
import { describeError, guard, h, setupTabs } from "/static/ui.js";

const CLIENT_ID = "partner-view";
const $ = (id) => document.getElementById(id);

function cell(value) {
  if (value === null || value === undefined) return "";
  if (value instanceof Node) return value;
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function table(items, columns, empty) {
  if (!items.length) return h("p", { class: "muted" }, t(empty));
  const cols = columns.filter((c) => items.some((i) => i[c] !== undefined));
  return h("table", {},
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, items.map((i) => h("tr", {}, cols.map((c) => h("td", {}, cell(i[c])))))));
}

const list = (body) => (Array.isArray(body) ? body : body.items || []);

const loaders = {
  contracts: guard(() => $("contracts"), async () => {
    const items = list(await api("/v1/partner/contracts"));
    $("contracts").replaceChildren(table(items, ["id", "title", "purpose", "status", "features", "k_min", "epsilon_per_release", "valid_until"], "partner.contracts.none"));
  }),
  jobs: guard(() => $("jobs"), async () => {
    const items = list(await api("/v1/partner/jobs"));
    // Aggregate results are computed on request only (the job paid its epsilon when it was submitted; later
    // requests return the same stored numbers). A job reads "queued" until its outcome shows on the server's
    // release schedule, and a failure's "error" is a reason code, never a number.
    for (const j of items) {
      if (j.status !== "succeeded") continue;
      const slot = h("div", {});
      const button = h("button", { type: "button", class: "secondary", "data-job": j.id, onclick: guard(() => slot, async () => {
        const release = await api(`/v1/partner/jobs/${j.id}/results`);
        slot.replaceChildren(h("span", { class: "result" }, `ε ${release.epsilon}: ${JSON.stringify(release.result)}`));
      }) }, t("partner.jobs.release"));
      slot.append(button);
      j.result = slot;
    }
    $("jobs").replaceChildren(table(items, ["id", "contract_id", "model_id", "status", "created_at", "finished_at", "result", "error"], "partner.jobs.none"));
  }),
  budget: guard(() => $("budget"), async () => {
    const body = await api("/v1/partner/budget");
    const items = list(Array.isArray(body) || body.items ? body : body.budgets || [body]);
    $("budget").replaceChildren(table(items, ["purpose", "epsilon_total", "epsilon_spent", "epsilon_remaining", "remaining"], "partner.budget.none"));
  }),
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
  document.addEventListener("signedout", () => view(false, t("error.signedOut")));
  const select = setupTabs($("tabs"), (name) => loaders[name]());
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
