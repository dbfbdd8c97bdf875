// A run's page: curves streamed live (server-sent events), progress, events and log, job actions, the report.
"use strict";

(() => {
  const { $, api, show, escapeHtml, num, duration, chart } = TS;
  const key = $("run-name").dataset.key;
  const points = [];
  let status = $("status").textContent.trim();
  let finishedShown = false;

  function drawCharts() {
    const series = (name, field) => ({ name, key: field, points: points.filter((p) => p[field] !== undefined).map((p) => [p.step, p[field]]) });
    chart($("loss-chart"), [series("training loss", "loss"), series("validation loss", "val_loss")]);
    chart($("lr-chart"), [series("learning rate", "lr")]);
  }

  function setStatus(s) {
    status = s.status;
    $("status").textContent = s.status;
    $("status").className = `status ${s.status}`;
    const total = s.total ? ` of ${num(s.total)}` : "";
    $("progress").textContent = `step ${num(s.step || 0)}${total}` + (s.elapsed_s ? ` · ${duration(s.elapsed_s)} elapsed` : "");
    $("eta").textContent = s.eta_s !== null && s.eta_s !== undefined ? `about ${duration(s.eta_s)} left` : "";
    if (s.error) show("message", s.error, "error");
  }

  function connect() {
    const source = new EventSource(`/api/runs/stream?key=${encodeURIComponent(key)}`);
    source.addEventListener("points", (event) => {
      const seen = new Set(points.map((p) => p.step));
      for (const p of JSON.parse(event.data)) {
        if (seen.has(p.step)) points.splice(points.findIndex((q) => q.step === p.step), 1, p);
        else points.push(p);
      }
      points.sort((a, b) => a.step - b.step);
      drawCharts();
    });
    source.addEventListener("status", (event) => setStatus(JSON.parse(event.data)));
    source.addEventListener("end", () => { source.close(); refresh(); });
  }

  function metricsTable(metrics) {
    if (!metrics) return "<p class='hint'>No evaluation (eval.enabled was false, or it has not run).</p>";
    const names = [...new Set(Object.values(metrics).flatMap((m) => Object.keys(m || {})))];
    const cols = Object.keys(metrics);
    return `<table class="table small"><tr><th>metric</th>${cols.map((c) => `<th>${escapeHtml(c)}</th>`).join("")}</tr>` +
      names.map((n) => `<tr><td>${escapeHtml(n)}</td>${cols.map((c) => `<td>${num((metrics[c] || {})[n])}</td>`).join("")}</tr>`).join("") +
      "</table>";
  }

  async function refresh() {
    let d;
    try {
      d = await api(`/api/runs/detail?key=${encodeURIComponent(key)}`);
    } catch (error) {
      show("message", error.message, "error");
      return;
    }
    setStatus({ status: d.run.status, ...d.progress, error: d.error });
    for (const action of ["pause", "resume", "cancel"]) $(action).hidden = !d.actions.includes(action);
    $("events").innerHTML = d.messages.map((m) =>
      `<li class="${m.level}"><time>${new Date(m.time * 1000).toLocaleTimeString()}</time> ${escapeHtml(m.message)}</li>`).join("");
    $("log").textContent = d.log || "(no log: runs made with the CLI log to their terminal)";
    if ((d.report || d.environment) && !finishedShown) {
      finishedShown = true;
      $("finished").hidden = false;
      $("metrics").innerHTML = metricsTable(d.metrics);
      $("report-link").hidden = !d.report;
      if (d.report) {
        $("report").src = $("report-link").href;
        $("report").hidden = false;
      }
      const env = d.environment || {};
      const rows = Object.entries(env).map(([k, v]) =>
        `<tr><td>${escapeHtml(k)}</td><td>${escapeHtml(typeof v === "object" ? JSON.stringify(v) : v)}</td></tr>`);
      $("environment").innerHTML = rows.join("") || "<tr><td>no environment.json</td></tr>";
    }
  }

  async function act(action) {
    show("message", `${action}…`, "info");
    try {
      const r = await api("/api/runs/action", { json: { key, action } });
      show("message", `${action}: the job is ${r.status}`, "info");
      if (action === "resume") connect();
    } catch (error) {
      show("message", error.message, "error");
    }
    refresh();
  }

  for (const action of ["pause", "resume", "cancel"]) $(action).addEventListener("click", () => act(action));
  drawCharts();
  connect();
  refresh();
  setInterval(() => { if (!["succeeded", "failed", "cancelled", "finished"].includes(status)) refresh(); }, 2000);
})();
