/* bmseg dashboard scripts: plain JavaScript, no build step, no inline scripts (strict CSP).
 * Pages are picked by <body data-page>; live views poll the dashboard's JSON routes (session cookie). */
"use strict";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1500;

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "className") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children || []) node.append(child);
  return node;
}

function setProgress(bar, fraction, status) {
  if (!bar) return;
  const inner = bar.querySelector("span");
  const pct = Math.round(Math.max(0, Math.min(1, Number(fraction) || 0)) * 100);
  inner.style.width = pct + "%";
  inner.dataset.progress = String(fraction);
  bar.classList.toggle("done", status === "succeeded");
  bar.classList.toggle("failed", status === "failed");
  return pct;
}

function initProgressBars() {
  document.querySelectorAll("[data-progress]").forEach((inner) => {
    inner.style.width = Math.round(Math.max(0, Math.min(1, Number(inner.dataset.progress) || 0)) * 100) + "%";
  });
}

function shortTime(iso) {
  return iso ? iso.slice(0, 19).replace("T", " ") : "–";
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}

function poll(fn, intervalMs) {
  let stopped = false;
  let timer = null;
  async function tick() {
    if (stopped) return;
    let again = true;
    try {
      again = (await fn()) !== false;
    } catch (error) {
      console.warn(error);
    }
    if (again && !stopped) timer = setTimeout(tick, document.hidden ? intervalMs * 4 : intervalMs);
  }
  timer = setTimeout(tick, intervalMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/* ------------------------------------------------------------------------- jobs list */

function jobRow(job, table) {
  const jobUrl = table.dataset.jobUrl.replace("JOB_ID", job.id);
  const bar = el("div", { className: "progress" }, [el("span")]);
  const pct = setProgress(bar, job.progress, job.status);
  const study = job.study_id
    ? el("a", { href: table.dataset.studyUrl.replace(/0$/, String(job.study_id)), text: "#" + job.study_id })
    : el("span", { className: "muted", text: "–" });
  return el("tr", { "data-job-id": job.id, "data-status": job.status }, [
    el("td", {}, [el("a", { className: "mono", href: jobUrl, text: job.id.slice(0, 8) })]),
    el("td", { text: job.type }),
    el("td", {}, [el("span", { className: "badge badge-" + job.status, text: job.status })]),
    el("td", {}, [el("div", { className: "progress-row" }, [bar, el("span", { className: "pct", text: pct + " %" })])]),
    el("td", { className: "message", text: job.message || "" }),
    el("td", {}, [study]),
    el("td", { className: "small muted", text: shortTime(job.created_at).slice(0, 16) }),
  ]);
}

function initJobsPage() {
  const table = document.getElementById("jobs-table");
  if (!table) return;
  const body = table.querySelector("tbody");
  const empty = document.getElementById("jobs-empty");
  poll(async () => {
    const data = await getJSON(table.dataset.source);
    body.replaceChildren(...data.jobs.map((job) => jobRow(job, table)));
    if (empty) empty.hidden = data.jobs.length > 0;
    return true;
  }, POLL_MS);
}

/* ------------------------------------------------------------------------- job page */

/* The result card is drawn by the server (headline, per-study and per-lesion tables, every figure): once the
 * job has finished with a result, this page's own HTML is fetched and its card swapped in, without a reload. */
async function renderResult(job) {
  const card = document.getElementById("result-card");
  if (!job.result || !FINISHED.has(job.status) || card.dataset.fresh === "true") return;
  const response = await fetch(window.location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } });
  if (!response.ok) throw new Error(window.location.pathname + ": HTTP " + response.status);
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById("result-card");
  if (!fresh) return;
  fresh.dataset.fresh = "true";
  card.replaceWith(document.importNode(fresh, true));
}

