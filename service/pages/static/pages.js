// geonas pages: fetch JSON/SVG/PNG from the API (with the session's bearer token), insert, sort, poll.
// No dependencies and no build step; charts arrive as SVG made by the server (service/pages/charts.py).
"use strict";

const TOKEN_KEY = "geonas.token";
const POLL_MS = 3000;

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

// Every request of every page goes through here, so a token entered once is sent everywhere.
async function api(path, as = "json") {
  const headers = {};
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, { headers });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }
  if (as === "json") return response.json();
  if (as === "blob") return response.blob();
  return response.text();
}

function $(id) { return document.getElementById(id); }
function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function num(value, digits = 3) { return value === null || value === undefined ? "—" : Number(value).toFixed(digits); }
function pathId() { return decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || ""); }
function showError(error) {
  const box = $("error");
  if (!box) return;
  box.hidden = false;
  box.textContent = error.status === 401 || error.status === 403
    ? "The API refused the request (" + error.message + "): enter an API token above."
    : String(error.message || error);
}
function badge(state) { return `<span class="state state-${esc(state)}">${esc(state)}</span>`; }
function progressBar(done, total) {
  const pct = total > 0 ? Math.min(100, Math.round((100 * done) / total)) : 0;
  return `<div class="progress" title="${done} / ${total}"><div style="width:${pct}%"></div></div>` +
    `<span class="progress-label">${done} / ${total}</span>`;
}
function dashboardLink(url) {
  return url ? `<a href="${esc(url)}" target="_blank" rel="noopener">dashboard ↗</a>` : "—";
}
function markReady() { document.body.dataset.ready = "1"; }

function setupToken() {
  const form = $("token-form");
  if (!form) return;
  const state = () => { $("token-state").textContent = token() ? "token set for this session" : ""; };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    location.reload();
  });
  $("token-clear").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });
  state();
}

// ---------------------------------------------------------------- experiments list
async function indexPage() {
  const data = await api("/ui/overview");
  const rows = data.experiments.map((e) => `<tr data-id="${esc(e.id)}">
    <td><a href="/experiments/${encodeURIComponent(e.id)}">${esc(e.name)}</a><div class="sub">${esc(e.id)}</div></td>
    <td>${badge(e.state)}${e.error ? `<div class="sub err">${esc(e.error.slice(0, 120))}</div>` : ""}</td>
    <td>${progressBar(e.trials_done, e.trials_total)}</td>
    <td>${esc(e.owner || "—")}</td><td>${esc(e.created_at.slice(0, 19).replace("T", " "))}</td>
    <td>${dashboardLink(e.dashboard_url)}</td></tr>`);
  $("experiments").tBodies[0].innerHTML = rows.join("") || `<tr><td colspan="6" class="empty">no experiments yet: submit one with <code>geonas submit</code></td></tr>`;
  $("dashboard-note").textContent = data.dashboard_note;
  const jobs = data.pretraining;
  if (!jobs || jobs.length === 0) {
    $("pretraining").innerHTML = `<p class="empty" id="no-pretraining">no pretraining jobs</p>`;
  } else {
    $("pretraining").innerHTML = `<table class="grid" id="pretraining-table"><thead><tr><th>name</th><th>state</th><th>progress</th><th>owner</th><th>Ray dashboard</th></tr></thead><tbody>` +
      jobs.map((j) => `<tr><td><a href="/pretraining/${encodeURIComponent(j.id)}">${esc(j.name)}</a></td><td>${badge(j.state)}</td>
        <td>${progressBar(j.step, j.steps)}</td><td>${esc(j.owner || "—")}</td><td>${dashboardLink(j.dashboard_url)}</td></tr>`).join("") +
      `</tbody></table>`;
  }
  const preds = await api("/v1/predictions?limit=50");
  $("predictions").innerHTML = preds.length === 0
    ? `<p class="empty" id="no-predictions">no prediction jobs: run one with <code>geonas predict MODEL SCENES --out DIR</code></p>`
    : `<table class="grid" id="predictions-table"><thead><tr><th>name</th><th>state</th><th>scenes</th><th>windows/s</th><th>model</th><th>Ray dashboard</th></tr></thead><tbody>` +
      preds.map((j) => `<tr><td><a href="/predictions/${encodeURIComponent(j.id)}">${esc(j.name)}</a><div class="sub">${esc(j.id)}</div></td><td>${badge(j.state)}</td>
        <td>${progressBar(j.progress.scenes_done || 0, j.progress.scenes_total || 0)}</td><td class="num">${num(j.progress.windows_per_s, 1)}</td>
        <td><a href="/models/${encodeURIComponent(j.model_id)}">${esc(j.model_id)}</a></td><td>${dashboardLink(j.dashboard_url)}</td></tr>`).join("") +
      `</tbody></table>`;
}

