// Annotate page: rows ordered by need, one current row, labels set with the keyboard and saved one by one.
"use strict";

const state = { file: "", labels: "", annotator: "annotator", data: null, current: 0, busy: false };
const $ = (id) => document.getElementById(id);

function show(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) {
    const error = new Error(body.error || (body.detail ? JSON.stringify(body.detail) : `HTTP ${response.status}`));
    error.status = response.status;
    throw error;
  }
  return body;
}

async function load(keepRow) {
  const query = new URLSearchParams({ file: state.file, labels: state.labels });
  const data = await api(`/api/annotate/rows?${query}`);
  state.data = data;
  const at = keepRow === undefined ? -1 : data.rows.findIndex((r) => r.row === keepRow);
  state.current = at >= 0 ? at : Math.max(0, data.rows.findIndex((r) => !r.reviewed));
  render();
}

function word(value) {
  const i = state.data.labels.indexOf(value);
  return i >= 0 ? state.data.words[i] : value;
}

function render() {
  const data = state.data;
  $("status").hidden = false;
  const p = data.progress;
  const done = p.rows ? Math.round((100 * p.reviewed) / p.rows) : 0;
  $("progress-bar").style.width = `${done}%`;
  $("progress").textContent =
    `Reviewed ${p.reviewed} of ${p.rows} rows (${done}%) · unlabelled ${p.unlabelled} · ` +
    `model labels ${p.by_model} · likely errors ${p.flagged}` +
    (data.audit ? ` (audit: ${data.audit})` : " (no audit: run `tunesmith data audit FILE --save FILE.audit.json`)") +
    (data.unreadable.length ? ` · ${data.unreadable.length} unreadable rows (first: ${data.unreadable[0].source})` : "");
  $("agreement").textContent = data.agreement.length
    ? "Agreement: " + data.agreement.map((a) => `${a.a} vs ${a.b}: Cohen's κ ${a.kappa.toFixed(2)} ` +
        `(${Math.round(100 * a.agreement)}% same) on ${a.rows} rows`).join("; ")
    : "Agreement: appears when a second annotator labels rows the first one did.";
  $("key-legend").innerHTML = data.labels
    .map((v, i) => `<kbd>${i + 1}</kbd> ${escapeHtml(data.words[i])}`).join(" · ");
  const list = $("rows");
  list.innerHTML = "";
  data.rows.forEach((r, i) => {
    const item = document.createElement("li");
    item.className = "row" + (i === state.current ? " current" : "") + (r.reviewed ? " reviewed" : "");
    item.dataset.row = r.row;
    item.dataset.label = r.label ?? "";
    const label = r.label === null ? '<span class="label none">unlabelled</span>'
      : `<span class="label">${escapeHtml(word(r.label))}</span>`;
    const bits = [`line ${r.line}`, r.source ? `by ${escapeHtml(r.annotator || r.source)}` : ""];
    if (r.confidence !== null && r.confidence !== undefined && r.source === "model") {
      bits.push(`confidence ${Number(r.confidence).toFixed(2)}`);
    }
    if (r.suggested !== null) bits.push(`<span class="flag">likely error: suggested ${escapeHtml(word(r.suggested))}</span>`);
    if (r.outside_label_set) bits.push('<span class="outside">not in the label set</span>');
    if (r.reviewed) bits.push("reviewed");
    const meta = bits.filter(Boolean).map((b) => `<span>${b}</span>`).join("");
    item.innerHTML = `<div>${label} <span class="text">${escapeHtml(r.text)}</span></div><div class="meta">${meta}</div>`;
    item.addEventListener("click", () => { state.current = i; render(); });
    list.appendChild(item);
  });
  const current = list.children[state.current];
  if (current) current.scrollIntoView({ block: "nearest" });
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function choose(value) {
  const row = state.data && state.data.rows[state.current];
  if (!row || state.busy) return;
  if (value === null || value === undefined) {
    show(`line ${row.line} has no label to accept: press a number key to choose one`, "error");
    return;
  }
  state.busy = true;
  const body = {
    file: state.file, labels: state.labels, row: row.row, text_hash: row.text_hash, expected: row.label,
    label: value, annotator: state.annotator,
  };
  try {
    const result = await api("/api/annotate/label", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const saved = result.saved;
    Object.assign(row, { label: saved.new_label, source: "human", annotator: saved.annotator, reviewed: true });
    state.data.progress.reviewed = state.data.rows.filter((r) => r.reviewed).length;
    show(`saved line ${saved.line}: ${saved.old_label ?? "unlabelled"} → ${saved.new_label}`, "info");
    state.current = Math.min(state.current + 1, state.data.rows.length - 1);
    render();
  } catch (error) {
    show(error.message, "error");
    if (error.status === 409) await load(row.row).catch(() => {});
  } finally {
    state.busy = false;
  }
}

document.addEventListener("keydown", (event) => {
  if (!state.data || event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
  const rows = state.data.rows;
  if (/^[1-9]$/.test(event.key)) {
    const value = state.data.labels[Number(event.key) - 1];
    if (value !== undefined) choose(value);
  } else if (event.key === "Enter" || event.key === "a") {
    choose(rows[state.current] && rows[state.current].label);
  } else if (event.key === "j" || event.key === "ArrowDown") {
    state.current = Math.min(state.current + 1, rows.length - 1);
    render();
  } else if (event.key === "k" || event.key === "ArrowUp") {
    state.current = Math.max(state.current - 1, 0);
    render();
  } else {
    return;
  }
  event.preventDefault();
});

$("open").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.file = $("file").value.trim();
  state.labels = $("labels").value.trim();
  state.annotator = $("annotator").value.trim() || "annotator";
  localStorage.setItem("annotator", state.annotator);
  const query = new URLSearchParams({ file: state.file, labels: state.labels, annotator: state.annotator });
  history.replaceState(null, "", `?${query}`);
  show("", "info");
  document.activeElement.blur();
  try {
    await load();
  } catch (error) {
    state.data = null;
    $("status").hidden = true;
    $("rows").innerHTML = "";
    show(error.message, "error");
  }
});

$("compare").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = new URLSearchParams({ file: state.file, other: $("other").value.trim() });
  try {
    const a = await api(`/api/annotate/agreement?${query}`);
    $("compared").textContent = `With ${a.b}: Cohen's κ ${a.kappa.toFixed(2)} (${Math.round(100 * a.agreement)}% same) ` +
      `on ${a.rows} rows with the same text`;
  } catch (error) {
    $("compared").textContent = "";
    show(error.message, "error");
  }
});

// A reload reopens the same file (the URL holds it).
const params = new URLSearchParams(location.search);
$("annotator").value = params.get("annotator") || localStorage.getItem("annotator") || "annotator";
if (params.get("file")) {
  $("file").value = params.get("file");
  $("labels").value = params.get("labels") || "";
  $("open").requestSubmit();
}
