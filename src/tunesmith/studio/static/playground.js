// Playground: two models answer side by side (streamed), or blind A/B judged with 1/2/3 into preference data.
"use strict";

(() => {
  const { $, api, show, escapeHtml, num } = TS;
  const state = { duel: null, prompts: [], next: 0, busy: false, judged: 0 };

  const settings = () => ({
    temperature: Number($("temperature").value), top_p: Number($("top-p").value),
    max_new_tokens: Number($("max-new-tokens").value), seed: $("seed").value === "" ? null : Number($("seed").value),
  });

  async function stream(model, message, box) {
    box.textContent = "";
    box.classList.add("streaming");
    const response = await fetch("/api/playground/generate", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, message, settings: settings() }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error || `HTTP ${response.status}`);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const line of lines.filter(Boolean)) {
        const piece = JSON.parse(line);
        if (piece.text) box.textContent += piece.text;
        if (piece.error) throw new Error(piece.error);
        if (piece.done) box.dataset.done = piece.done;
      }
    }
    box.classList.remove("streaming");
  }

  async function sideBySide(message) {
    $("label-a").textContent = $("model-a").selectedOptions[0].textContent;
    $("label-b").textContent = $("model-b").selectedOptions[0].textContent;
    delete $("reply-a").dataset.done;
    delete $("reply-b").dataset.done;
    await stream($("model-a").value, message, $("reply-a"));
    await stream($("model-b").value, message, $("reply-b"));
  }

  async function duel(message) {
    $("reply-1").textContent = $("reply-2").textContent = "…";
    $("verdict").hidden = true;
    const d = await api("/api/playground/duel", { json: { a: $("model-a").value, b: $("model-b").value, message, settings: settings() } });
    state.duel = d.id;
    $("reply-1").textContent = d.replies[0];
    $("reply-2").textContent = d.replies[1];
    $("verdict").hidden = false;
    $("verdict").dataset.duel = d.id;
  }

  // keepMessage: the next prompt of a file, asked right after a judgment whose "saved" message stays shown.
  async function send(event, keepMessage = false) {
    if (event) event.preventDefault();
    const message = $("prompt").value.trim();
    if (!message || state.busy) return;
    state.busy = true;
    if (!keepMessage) show("message", "", "info");
    try {
      await ($("blind").checked ? duel(message) : sideBySide(message));
    } catch (error) {
      show("message", error.message, "error");
    } finally {
      state.busy = false;
    }
  }

  function renderStandings(rows) {
    $("standings").innerHTML = "<tr><th>model A</th><th>model B</th><th>judgments</th><th>A wins</th><th>B wins</th><th>ties</th>" +
      "<th>A's win rate [95% CI]</th><th>preference rows</th></tr>" + rows.map((r) =>
        `<tr class="pair" data-a="${escapeHtml(r.a)}" data-b="${escapeHtml(r.b)}" data-n="${r.n}"><td>${escapeHtml(r.labels[r.a] || r.a)}</td><td>${escapeHtml(r.labels[r.b] || r.b)}</td>` +
        `<td>${r.n}</td><td>${r.wins_a}</td><td>${r.wins_b}</td><td>${r.ties}</td>` +
        `<td class="rate">${(100 * r.win_rate_a).toFixed(0)}% [${(100 * r.ci95[0]).toFixed(0)}%, ${(100 * r.ci95[1]).toFixed(0)}%]</td>` +
        `<td><code>${escapeHtml(r.preference_file)}</code> (${num(r.preference_rows)})</td></tr>`).join("");
  }

  async function pick(choice) {
    if (!state.duel || state.busy) return;
    state.busy = true;
    const id = state.duel;
    state.duel = null;
    $("verdict").hidden = true;
    try {
      const r = await api("/api/playground/judge", { json: { id, choice, judge: $("judge").value } });
      state.judged += 1;
      renderStandings(r.standings);
      show("message", `Judgment ${state.judged} saved` + (r.preference ? ` as a preference row in ${r.file}` : " (a tie: no preference row)"), "info");
    } catch (error) {
      show("message", error.message, "error");
    } finally {
      state.busy = false;
    }
    if (state.next < state.prompts.length) {
      $("prompt").value = state.prompts[state.next++];
      $("prompt-count").textContent = `prompt ${state.next} of ${state.prompts.length}`;
      send(null, true);
    }
  }

  async function loadModels() {
    const r = await api("/api/playground/models");
    const options = r.models.map((m) => `<option value="${escapeHtml(m.key)}">${escapeHtml(m.label)}</option>`).join("");
    $("model-a").innerHTML = $("model-b").innerHTML = options;
    if (r.models.length > 1) $("model-b").selectedIndex = 1;
    if (!r.models.length) show("message", "No trained runs yet: launch one on New run.", "info");
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey && event.key === "Enter") { send(); return; }
    if (!state.duel || ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName)) return;
    if (["1", "2", "3"].includes(event.key)) {
      event.preventDefault();
      pick(Number(event.key));
    }
  });
  for (const n of [1, 2, 3]) $(`pick-${n}`).addEventListener("click", () => pick(n));
  $("ask").addEventListener("submit", send);
  $("blind").addEventListener("change", () => {
    $("duel").hidden = !$("blind").checked;
    $("side-by-side").hidden = $("blind").checked;
  });
  $("load-prompts").addEventListener("click", async () => {
    try {
      const r = await api(`/api/playground/prompts?file=${encodeURIComponent($("prompts-file").value.trim())}`);
      state.prompts = r.prompts;
      state.next = 1;
      $("prompt").value = r.prompts[0];
      $("prompt-count").textContent = `prompt 1 of ${r.prompts.length}`;
    } catch (error) {
      show("message", error.message, "error");
    }
  });
  $("train").addEventListener("click", async () => {
    try {
      const r = await api("/api/playground/train", { json: {
        a: $("model-a").value, b: $("model-b").value, task: $("train-task").value, max_steps: Number($("train-steps").value) } });
      show("message", `Started ${r.job} on ${r.rows} preference rows of ${r.file}; opening its page…`, "info");
      location.href = r.url;
    } catch (error) {
      show("message", error.message, "error");
    }
  });
  api("/api/data/files").then((r) => {
    $("workspace-files").innerHTML = r.files.map((f) => `<option value="${escapeHtml(f)}">`).join("");
  });
  loadModels().catch((error) => show("message", error.message, "error"));
  api("/api/playground/standings").then((r) => renderStandings(r.standings));
})();