// ---------------------------------------------------------------- experiment
const view = { id: "", version: "", sort: "created_at", order: "asc", offset: 0, limit: 50, state: "", q: "", selected: null, pageIds: [] };

async function loadCharts() {
  const base = `/ui/experiments/${encodeURIComponent(view.id)}`;
  const [scatter, rewards] = await Promise.all([api(`${base}/scatter.svg`, "text"), api(`${base}/rewards.svg`, "text")]);
  $("scatter").innerHTML = scatter;
  $("rewards").innerHTML = rewards;
  const svg = $("scatter").querySelector("svg");
  const points = svg ? svg.dataset.points : 0;
  const trials = svg ? svg.dataset.trials : 0;
  $("scatter-caption").textContent = svg && svg.dataset.trials
    ? `${points} of ${trials} trials have mIoU and latency; ${svg.dataset.front} on the Pareto front. Click a point for its learning curve.`
    : "";
}

async function loadTable() {
  const params = new URLSearchParams({ sort: view.sort, order: view.order, offset: view.offset, limit: view.limit });
  if (view.state) params.set("state", view.state);
  if (view.q) params.set("q", view.q);
  const data = await api(`/ui/experiments/${encodeURIComponent(view.id)}/trials?${params}`);
  view.pageIds = data.rows.map((r) => r.id);
  $("trials").tBodies[0].innerHTML = data.rows.map((t) => `<tr data-trial="${esc(t.id)}" class="${t.id === view.selected ? "selected" : ""}">
    <td>${badge(t.state)}</td><td>${esc(t.kind)}</td><td>${t.stage}</td><td class="mono">${esc(t.arch_hash || "—")}</td>
    <td class="num" data-col="miou">${num(t.miou)}</td><td class="num" data-col="latency_ms">${num(t.latency_ms, 2)}</td>
    <td class="num">${t.params === null ? "—" : Number(t.params).toLocaleString("en")}</td><td class="num">${num(t.reward, 4)}</td>
    <td class="num">${t.epoch}</td><td class="num">${num(t.duration_s, 1)}</td><td class="err">${esc(t.error || "")}</td></tr>`).join("")
    || `<tr><td colspan="11" class="empty">no trials match</td></tr>`;
  const last = Math.min(data.offset + data.rows.length, data.total);
  $("table-count").textContent = `${data.total} of ${data.all} trials`;
  $("page-label").textContent = data.total ? `${data.offset + 1}–${last}` : "";
  $("prev").disabled = view.offset === 0;
  $("next").disabled = last >= data.total;
  for (const th of $("trials").tHead.rows[0].cells) {
    th.classList.toggle("asc", th.dataset.sort === view.sort && view.order === "asc");
    th.classList.toggle("desc", th.dataset.sort === view.sort && view.order === "desc");
  }
}

async function loadCurves() {
  const ids = view.pageIds.slice(0, 50);
  const highlight = view.selected || ids[0] || "";
  const params = new URLSearchParams({ ids: ids.join(","), highlight });
  $("curves").innerHTML = await api(`/ui/experiments/${encodeURIComponent(view.id)}/curves.svg?${params}`, "text");
  $("curve-trial").textContent = highlight ? `(highlighted: ${highlight}; faint: this table page)` : "";
}

function renderSummary(s) {
  $("title").textContent = s.name;
  $("crumbs").innerHTML = `/ experiment ${esc(s.id)}`;
  const states = Object.entries(s.states).map(([k, v]) => `${badge(k)} ${v}`).join(" ");
  const best = s.best ? `${num(s.best.miou)} mIoU at ${num(s.best.latency_ms, 2)} ms (<span class="mono">${esc(s.best.arch_hash || s.best.id)}</span>)` : "—";
  const models = s.models.map((m) => `<a href="/models/${encodeURIComponent(m.id)}">${esc(m.kind)} ${esc(m.arch_hash || m.id)} (${num(m.miou)})</a>${(m.flags || []).length ? ` <span class="flag">${esc(m.flags.join(", "))}</span>` : ""}`).join(", ") || "none yet";
  $("summary").innerHTML = `<div>${badge(s.state)} ${progressBar(s.trials_done, s.trials_total)} <span id="live">${["pending", "running"].includes(s.state) ? "live: updating every 3 s" : ""}</span></div>
    <dl><dt>searcher</dt><dd>${esc(s.searcher || "—")}</dd><dt>backbone</dt><dd>${esc(typeof s.backbone === "string" ? s.backbone : JSON.stringify(s.backbone))}</dd>
    <dt>latency target</dt><dd>${s.target_ms ? num(s.target_ms, 1) + " ms" : "none"} on ${esc(s.latency_device || "—")}</dd>
    <dt>trials</dt><dd>${states || "none yet"}</dd><dt>best</dt><dd>${best}</dd><dt>stage-2 models</dt><dd>${models}</dd>
    <dt>Ray</dt><dd>${dashboardLink(s.dashboard_url)} <span class="sub">${esc(s.dashboard_note)}</span></dd></dl>
    ${s.error ? `<div class="error">${esc(s.error)}</div>` : ""}`;
}

