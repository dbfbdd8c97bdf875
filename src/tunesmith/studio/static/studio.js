// Helpers every studio page shares: JSON calls with readable errors, messages, escaping, and small SVG charts.
"use strict";

window.TS = (() => {
  const $ = (id) => document.getElementById(id);
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f7ed8", "#d9534f", "#3a9a5b", "#f0a030", "#8e5ed8", "#20a0a0"];

  async function api(url, options = {}) {
    const init = { ...options };
    if (init.json !== undefined) {
      init.method = init.method || "POST";
      init.headers = { "content-type": "application/json", ...(init.headers || {}) };
      init.body = JSON.stringify(init.json);
      delete init.json;
    }
    const response = await fetch(url, init);
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) {
      const detail = body.detail ? body.detail.map((d) => `${d.loc.join(".")}: ${d.msg}`).join("; ") : "";
      const error = new Error(body.error || detail || `HTTP ${response.status}`);
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  function show(id, text, kind = "info") {
    const box = $(id);
    box.textContent = text || "";
    box.className = `message ${kind}`;
    box.hidden = !text;
  }

  const escapeHtml = (text) =>
    String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  function num(value, digits = 4) {
    if (value === null || value === undefined || value === "") return "–";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return value.toLocaleString("en");
    return Math.abs(value) >= 1e-3 || value === 0 ? value.toFixed(digits) : value.toExponential(2);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds);
    return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`
      : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
  }

  function node(tag, attrs = {}, parent = null) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (parent) parent.appendChild(el);
    return el;
  }

  // A line chart: series [{name, points: [[x, y], ...]}] drawn into an <svg> (its data-points counts every point).
  function chart(svg, series, { xLabel = "step", log = false } = {}) {
    const W = 640, H = 250, L = 64, R = 12, T = 26, B = 40;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.innerHTML = "";
    const shown = series.map((s) => ({ ...s, points: s.points.filter((p) => Number.isFinite(p[1]) && (!log || p[1] > 0)) }));
    const all = shown.flatMap((s) => s.points);
    svg.dataset.points = String(all.length);
    shown.forEach((s) => { svg.dataset[`points${s.key || ""}`] = String(s.points.length); });
    if (!all.length) {
      node("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent = "no points yet";
      return;
    }
    const f = log ? Math.log10 : (v) => v;
    const xs = all.map((p) => p[0]), ys = all.map((p) => f(p[1]));
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x0 === x1) x1 = x0 + 1;
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const py = (y) => H - B - ((f(y) - y0) / (y1 - y0)) * (H - T - B);
    node("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }, svg);
    node("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }, svg);
    for (let i = 0; i <= 4; i++) {
      const v = y0 + ((y1 - y0) * i) / 4, y = H - B - ((H - T - B) * i) / 4;
      node("line", { x1: L, y1: y, x2: W - R, y2: y, class: "grid" }, svg);
      node("text", { x: L - 6, y: y + 4, "text-anchor": "end", class: "tick" }, svg).textContent = num(log ? 10 ** v : v, 3);
    }
    for (let i = 0; i <= 4; i++) {
      const v = x0 + ((x1 - x0) * i) / 4;
      node("text", { x: px(v), y: H - B + 16, "text-anchor": "middle", class: "tick" }, svg).textContent = num(Math.round(v));
    }
    node("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "tick" }, svg).textContent = xLabel;
    shown.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      if (s.points.length > 1) {
        const d = s.points.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ");
        node("polyline", { points: d, fill: "none", stroke: color, "stroke-width": 2, class: "series" }, svg);
      }
      if (s.points.length <= 60) {
        s.points.forEach((p) => node("circle", { cx: px(p[0]), cy: py(p[1]), r: 2.5, fill: color }, svg));
      }
      node("rect", { x: L + 10 + i * 150, y: 6, width: 10, height: 10, fill: color }, svg);
      node("text", { x: L + 24 + i * 150, y: 15, class: "legend" }, svg).textContent = s.name;
    });
  }

  // A histogram: bins [{from, to, rows}].
  function bars(svg, bins, { xLabel = "tokens per row" } = {}) {
    const W = 640, H = 200, L = 48, R = 12, T = 10, B = 40;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.innerHTML = "";
    svg.dataset.bins = String(bins.length);
    const peak = Math.max(1, ...bins.map((b) => b.rows));
    const w = (W - L - R) / Math.max(1, bins.length);
    node("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }, svg);
    node("text", { x: L - 6, y: T + 8, "text-anchor": "end", class: "tick" }, svg).textContent = String(peak);
    bins.forEach((b, i) => {
      const h = ((H - T - B) * b.rows) / peak;
      const rect = node("rect", { x: L + i * w + 1, y: H - B - h, width: Math.max(1, w - 2), height: h, class: "bar" }, svg);
      node("title", {}, rect).textContent = `${b.from}-${b.to} tokens: ${b.rows} rows`;
      if (bins.length <= 12 || i % Math.ceil(bins.length / 12) === 0) {
        node("text", { x: L + i * w + w / 2, y: H - B + 14, "text-anchor": "middle", class: "tick" }, svg).textContent = String(b.from);
      }
    });
    node("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "tick" }, svg).textContent = xLabel;
  }

  function download(name, text, type = "application/x-yaml") {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type }));
    link.download = name;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  const params = () => new URLSearchParams(location.search);

  return { $, api, show, escapeHtml, num, duration, chart, bars, download, params, COLORS };
})();