function renderLog(events) {
  const log = document.getElementById("job-log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  const lines = [];
  for (const event of events) {
    lines.push(el("span", { className: "at", text: (event.at || "").slice(11, 19) }));
    lines.push(" ");
    lines.push(el("span", { className: "lvl-" + event.level, text: event.message }));
    lines.push("\n");
  }
  log.replaceChildren(...lines);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function paramsText(params) {
  return Object.entries(params || {}).map(([key, value]) => key + "=" + value + " ").join("");
}

/* A sweep's or cross-validation's children, live: one row per child job, as the template draws them. */
function renderChildren(children) {
  const table = document.getElementById("children-table");
  if (!table || !children) return;
  const count = document.getElementById("children-count");
  if (count) count.textContent = children.length + " train job(s)";
  if (children.length === 0) return;
  const rows = children.map((child) =>
    el("tr", { "data-job-id": child.id, "data-status": child.status }, [
      el("td", {}, [el("a", { className: "mono", href: table.dataset.jobUrl.replace("JOB_ID", child.id), text: child.id.slice(0, 8) })]),
      el("td", { className: "mono small", text: paramsText(child.params) }),
      el("td", {}, [el("span", { className: "badge badge-" + child.status, text: child.status })]),
      el("td", { className: "num mono", text: Math.round((Number(child.progress) || 0) * 100) + " %" }),
      el("td", { className: "message small", text: child.message || "" }),
    ]),
  );
  table.querySelector("tbody").replaceChildren(...rows);
}

function initJobPage() {
  const root = document.getElementById("job-root");
  if (!root) return;
  const log = document.getElementById("job-log");
  log.scrollTop = log.scrollHeight;
  if (root.dataset.finished === "true") return;
  poll(async () => {
    const job = await getJSON(root.dataset.jsonUrl);
    const badge = document.getElementById("job-status");
    badge.textContent = job.status;
    badge.className = "badge badge-" + job.status;
    document.getElementById("job-message").textContent = job.message || "";
    const pct = setProgress(document.getElementById("job-progress"), job.progress, job.status);
    document.getElementById("job-pct").textContent = pct + " %";
    const error = document.getElementById("job-error");
    error.textContent = job.error || "";
    error.hidden = !job.error;
    for (const field of ["started_at", "finished_at"]) {
      const cell = root.querySelector('[data-field="' + field + '"]');
      if (cell) cell.textContent = shortTime(job[field]);
    }
    const worker = root.querySelector('[data-field="worker_host"]');
    if (worker) worker.textContent = job.worker_host || "–";
    const attempts = root.querySelector('[data-field="attempts"]');
    if (attempts) attempts.textContent = job.attempts + " of " + job.max_attempts;
    renderLog(job.events);
    renderChildren(job.children);
    if (job.mlflow_url && !document.getElementById("mlflow-link")) {
      const actions = document.querySelector(".page-head .actions");
      actions.prepend(el("a", { className: "button button-secondary", id: "mlflow-link", href: job.mlflow_url, target: "_blank", rel: "noopener", text: "MLflow run" }));
    }
    const finished = FINISHED.has(job.status);
    if (finished && job.children && job.result) {
      window.location.reload(); // the parent's ranking (or folds) table is drawn by the server
      return false;
    }
    await renderResult(job);
    document.getElementById("cancel-form").hidden = finished;
    root.dataset.finished = String(finished);
    document.body.dataset.jobStatus = job.status;
    return !finished;
  }, POLL_MS);
}

/* ------------------------------------------------------------------------- study viewer */

/* The study page's viewer: one slice PNG at a time, drawn by the server for the chosen plane (axial, coronal
 * or sagittal), modality, overlay and opacity; each plane keeps its own slice while another is shown. */
function initViewer() {
  const viewer = document.getElementById("viewer");
  if (!viewer) return;
  const img = document.getElementById("slice-img");
  const slider = document.getElementById("slice");
  const sliceOut = document.getElementById("slice-out");
  const opacity = document.getElementById("opacity");
  const opacityOut = document.getElementById("opacity-out");
  const planes = JSON.parse(viewer.dataset.planes || "{}");
  const lesions = JSON.parse(viewer.dataset.lesions || "{}");
  const AXIS = { sagittal: 0, coronal: 1, axial: 2 };
  const slice = {};
  for (const [name, plane] of Object.entries(planes)) slice[name] = Number(plane.start) || 0;
  const state = {
    modality: viewer.querySelector("#modality .active")?.dataset.value || "t1",
    overlay: viewer.querySelector("#overlay .active")?.dataset.value || "none",
    plane: viewer.dataset.plane || "axial",
    opacity: Number(opacity.value) / 100,
  };
  slice[state.plane] = Number(viewer.dataset.z);
  let pending = null;
  let loading = false;
  const count = () => Number(planes[state.plane]?.count) || 1;

  function url() {
    const params = new URLSearchParams({
      modality: state.modality,
      plane: state.plane,
      index: String(slice[state.plane]),
      overlay: state.overlay,
      opacity: state.opacity.toFixed(2),
    });
    if (viewer.dataset.job) params.set("job", viewer.dataset.job);
    return viewer.dataset.sliceUrl + "?" + params.toString();
  }

  function showPlane() {
    const orient = planes[state.plane]?.orient || ["", "", "", ""];
    ["top", "bottom", "left", "right"].forEach((side, i) => {
      document.getElementById("orient-" + side).textContent = orient[i];
    });
    slider.max = String(count() - 1);
    viewer.dataset.plane = state.plane;
    img.alt = state.plane.charAt(0).toUpperCase() + state.plane.slice(1) + " slice";
  }

  function show() {
    slider.value = String(slice[state.plane]);
    sliceOut.textContent = slice[state.plane] + 1 + " / " + count();
    opacityOut.textContent = Math.round(state.opacity * 100) + " %";
    const next = url();
    if (loading) {
      pending = next; // keep only the newest request while one is in flight
      return;
    }
    loading = true;
    img.src = next;
  }

  function settle(loaded) {
    loading = false;
    if (loaded) img.dataset.loaded = img.src;
    if (pending && pending !== img.src) {
      const next = pending;
      pending = null;
      loading = true;
      img.src = next;
    } else {
      pending = null;
    }
  }
  img.addEventListener("load", () => settle(true));
  img.addEventListener("error", () => settle(false));

  slider.addEventListener("input", () => {
    slice[state.plane] = Number(slider.value);
    show();
  });
  opacity.addEventListener("input", () => {
    state.opacity = Number(opacity.value) / 100;
    show();
  });
  for (const key of ["modality", "overlay", "plane"]) {
    const group = document.getElementById(key);
    group.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-value]");
      if (!button || button.disabled) return;
      group.querySelectorAll("button").forEach((b) => b.classList.toggle("active", b === button));
      state[key] = button.dataset.value;
      if (key === "plane") showPlane();
      show();
    });
  }
  document.addEventListener("keydown", (event) => {
    if (event.target.matches("input[type=text], input[type=number], select, textarea")) return;
    const step = { ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    slice[state.plane] = Math.max(0, Math.min(count() - 1, slice[state.plane] + step));
    show();
  });
  document.querySelectorAll("tr.lesion-row[data-lesion]").forEach((row) => {
    const centre = lesions[row.dataset.lesion];
    if (!centre) return;
    row.addEventListener("click", () => {
      for (const name of Object.keys(slice)) slice[name] = centre[AXIS[name]];
      show();
      viewer.scrollIntoView({ behavior: "smooth", block: "nearest" });
    });
  });
  img.dataset.loaded = img.complete ? img.src : "";
}

/* ------------------------------------------------------------------------- forms */

function initJobForm() {
  const form = document.getElementById("job-form");
  if (!form) return;
  const type = document.getElementById("type");
  function update() {
    form.querySelectorAll("[data-for]").forEach((node) => {
      const show = node.dataset.for.split(" ").includes(type.value);
      node.hidden = !show;
      node.querySelectorAll("input, select").forEach((input) => (input.disabled = !show));
    });
  }
  type.addEventListener("change", update);
  update();
  form.addEventListener("submit", () => {
    const button = document.getElementById("submit-job");
    button.disabled = true;
    button.textContent = "Queueing…";
  });
}

function initUploadForm() {
  const form = document.getElementById("upload-form");
  if (!form) return;
  form.addEventListener("submit", () => {
    const button = document.getElementById("upload-button");
    button.disabled = true;
    button.textContent = "Uploading and checking…";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  initProgressBars();
  const page = document.body.dataset.page;
  if (page === "jobs") initJobsPage();
  if (page === "job") initJobPage();
  if (page === "study") initViewer();
  if (page === "job-new") initJobForm();
  if (page === "studies") initUploadForm();
});