async function refreshExperiment(first) {
  const summaryUrl = `/ui/experiments/${encodeURIComponent(view.id)}/summary`;
  if (first) {  // everything at once: the server reads the trials once and the others wait for it
    const [summary] = await Promise.all([api(summaryUrl), loadCharts(), loadTable().then(loadCurves)]);
    renderSummary(summary);
    view.version = summary.version;
    return summary;
  }
  const summary = await api(summaryUrl);
  renderSummary(summary);
  if (summary.version !== view.version) {
    view.version = summary.version;
    await Promise.all([loadCharts(), loadTable().then(loadCurves)]);
  }
  return summary;
}

function selectTrial(id) {
  view.selected = id;
  for (const row of $("trials").tBodies[0].rows) row.classList.toggle("selected", row.dataset.trial === id);
  loadCurves().catch(showError);
}

async function experimentPage() {
  view.id = pathId();
  for (const th of $("trials").tHead.rows[0].cells) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      view.order = view.sort === key && view.order === "desc" ? "asc" : view.sort === key ? "desc" : (["miou", "reward"].includes(key) ? "desc" : "asc");
      view.sort = key;
      view.offset = 0;
      loadTable().then(loadCurves).catch(showError);
    });
  }
  $("filter-state").addEventListener("change", (e) => { view.state = e.target.value; view.offset = 0; loadTable().then(loadCurves).catch(showError); });
  let timer = null;
  $("filter-text").addEventListener("input", (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => { view.q = e.target.value.trim(); view.offset = 0; loadTable().then(loadCurves).catch(showError); }, 250);
  });
  $("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - view.limit); loadTable().then(loadCurves).catch(showError); });
  $("next").addEventListener("click", () => { view.offset += view.limit; loadTable().then(loadCurves).catch(showError); });
  $("trials").tBodies[0].addEventListener("click", (e) => { const row = e.target.closest("tr[data-trial]"); if (row) selectTrial(row.dataset.trial); });
  for (const box of ["scatter", "rewards"]) {
    $(box).addEventListener("click", (e) => { const pt = e.target.closest("[data-trial]"); if (pt) selectTrial(pt.dataset.trial); });
  }
  let summary = await refreshExperiment(true);
  markReady();
  // Live: poll a small summary; charts and table reload only when the experiment's version changes.
  while (["pending", "running"].includes(summary.state)) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    try { summary = await refreshExperiment(false); } catch (error) { showError(error); }
  }
}

// ---------------------------------------------------------------- model
let chip = 0;
async function loadPreview(id) {
  const base = `/ui/models/${encodeURIComponent(id)}`;
  try {
    const meta = await api(`${base}/preview.json?chip=${chip}`);
    $("preview-meta").textContent = `${meta.split} chip ${meta.chip_id} (${meta.size.join("×")} px)` +
      (meta.pixel_accuracy === null ? "" : `, pixel accuracy ${num(meta.pixel_accuracy)}`);
    $("legend").innerHTML = meta.classes.map((c, i) => `<span><i style="background:${meta.palette[i]}"></i>${esc(c)}</span>`).join("");
    await Promise.all(["input", "truth", "prediction"].map(async (kind) => {
      const blob = await api(`${base}/preview/${kind}.png?chip=${chip}`, "blob");
      const img = $(`img-${kind}`);
      const loaded = new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; });
      img.src = URL.createObjectURL(blob);
      await loaded;
    }));
  } catch (error) {
    $("preview-meta").textContent = `preview unavailable: ${error.message}`;
  }
}

async function download(id, name) {
  const blob = await api(`/v1/models/${encodeURIComponent(id)}/artifacts/${encodeURIComponent(name)}`, "blob");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
}

