// Ship: export a finished run (with its verification) and start/stop serving it.
"use strict";

(() => {
  const { $, api, show, escapeHtml, num, params } = TS;

  async function exportRun(event) {
    event.preventDefault();
    show("message", "Exporting and verifying…", "info");
    $("export-result").innerHTML = "";
    try {
      const r = await api("/api/ship/export", { json: {
        key: $("run").value, merge: $("merge").checked, dtype: $("dtype").value, gguf: $("gguf").value, force: $("force").checked } });
      const checks = Object.entries(r.checks).map(([k, v]) => `<tr><td>${escapeHtml(k)}</td><td>${escapeHtml(typeof v === "object" ? JSON.stringify(v) : num(v, 6))}</td></tr>`).join("");
      $("export-result").innerHTML =
        `<p class="good" id="export-done">Exported ${escapeHtml(r.kind)} model (${escapeHtml(r.dtype)}) to <code>${escapeHtml(r.out)}</code>` +
        `${r.gguf ? ` and <code>${escapeHtml(r.gguf)}</code>` : ""}: loaded back, max |logit difference| <strong id="logit-diff">${r.max_logit_diff.toExponential(2)}</strong></p>` +
        (r.gate ? `<p>Evaluation gate: <strong>${r.gate.passed ? "passed" : "failed (exported with force)"}</strong></p>` : "") +
        `<table class="table small" id="export-checks"><tr><th>check</th><th>value</th></tr>${checks}</table>` +
        `<p class="hint">files: ${r.files.map(escapeHtml).join(", ")}</p>`;
      show("message", "", "info");
    } catch (error) {
      show("message", error.message, "error");
    }
  }

  async function refreshServers() {
    const r = await api("/api/ship/servers");
    $("servers").innerHTML = r.servers.length ? "<tr><th>run</th><th>state</th><th>address</th><th></th></tr>" + r.servers.map((s) =>
      `<tr data-id="${s.id}" data-state="${escapeHtml(s.state)}"><td>${escapeHtml(s.name)}</td><td class="state">${escapeHtml(s.state)}</td>` +
      `<td><code>${escapeHtml(s.url)}</code></td><td>${s.state === "ready" || s.state === "starting" ? `<button class="stop" data-id="${s.id}">Stop</button>` : ""}</td></tr>`).join("")
      : "<tr><td>Nothing served.</td></tr>";
    for (const button of document.querySelectorAll("button.stop")) {
      button.addEventListener("click", async () => {
        await api("/api/ship/stop", { json: { id: Number(button.dataset.id) } }).catch((e) => show("message", e.message, "error"));
        refreshServers();
      });
    }
  }

  $("export-form").addEventListener("submit", exportRun);
  $("serve").addEventListener("click", async () => {
    try {
      await api("/api/ship/serve", { json: { key: $("run").value, force: $("force").checked } });
      refreshServers();
    } catch (error) {
      show("message", error.message, "error");
    }
  });
  api("/api/runs/list?trained=true").then((r) => {
    $("run").innerHTML = r.runs.map((run) => `<option value="${escapeHtml(run.key)}">${escapeHtml(run.name)} (${escapeHtml(run.status)})</option>`).join("");
    if (params().get("key")) $("run").value = params().get("key");
    if (!r.runs.length) show("message", "No trained runs yet.", "info");
  });
  refreshServers();
  setInterval(refreshServers, 2000);
})();
