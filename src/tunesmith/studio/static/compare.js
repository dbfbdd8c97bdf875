// Compare: metrics with intervals, config differences and overlaid loss curves of the chosen runs.
"use strict";

(() => {
  const { $, api, show, escapeHtml, num, chart, params } = TS;

  function ci(cell) {
    if (cell.delta === null || cell.delta === undefined) return "";
    const interval = cell.ci95 ? ` [${num(cell.ci95[0], 3)}, ${num(cell.ci95[1], 3)}]` : "";
    return `<div class="delta">${cell.delta >= 0 ? "+" : ""}${num(cell.delta, 3)}${interval}</div>`;
  }

  function render(r) {
    $("result").hidden = false;
    const head = `<tr><th>metric</th>${r.runs.map((run) => `<th>${escapeHtml(run.name)}<br><small>${escapeHtml(run.status)}</small></th>`).join("")}</tr>`;
    $("metrics").innerHTML = head + (r.metrics.map((m) =>
      `<tr data-metric="${escapeHtml(m.metric)}"><td>${escapeHtml(m.metric)}</td>` +
      m.runs.map((c) => `<td>${num(c.tuned)}${c.base !== null && c.base !== undefined ? ` <small>(base ${num(c.base)})</small>` : ""}${ci(c)}</td>`).join("") +
      "</tr>").join("") || `<tr><td colspan="${r.runs.length + 1}">No evaluation metrics in these runs (eval.enabled was false).</td></tr>`);
    $("config-diff").innerHTML = head.replace("metric", "setting") + (r.config_diff.map((d) =>
      `<tr data-key="${escapeHtml(d.key)}"><td><code>${escapeHtml(d.key)}</code></td>` +
      d.values.map((v) => `<td>${escapeHtml(v === null ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v))}</td>`).join("") +
      "</tr>").join("") || `<tr><td colspan="${r.runs.length + 1}">The configs are the same.</td></tr>`);
    chart($("curves"), r.runs.map((run, i) => ({
      name: run.name, key: String(i), points: run.curve.filter((p) => p.loss !== undefined).map((p) => [p.step, p.loss]),
    })));
  }

  async function compare(keys) {
    history.replaceState(null, "", `?${keys.map((k) => `keys=${encodeURIComponent(k)}`).join("&")}`);
    try {
      render(await api(`/api/compare?${keys.map((k) => `keys=${encodeURIComponent(k)}`).join("&")}`));
      show("message", "", "info");
    } catch (error) {
      show("message", error.message, "error");
    }
  }

  $("pick").addEventListener("submit", (event) => {
    event.preventDefault();
    compare([...document.querySelectorAll("#run-list input:checked")].map((i) => i.value));
  });

  api("/api/runs/list").then((r) => {
    const chosen = params().getAll("keys");
    $("run-list").innerHTML = r.runs.map((run) =>
      `<label class="run-choice"><input type="checkbox" value="${escapeHtml(run.key)}" ${chosen.includes(run.key) ? "checked" : ""}> ` +
      `${escapeHtml(run.name)} <small>${escapeHtml(run.status)} · ${escapeHtml(run.task)} · ${escapeHtml(run.key)}</small></label>`).join("") ||
      "<p>No runs yet.</p>";
    if (chosen.length >= 2) compare(chosen);
  });
})();