// stage 2's fresh measurement against stage 1's, and the target rule (search_spaces/feasibility.py)
function latencyCheck(c) {
  if (!c) return "—";
  const against = c.stage1_ms == null ? "" : ` against ${num(c.stage1_ms, 2)} ms in stage 1`;
  const target = c.limit_ms == null ? "no target" : `${c.meets_target ? "meets" : "breaks"} the target (≤ ${num(c.limit_ms, 2)} ms)`;
  const flags = (c.flags || []).length ? ` <span class="flag">${esc(c.flags.join(", "))}</span>` : "";
  return `${num(c.stage2_ms, 2)} ms measured fresh${against}; ${target}${flags}`;
}

async function modelPage() {
  const id = pathId();
  const base = `/ui/models/${encodeURIComponent(id)}`;
  const m = await api(`/v1/models/${encodeURIComponent(id)}`);
  $("title").textContent = `Model ${m.arch_hash || m.id}`;
  $("crumbs").innerHTML = `/ <a href="/experiments/${encodeURIComponent(m.experiment_id)}">experiment ${esc(m.experiment_id)}</a> / model ${esc(m.id)}`;
  $("summary").innerHTML = `<dl><dt>kind</dt><dd>${esc(m.kind)}</dd><dt>mIoU (test)</dt><dd>${num(m.miou)}</dd>
    <dt>latency</dt><dd>${num(m.latency_ms, 2)} ms on ${esc(m.latency_device || "—")}</dd>
    <dt>latency check</dt><dd>${latencyCheck(m.metrics.latency_check)}</dd>
    <dt>fine-tuned from</dt><dd>${esc(m.training.init || "—")}</dd>
    <dt>bands</dt><dd>${esc((m.data.bands || []).join(", "))}</dd><dt>classes</dt><dd>${esc((m.data.classes || []).join(", "))}</dd>
    <dt>trial</dt><dd class="mono">${esc(m.trial_id || "—")}</dd></dl>`;
  $("artifacts").innerHTML = m.artifacts.map((name) => `<li><a href="/v1/models/${encodeURIComponent(id)}/artifacts/${encodeURIComponent(name)}" data-artifact="${esc(name)}">${esc(name)}</a></li>`).join("") || "<li>none</li>";
  $("artifacts").addEventListener("click", (e) => {
    const link = e.target.closest("a[data-artifact]");
    if (link && token()) { e.preventDefault(); download(id, link.dataset.artifact).catch(showError); }
  });
  const [cells, iou] = await Promise.all([api(`${base}/cells.svg`, "text"), api(`${base}/iou.svg`, "text")]);
  $("cells").innerHTML = cells;
  $("iou").innerHTML = iou;
  $("next-chip").addEventListener("click", () => { chip += 1; loadPreview(id); });
  await loadPreview(id);
}

// ---------------------------------------------------------------- pretraining
async function pretrainingPage() {
  const id = pathId();
  const job = await api(`/ui/pretraining/${encodeURIComponent(id)}`);
  $("title").textContent = `Pretraining ${job.name}`;
  $("crumbs").innerHTML = `/ pretraining ${esc(job.id)}`;
  $("summary").innerHTML = `<div>${badge(job.state)} ${progressBar(job.step, job.steps)}</div>
    <dl><dt>backbone</dt><dd>${esc(job.spec.backbone || "—")}</dd><dt>owner</dt><dd>${esc(job.owner || "—")}</dd>
    <dt>Ray</dt><dd>${dashboardLink(job.dashboard_url)}</dd><dt>encoder</dt><dd class="mono">${esc(job.artifact || "—")}</dd></dl>
    ${job.error ? `<div class="error">${esc(job.error)}</div>` : ""}`;
  $("loss").innerHTML = await api(`/ui/pretraining/${encodeURIComponent(id)}/loss.svg`, "text");
  $("knn").innerHTML = knnTable(job.knn);
}

