// The collaboration dashboard, drawn for the steward console (every partner, exact) and the partner view (its
// own deliveries exactly; numbers about customers only as the DP releases it asked for). Each chart has the
// same numbers in a table beside it (screen readers, printing).
import { trendLines, bars } from "/static/charts.js";
import { currentLang, fmtNumber, fmtTime, pick, t } from "/static/i18n.js";
import { h } from "/static/ui.js";

const pct = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)}%`);
const ms = (v) => (v === null || v === undefined ? "—" : `${fmtNumber(Math.round(v * 10) / 10)} ms`);
const num = (v) => (v === null || v === undefined ? "—" : fmtNumber(v));

// A bucket's start as a short label: the time of day for minute and hour buckets, the date for days.
function bucketLabel(iso, bucket) {
  const d = new Date(iso);
  if (bucket === "day") return d.toLocaleDateString(currentLang());
  return d.toLocaleTimeString(currentLang(), { hour: "2-digit", minute: "2-digit" });
}

function partnerLabel(row) {
  return row.partner_name ? pick({ name: row.partner_name, i18n: row.partner_i18n || {} }, "name") : row.partner_key || `#${row.partner_id}`;
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function table(caption, columns, rows) {
  return h("details", { class: "numbers" },
    h("summary", {}, caption),
    h("div", { class: "table-wrap", tabindex: "0" },
      h("table", {},
        h("caption", { class: "sr-only" }, caption),
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))))));
}

function chart(container, draw) {
  const box = h("div", { class: "chart" });
  container.append(box);
  try {
    draw(box);
  } catch (err) {
    box.replaceChildren(h("p", { class: "muted" }, t("collab.noChart")));
  }
}

// Deliveries per (partner, event contract): success, latency against the requirement, retries, dead letters.
// ``deadLetters(row, box)``, when given (the steward console), lists a card's dead letters into ``box``.
export function renderDeliveries(container, data, { showPartner = true, deadLetters = null } = {}) {
  const w = data.window;
  const labels = w.buckets.map((b) => bucketLabel(b, w.bucket));
  if (!data.deliveries.length) {
    container.append(h("p", { class: "muted" }, t("collab.noDeliveries")));
    return;
  }
  for (const row of data.deliveries) {
    const who = showPartner ? `${partnerLabel(row)} · ` : "";
    const title = `${who}${row.event_type} ${row.version}`;
    const tot = row.totals;
    const card = h("article", { class: "collab-card", "data-contract": String(row.contract_id), "data-partner": row.partner_key || "" },
      h("h4", {}, title),
      facts([
        [t("collab.successRate"), pct(tot.success_rate)],
        [t("collab.latency"), t("collab.latencyValue", { p50: ms(tot.latency_p50_ms), p99: ms(tot.latency_p99_ms), req: ms(row.latency_requirement_ms) })],
        [t("collab.withinRequirement"), `${num(tot.within_requirement)} / ${num(tot.delivered)}`],
        [t("collab.events"), num(tot.events)],
        [t("collab.retries"), num(tot.retries)],
        [t("collab.dead"), num(tot.dead)],
        [t("collab.pending"), num(tot.pending)],
        ...(row.dropped_fields ? [[t("collab.dropped"), Object.entries(row.dropped_fields).map(([k, v]) => `${k}: ${fmtNumber(v)}`).join(", ") || "—"]] : []),
      ]));
    container.append(card);
    chart(card, (box) => trendLines(box, labels, [
      { name: t("collab.delivered"), values: row.series.map((p) => p.delivered) },
      { name: t("collab.dead"), values: row.series.map((p) => p.dead) },
      { name: t("collab.retries"), values: row.series.map((p) => p.retries) },
    ], { label: t("collab.deliveriesChart", { title }), percent: false }));
    chart(card, (box) => trendLines(box, labels, [
      { name: "p50", values: row.series.map((p) => p.latency_p50_ms) },
      { name: "p99", values: row.series.map((p) => p.latency_p99_ms) },
      { name: t("collab.requirement"), values: row.series.map(() => row.latency_requirement_ms) },
    ], { label: t("collab.latencyChart", { title }), percent: false }));
    if (deadLetters && tot.dead) {
      const box = h("div", { class: "dead-letters" });
      const button = h("button", { type: "button", class: "secondary" }, t("collab.showDead", { n: fmtNumber(tot.dead) }));
      button.addEventListener("click", () => deadLetters(row, box));
      card.append(button, box);
    }
    card.append(table(t("collab.numbersOf", { title }),
      [t("collab.time"), t("collab.events"), t("collab.delivered"), t("collab.successRate"), "p50", "p99", t("collab.retries"), t("collab.dead")],
      row.series.filter((p) => p.events).map((p) => [fmtTime(p.t), num(p.events), num(p.delivered), pct(p.success_rate), ms(p.latency_p50_ms), ms(p.latency_p99_ms), num(p.retries), num(p.dead)])));
  }
}

// The events a partner published, per contract version (its own records, exact).
export function renderPublished(container, data) {
  const w = data.window;
  const labels = w.buckets.map((b) => bucketLabel(b, w.bucket));
  for (const row of data.published) {
    const title = `${row.event_type} ${row.version}`;
    const card = h("article", { class: "collab-card", "data-published": String(row.contract_id) },
      h("h4", {}, title), facts([[t("collab.publishedCount"), num(row.published)]]));
    container.append(card);
    chart(card, (box) => trendLines(box, labels, [
      { name: t("collab.publishedCount"), values: row.series.map((p) => p.published) },
    ], { label: t("collab.publishedChart", { title }), percent: false }));
  }
}

