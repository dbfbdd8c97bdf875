// New run: the form built from the config schema, checked, estimated and launched by the server.
"use strict";

(() => {
  const { $, api, show, escapeHtml, num, duration, download } = TS;
  let spec = null;
  const fields = new Map(); // key -> field spec

  function input(field) {
    const name = escapeHtml(field.key);
    const def = field.default;
    if (field.kind === "bool" && !field.nullable) {
      return `<input type="checkbox" name="${name}" ${def ? "checked" : ""}>`;
    }
    if (field.kind === "choice" || field.kind === "bool") {
      const choices = field.kind === "bool" ? [true, false] : field.choices;
      const options = (field.nullable ? [null] : []).concat(choices).map((c) =>
        `<option value='${escapeHtml(JSON.stringify(c))}' ${JSON.stringify(c) === JSON.stringify(def) ? "selected" : ""}>` +
        `${c === null ? "(default: none)" : escapeHtml(String(c))}</option>`).join("");
      return `<select name="${name}">${options}</select>`;
    }
    if (field.kind === "yaml") {
      return `<textarea name="${name}" rows="2" spellcheck="false" placeholder="YAML">${escapeHtml(field.default_text || "")}</textarea>`;
    }
    const value = def === null || def === undefined ? "" : String(def);
    const list = field.path ? 'list="workspace-files"' : "";
    const size = field.kind === "text" ? 36 : 12;
    return `<input type="text" name="${name}" value="${escapeHtml(value)}" size="${size}" ${list}` +
      ` ${field.required ? "required" : ""} placeholder="${field.required ? "required" : field.nullable ? "none" : ""}">`;
  }

  function fieldHtml(field) {
    if (field.group) {
      const tasks = field.tasks ? `data-tasks="${field.tasks.join(" ")}"` : "";
      const methods = field.methods ? `data-methods="${field.methods.join(" ")}"` : "";
      return `<details class="group" ${tasks} ${methods}><summary>${escapeHtml(field.key)}</summary>` +
        field.fields.map(fieldHtml).join("") + "</details>";
    }
    fields.set(field.key, field);
    return `<div class="field" data-key="${escapeHtml(field.key)}"><label title="${escapeHtml(field.description)}">` +
      `<span class="name">${escapeHtml(field.name)}${field.required ? " *" : ""}</span>${input(field)}</label>` +
      `<small>${escapeHtml(field.description)}</small><div class="field-error"></div></div>`;
  }

  function build() {
    $("config-form").innerHTML = spec.sections.map((s) =>
      `<details class="section" open data-section="${s.name}"><summary>${s.name}</summary>` +
      s.fields.map(fieldHtml).join("") + "</details>").join("");
    $("workspace-files").innerHTML = spec.files.map((f) => `<option value="${escapeHtml(f)}">`).join("");
    element("task.name").addEventListener("change", sync);
    element("method.name").addEventListener("change", sync);
    $("config-form").addEventListener("change", () => check(false));
    sync();
  }

  const element = (key) => $("config-form").querySelector(`[name="${key}"]`);

  // Methods the chosen task supports; the settings groups of the chosen task and method.
  function sync() {
    const task = JSON.parse(element("task.name").value);
    const select = element("method.name");
    const allowed = spec.task_methods[task];
    for (const option of select.options) {
      const ok = allowed.includes(JSON.parse(option.value));
      option.disabled = !ok;
      option.hidden = !ok;
    }
    if (!allowed.includes(JSON.parse(select.value))) select.value = JSON.stringify(allowed.includes("lora") ? "lora" : allowed[0]);
    const method = JSON.parse(select.value);
    for (const group of document.querySelectorAll(".group[data-tasks]")) group.hidden = !group.dataset.tasks.split(" ").includes(task);
    for (const group of document.querySelectorAll(".group[data-methods]")) group.hidden = !group.dataset.methods.split(" ").includes(method);
  }

  function value(field, el) {
    if (el.type === "checkbox") return el.checked;
    if (el.tagName === "SELECT") return JSON.parse(el.value);
    const text = el.value;
    if (field.kind === "yaml") return text.trim() === (field.default_text || "").trim() ? undefined : text;
    if (text.trim() === "") return null;
    if (field.kind === "integer" || field.kind === "number") {
      const n = Number(text);
      return Number.isNaN(n) ? text : n;
    }
    return text;
  }

  // Only what differs from the defaults (and the required fields); hidden groups keep their defaults.
  function values() {
    const out = {};
    for (const [key, field] of fields) {
      const el = element(key);
      if (!el || el.closest(".group[hidden]")) continue;
      const v = value(field, el);
      if (v === undefined || (v === null && !field.required)) continue;
      if (!field.required && JSON.stringify(v) === JSON.stringify(field.default)) continue;
      out[key] = v;
    }
    out["task.name"] = JSON.parse(element("task.name").value);
    out["method.name"] = JSON.parse(element("method.name").value);
    return out;
  }

  function markProblems(problems) {
    for (const el of document.querySelectorAll(".field.invalid")) {
      el.classList.remove("invalid");
      el.querySelector(".field-error").textContent = "";
    }
    $("problems").innerHTML = problems.map((p) => `<li><code>${escapeHtml(p.key)}</code> ${escapeHtml(p.message)}</li>`).join("");
    for (const p of problems) {
      const box = document.querySelector(`.field[data-key="${CSS.escape(p.key)}"]`);
      if (box) {
        box.classList.add("invalid");
        box.querySelector(".field-error").textContent = p.message;
        for (let d = box.closest("details"); d; d = d.parentElement.closest("details")) d.open = true;
      }
    }
  }

  async function check(announce = true, mark = true) {
    const r = await api("/api/new/check", { json: { values: values() } });
    $("yaml").textContent = r.yaml;
    if (mark) markProblems(r.problems);
    if (announce) show("message", r.ok ? "The config is valid." : r.message, r.ok ? "info" : "error");
    return r;
  }

  async function estimate() {
    show("message", "Estimating: preparing the data and probing this machine…", "info");
    try {
      const e = await api("/api/new/estimate", { json: { values: values() } });
      const parts = Object.entries(e.memory_gib).map(([k, v]) => `${escapeHtml(k)} ${num(v, 2)}`).join(", ");
      $("estimate-result").innerHTML =
        `<strong>Peak memory ~${num(e.peak_gib, 2)} GiB</strong> (${parts}) on ${escapeHtml(e.device)} · ` +
        `<strong>~${duration(e.seconds_per_epoch)} per epoch</strong> (${num(e.steps_per_epoch)} steps of ~${num(e.seconds_per_step, 2)} s, ` +
        `${num(e.tokens_per_epoch)} tokens) · ${num(e.trainable)} of ${num(e.parameters)} parameters trained`;
      $("estimate-result").hidden = false;
      show("message", "", "info");
    } catch (error) {
      show("message", error.message, "error");
    }
  }

  async function launch() {
    const r = await check(false);
    if (!r.ok) {
      show("message", r.message, "error");
      return;
    }
    try {
      const job = await api("/api/new/launch", { json: { values: values() } });
      show("message", `Launched ${job.job} (${job.status}); opening its page…`, "info");
      location.href = job.url;
    } catch (error) {
      show("message", error.message, "error");
    }
  }

  async function loadYaml(file) {
    const text = await file.text();
    try {
      const r = await api("/api/new/load", { json: { yaml: text } });
      for (const [key, field] of fields) {
        const el = element(key);
        const given = key in r.values ? r.values[key] : field.kind === "yaml" ? field.default_text : field.default;
        if (el.type === "checkbox") el.checked = Boolean(given);
        else if (el.tagName === "SELECT") el.value = JSON.stringify(given === undefined ? null : given);
        else el.value = given === null || given === undefined ? "" : String(given);
      }
      sync();
      await check();
    } catch (error) {
      show("message", error.message, "error");
    }
  }

  $("check").addEventListener("click", () => check().catch((e) => show("message", e.message, "error")));
  $("estimate").addEventListener("click", estimate);
  $("launch").addEventListener("click", launch);
  $("download").addEventListener("click", async () => {
    const r = await check(false);
    const name = (values()["output.name"] || "run") + ".yaml";
    download(name, r.yaml);
  });
  $("load-yaml").addEventListener("change", (event) => event.target.files[0] && loadYaml(event.target.files[0]));

  api("/api/new/form").then((s) => {
    spec = s;
    build();
    check(false, false);
  }).catch((error) => show("message", error.message, "error"));
})();