// knn: {encoder: {subset: {k: {metric: value}}}, random_spread?, chips?} -> one row per (subset, k), one
// column per encoder × metric, then random init's seed-to-seed spread per metric (a gain below it is noise).
function knnTable(knn) {
  if (!knn || typeof knn !== "object" || Object.keys(knn).length === 0) return `<p class="empty">no k-NN results</p>`;
  const { random_spread: spread, chips, ...tables } = knn;
  const encoders = Object.keys(tables);
  const rows = new Map();
  const metrics = new Set();
  for (const enc of encoders) {
    for (const [subset, byK] of Object.entries(tables[enc] || {})) {
      for (const [k, scores] of Object.entries(byK || {})) {
        const key = `${subset}\u0000${k}`;
        if (!rows.has(key)) rows.set(key, { subset, k, values: {} });
        for (const [metric, value] of Object.entries(scores || {})) {
          if (metric === "k_used") continue;
          metrics.add(metric);
          rows.get(key).values[`${enc}\u0000${metric}`] = value;
        }
      }
    }
  }
  const cols = encoders.flatMap((e) => [...metrics].map((m) => [e, m]));
  const spreadCols = spread ? [...metrics] : [];
  const spreadOf = (r, m) => (((spread || {})[r.subset] || {})[r.k] || {})[m];
  const caption = chips && typeof chips === "object"
    ? `<caption>${esc(chips.count)} labelled chips from <span class="mono">${esc(chips.path)}</span>: ${chips.held_out ? "held out from pretraining" : "the pretraining chips themselves (name knn_data to hold some out)"}${chips.metric ? `; ${esc(chips.metric)} distance` : ""}</caption>`
    : "";
  return `<table class="grid" id="knn-table">${caption}<thead><tr><th>bands</th><th>k</th>${cols.map(([e, m]) => `<th>${esc(e)} ${esc(m)}</th>`).join("")}${spreadCols.map((m) => `<th>random max−min ${esc(m)}</th>`).join("")}</tr></thead><tbody>` +
    [...rows.values()].map((r) => `<tr><td>${esc(r.subset)}</td><td>${esc(r.k)}</td>${cols.map(([e, m]) => `<td class="num">${num(r.values[`${e}\u0000${m}`])}</td>`).join("")}${spreadCols.map((m) => `<td class="num">${spreadOf(r, m) ? num(spreadOf(r, m).spread) : "—"}</td>`).join("")}</tr>`).join("") +
    `</tbody></table>`;
}

// ---------------------------------------------------------------- prediction
// The job's progress (scenes done, windows/s), its Ray dashboard link and each scene's outcome; polled until it ends.
async function predictionPage() {
  const id = pathId();
  const job = await api(`/v1/predictions/${encodeURIComponent(id)}`);
  const p = job.progress || {};
  $("title").textContent = `Prediction ${job.name}`;
  $("crumbs").innerHTML = `/ prediction ${esc(job.id)}`;
  $("summary").innerHTML = `<div>${badge(job.state)} ${progressBar(p.scenes_done || 0, p.scenes_total || 0)} scenes</div>
    <dl><dt>model</dt><dd><a href="/models/${encodeURIComponent(job.model_id)}">${esc(job.model_id)}</a></dd>
    <dt>windows</dt><dd id="windows">${esc(p.windows_done ?? 0)} / ${esc(p.windows_total ?? "—")}</dd>
    <dt>windows/s</dt><dd id="rate">${num(p.windows_per_s, 1)}</dd>
    <dt>skipped, failed</dt><dd>${esc(p.scenes_skipped ?? 0)}, ${esc(p.scenes_failed ?? 0)}</dd>
    <dt>actors</dt><dd>${esc(p.actors ?? "—")}${p.gpus_per_actor ? " (GPU)" : ""} on ${Object.keys(p.nodes || {}).length} node(s)</dd>
    <dt>output</dt><dd class="mono">${esc(job.spec.out)}</dd><dt>mosaic</dt><dd class="mono">${esc(job.mosaic || "—")}</dd>
    <dt>Ray</dt><dd>${dashboardLink(job.dashboard_url)} ${job.dashboard_note ? `<small>${esc(job.dashboard_note)}</small>` : ""}</dd></dl>
    ${job.error ? `<div class="error">${esc(job.error)}</div>` : ""}`;
  $("scenes").innerHTML = (job.scenes || []).length === 0 ? `<p class="empty">no scenes planned yet</p>`
    : `<table class="grid" id="scenes-table"><thead><tr><th>scene</th><th>state</th><th>windows</th><th>output</th><th>error</th></tr></thead><tbody>` +
      job.scenes.map((s) => `<tr><td class="mono">${esc(s.scene)}</td><td>${badge(s.state)}</td><td class="num">${esc(s.windows)}</td><td class="mono">${esc(s.output)}</td><td>${esc(s.error || "")}</td></tr>`).join("") +
      `</tbody></table>`;
  if (!["completed", "failed", "cancelled"].includes(job.state)) setTimeout(() => predictionPage().catch(showError), POLL_MS);
}

const PAGES = {
  index: indexPage, experiment: experimentPage, model: modelPage, pretraining: pretrainingPage, prediction: predictionPage,
};

document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  const page = PAGES[document.body.dataset.page];
  if (!page) return;
  page().catch((error) => {
    if (document.body.dataset.page === "pretraining" && error.status === 404) {
      $("summary").innerHTML = `<p class="empty" id="no-pretraining">no pretraining jobs: ${esc(error.message)}</p>`;
    } else {
      showError(error);
    }
  }).finally(markReady);
});