// Decisions made and joint outcomes per (partner, data contract), exactly (the operator's view).
export function renderLoop(container, data) {
  const w = data.window;
  const labels = w.buckets.map((b) => bucketLabel(b, w.bucket));
  if (!data.decisions.length) {
    container.append(h("p", { class: "muted" }, t("collab.noDecisions")));
    return;
  }
  for (const row of data.decisions) {
    const outcomes = data.outcomes.filter((o) => o.contract_id === row.contract_id && o.partner_id === row.partner_id);
    const title = `${partnerLabel(row)} · ${row.title || t("collab.contract", { id: row.contract_id })}`;
    const answered = outcomes.reduce((a, o) => a + o.totals.decisions_answered, 0);
    const decided = row.totals.decided;
    const card = h("article", { class: "collab-card", "data-decision-contract": String(row.contract_id) },
      h("h4", {}, title),
      facts([
        [t("collab.decided"), num(decided)],
        [t("collab.notPermitted"), num(row.totals.not_permitted)],
        [t("collab.labels"), Object.entries(row.totals.labels).map(([k, v]) => `${k}: ${fmtNumber(v)}`).join(", ") || "—"],
        [t("collab.triggers"), Object.entries(row.totals.triggers).map(([k, v]) => `${k}: ${fmtNumber(v)}`).join(", ")],
        ...outcomes.map((o) => [t("collab.outcomeOf", { type: o.event_type }), num(o.totals.outcomes)]),
        [t("collab.conversion"), pct(decided ? answered / decided : null)],
      ]));
    container.append(card);
    const sums = w.buckets.map((_, i) => outcomes.reduce((a, o) => a + o.series[i].outcomes, 0));
    chart(card, (box) => trendLines(box, labels, [
      { name: t("collab.decided"), values: row.series.map((p) => p.decided) },
      { name: t("collab.notPermitted"), values: row.series.map((p) => p.not_permitted) },
      { name: t("collab.outcomes"), values: sums },
    ], { label: t("collab.loopChart", { title }), percent: false }));
    card.append(table(t("collab.numbersOf", { title }),
      [t("collab.time"), t("collab.decided"), t("collab.notPermitted"), t("collab.outcomes")],
      row.series.map((p, i) => [fmtTime(p.t), num(p.decided), num(p.not_permitted), num(sums[i])]).filter((r, i) => row.series[i].decided || row.series[i].not_permitted || sums[i])));
  }
}

// The partner's DP releases of customers decided and joint outcomes, one bar pair per release.
export function renderReleases(container, group, onRelease) {
  const title = group.title || t("collab.contract", { id: group.contract_id });
  const card = h("article", { class: "collab-card", "data-release-contract": String(group.contract_id) },
    h("h4", {}, title),
    h("p", { class: "muted" }, t("collab.releaseIntro", { eps: group.release_epsilon, k: group.k_min })),
    facts([[t("collab.budgetLeft"), group.epsilon_remaining === null ? "—" : `ε ${fmtNumber(group.epsilon_remaining)}`]]));
  const button = h("button", { type: "button", class: "secondary" }, t("collab.release", { eps: group.release_epsilon }));
  button.addEventListener("click", () => onRelease(group.contract_id, button));
  card.append(button);
  const rows = group.releases;
  if (!rows.length) {
    card.append(h("p", { class: "muted" }, t("collab.noReleases")));
  } else {
    const labels = rows.map((r) => fmtTime(r.period_end));
    chart(card, (box) => bars(box, labels, [
      { name: t("collab.decidedCustomers"), values: rows.map((r) => r.decided ?? 0) },
      { name: t("collab.outcomeCustomers"), values: rows.map((r) => r.outcomes ?? 0) },
    ], { label: t("collab.releasesChart", { title }) }));
    card.append(table(t("collab.numbersOf", { title }),
      [t("collab.period"), t("collab.decidedCustomers"), t("collab.outcomeCustomers"), "ε", t("collab.noise")],
      rows.map((r) => [
        `${fmtTime(r.period_start)} – ${fmtTime(r.period_end)}`,
        r.decided === null ? t("collab.suppressed") : num(r.decided),
        r.outcomes === null ? t("collab.suppressed") : num(r.outcomes),
        String(r.epsilon),
        r.noise_scale === null ? "—" : `± ${fmtNumber(Math.round(r.noise_scale * 3 * 10) / 10)}`,
      ])));
  }
  container.append(card);
}

export const RANGES = {
  hour: { bucket: "minute", ms: 3600e3 },
  day: { bucket: "hour", ms: 86400e3 },
  week: { bucket: "day", ms: 7 * 86400e3 },
};

export function rangeQuery(range) {
  const r = RANGES[range] || RANGES.day;
  const until = new Date();
  const since = new Date(until.getTime() - r.ms);
  return `since=${encodeURIComponent(since.toISOString())}&until=${encodeURIComponent(until.toISOString())}&bucket=${r.bucket}`;
}
