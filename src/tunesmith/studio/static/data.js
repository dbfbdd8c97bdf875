// Data page: check a workspace file (problems by kind and line), token histogram, label-mask preview, audit.
"use strict";

(() => {
  const { $, api, show, escapeHtml, num, bars, params } = TS;
  const query = () => new URLSearchParams({ file: $("file").value.trim(), model: $("model").value.trim(), format: $("format").value.trim() });

  function renderCheck(r) {
    $("result").hidden = false;
    $("summary").innerHTML = `<strong>${escapeHtml(r.file)}</strong>: ${num(r.rows)} rows, format <code>${escapeHtml(r.format || "?")}</code>, ` +
      `${num(r.valid_rows)} usable · <span class="${r.errors ? "bad" : "good"}">${num(r.errors)} errors</span> · ${num(r.warnings)} warnings`;
    $("groups").innerHTML = r.groups.map((g) =>
      `<details class="problem-group ${g.severity}" open data-kind="${escapeHtml(g.kind)}"><summary>${g.severity} <strong>${escapeHtml(g.kind)}</strong> (${g.count})</summary>` +
      `<ul>${g.problems.map((p) => `<li data-line="${escapeHtml(p.line)}"><span class="line">line ${escapeHtml(p.line)}</span> ${escapeHtml(p.message)}` +
        (p.excerpt ? ` <q>${escapeHtml(p.excerpt)}</q>` : "") + "</li>").join("")}</ul>` +
      (g.count > g.problems.length ? `<p class="hint">and ${g.count - g.problems.length} more</p>` : "") + "</details>").join("") ||
      "<p class='good'>No problems found.</p>";
    const t = r.tokens;
    if (t && t.histogram) {
      $("tokens-note").textContent = `min ${t.min}, median ${t.p50}, p90 ${t.p90}, p99 ${t.p99}, max ${t.max}, total ${num(t.total)}` +
        (t.limit ? ` (model context ${t.limit}${t.over_limit ? `, ${t.over_limit} rows over it` : ""})` : "");
      bars($("histogram"), t.histogram);
      $("histogram").hidden = false;
    } else {
      $("tokens-note").textContent = "Give a model to count tokens with its tokenizer and chat template.";
      $("histogram").hidden = true;
    }
  }

  async function renderPreview() {
    if (!$("model").value.trim()) {
      $("preview").innerHTML = "<p class='hint'>Give a model to see what it is trained on.</p>";
      return;
    }
    try {
      const r = await api(`/api/data/preview?${query()}`);
      $("preview").innerHTML = r.examples.map((e) =>
        `<div class="example"><p class="hint">${escapeHtml(e.source)}: ${e.tokens} tokens, ${e.trained} trained` +
        `${e.truncated ? " (truncated)" : ""}</p><pre class="mask">` +
        e.pieces.map((p) => p.trained ? `<mark>${escapeHtml(p.text)}</mark>` : `<span>${escapeHtml(p.text)}</span>`).join("") +
        "</pre></div>").join("");
    } catch (error) {
      $("preview").innerHTML = `<p class="message error">${escapeHtml(error.message)}</p>`;
    }
  }

  async function check() {
    show("message", "Checking…", "info");
    history.replaceState(null, "", `?${query()}`);
    try {
      renderCheck(await api(`/api/data/check?${query()}`));
      show("message", "", "info");
      await renderPreview();
    } catch (error) {
      $("result").hidden = true;
      show("message", error.message, "error");
    }
  }

  function renderAudit(r) {
    const issues = r.label_issues || { rows: [] };
    const flagged = issues.rows.map((row) =>
      `<tr data-line="${row.line}"><td>line ${row.line}</td><td>${escapeHtml(row.text)}</td><td>${escapeHtml(row.label)}</td>` +
      `<td>${escapeHtml(row.suggested ?? "")}</td></tr>`).join("");
    const clusters = (r.clusters && r.clusters.clusters) || [];
    const dups = (r.duplicates && r.duplicates.rows) || [];
    const outliers = (r.outliers && r.outliers.rows) || [];
    $("audit").innerHTML =
      `<p>${num(r.rows)} rows, ${num(r.labelled)} labelled · saved as <code>${escapeHtml(r.saved)}</code> · ` +
      `<a id="to-annotate" href="${escapeHtml(r.annotate)}">Review the flagged rows in Annotate →</a></p>` +
      `<h3>Likely label errors (${num(issues.count || 0)})</h3>` +
      (issues.note ? `<p class="hint">${escapeHtml(issues.note)}</p>` : "") +
      (flagged ? `<table id="label-issues" class="table small"><tr><th>line</th><th>text</th><th>label</th><th>suggested</th></tr>${flagged}</table>` : "") +
      `<h3>Clusters (${clusters.length})</h3><ul>${clusters.map((c) =>
        `<li>${num(c.size)} rows (${Math.round(100 * c.share)}%)${c.flags.length ? ` <strong>${escapeHtml(c.flags.join(", "))}</strong>` : ""}: ` +
        `${escapeHtml(c.examples.map((e) => e.text).join(" · ").slice(0, 160))}</li>`).join("")}</ul>` +
      `<h3>Outliers (${outliers.length})</h3><ul>${outliers.map((o) => `<li>line ${o.line}: ${escapeHtml(o.text)}</li>`).join("")}</ul>` +
      `<h3>Duplicates (${dups.length} groups)</h3><ul>${dups.map((g) =>
        `<li>line ${g.first.line} repeated at ${g.copies.map((c) => `line ${c.line} (${c.kind})`).join(", ")}` +
        `${g.conflicting_labels ? " <strong>labels disagree</strong>" : ""}</li>`).join("")}</ul>`;
  }

  $("open").addEventListener("submit", (event) => { event.preventDefault(); check(); });
  $("audit-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    show("message", "Auditing: embedding every row…", "info");
    try {
      const body = { file: $("file").value.trim(), text_column: $("text-column").value.trim(), label_column: $("label-column").value.trim() || "label" };
      renderAudit(await api("/api/data/audit", { json: body }));
      show("message", "", "info");
    } catch (error) {
      show("message", error.message, "error");
    }
  });
  $("upload").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    try {
      const r = await api("/api/data/upload", { method: "POST", body: form });
      $("file").value = r.file;
      show("message", `Uploaded to ${r.file} (${num(r.bytes)} bytes)`, "info");
      check();
    } catch (error) {
      show("message", error.message, "error");
    }
  });
  api("/api/data/files").then((r) => {
    $("workspace-files").innerHTML = r.files.map((f) => `<option value="${escapeHtml(f)}">`).join("");
  });
  const p = params();
  if (p.get("file")) {
    $("file").value = p.get("file");
    $("model").value = p.get("model") || "";
    $("format").value = p.get("format") || "";
    check();
  }
})();
