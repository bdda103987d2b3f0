// Charts for the partner view and the compliance console, drawn by the vendored Chart.js (loaded as a classic
// script before the page's module: /static/vendor/chart.umd.min.js). Every chart is a canvas with a text
// label; the pages put the same numbers in a table next to it for screen readers and printing.
const COLORS = ["#1f5fbf", "#b35900", "#1d7a46", "#8a1c9b", "#b3261e", "#00707a", "#5b5f00", "#4a5368"];

function chartLib() {
  if (!window.Chart) throw new Error("the chart library did not load");
  return window.Chart;
}

const live = new WeakMap();

// A canvas inside ``container`` (replacing whatever was there), sized by CSS (.chart-box).
function canvasIn(container, label) {
  const old = live.get(container);
  if (old) old.destroy();
  const box = document.createElement("div");
  box.className = "chart-box";
  const canvas = document.createElement("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", label);
  box.append(canvas);
  container.replaceChildren(box);
  return canvas;
}

function keep(container, chart) {
  live.set(container, chart);
  return chart;
}

const base = () => ({
  responsive: true,
  maintainAspectRatio: false,
  animation: false,
  plugins: { legend: { labels: { boxWidth: 12 } } },
});

// Bars with their noise interval: ``rows`` = [{label, value, low, high}] (value null: suppressed, no bar).
export function intervalBars(container, rows, { label, valueName, intervalName }) {
  const Chart = chartLib();
  const canvas = canvasIn(container, label);
  return keep(container, new Chart(canvas, {
    type: "bar",
    data: {
      labels: rows.map((r) => r.label),
      datasets: [
        { label: valueName, data: rows.map((r) => r.value), backgroundColor: "#8fb1e6", borderColor: COLORS[0], borderWidth: 1, grouped: false, order: 2 },
        { label: intervalName, data: rows.map((r) => (r.value === null ? null : [r.low, r.high])), backgroundColor: "#1d2330", barPercentage: 0.08, grouped: false, order: 1 },
      ],
    },
    options: { ...base(), scales: { y: { beginAtZero: true } } },
  }));
}

// Lines over time: ``labels`` (x, already formatted), ``series`` = [{name, values}] (0..1 shown as %).
export function trendLines(container, labels, series, { label, percent = true }) {
  const Chart = chartLib();
  const canvas = canvasIn(container, label);
  return keep(container, new Chart(canvas, {
    type: "line",
    data: {
      labels,
      datasets: series.map((s, i) => ({
        label: s.name,
        data: s.values.map((v) => (v === null ? null : percent ? Math.round(v * 1000) / 10 : v)),
        borderColor: COLORS[i % COLORS.length],
        backgroundColor: COLORS[i % COLORS.length],
        pointRadius: 2,
        spanGaps: true,
      })),
    },
    options: { ...base(), scales: { y: { beginAtZero: true, ...(percent ? { suggestedMax: 10, ticks: { callback: (v) => `${v}%` } } : {}) } } },
  }));
}

// Horizontal or vertical bars: ``rows`` = [{label, value}] or with ``stacks`` = [{name, values}].
export function bars(container, labels, stacks, { label, horizontal = false, stacked = false, percent = false }) {
  const Chart = chartLib();
  const canvas = canvasIn(container, label);
  const axis = horizontal ? "x" : "y";
  return keep(container, new Chart(canvas, {
    type: "bar",
    data: {
      labels,
      datasets: stacks.map((s, i) => ({
        label: s.name,
        data: s.values.map((v) => (v === 0 ? null : v)),  // no bar for nothing, even with minBarLength
        backgroundColor: s.color || COLORS[i % COLORS.length],
        minBarLength: 3,  // a 0.4% rate stays visible
      })),
    },
    options: {
      ...base(),
      indexAxis: horizontal ? "y" : "x",
      scales: {
        [axis]: { beginAtZero: true, stacked, ...(percent ? { max: 100, ticks: { callback: (v) => `${v}%` } } : {}) },
        [horizontal ? "y" : "x"]: { stacked },
      },
    },
  }));
}
