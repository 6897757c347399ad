/* One experiment, what matters first: the best trial (its step and checkpoint), the best
 * value so far, the learning curves; then the trials table (trials_table.js), a comparison
 * of selected trials, rungs and brackets, parallel coordinates, parameter importance and
 * the document. Charts are drawn by charts.js. */
"use strict";

const ACTIVE = new Set(["pending", "running", "paused", "lost"]);
/* The table (the export JSON) is read in slices of TABLE_SLICE trials (each a short
 * request; the first slice, the best trials, shows while the others load); above
 * BIG_TABLE trials it is read at most every BIG_TABLE_MS. ?table_slice=N sets the slice. */
const TABLE_SLICE = Number(new URLSearchParams(location.search).get("table_slice")) || 2000;
const BIG_TABLE = 2000;
const BIG_TABLE_MS = 10000;

/* One table from slices of the export: every trial once (by number), columns merged. */
function mergeTables(parts) {
  const seen = new Set();
  const trials = [];
  const params = [];
  const metrics = new Set();
  for (const part of parts) {
    for (const p of part.params) if (!params.includes(p)) params.push(p);
    for (const m of part.metrics) metrics.add(m);
    for (const t of part.trials) {
      if (!seen.has(t.number)) { seen.add(t.number); trials.push(t); }
    }
  }
  return Object.assign({}, parts[0], { params, metrics: Array.from(metrics).sort(), trials,
    offset: 0 });
}

document.addEventListener("DOMContentLoaded", () => T.start(async (main) => {
  const { el } = T;
  const id = Number(document.body.dataset.id);
  const admin = T.isAdmin();
  const base = "/api/v1/experiments/" + id;
  const ui = "/ui/api/experiments/" + id;
  let poller = null;
  let exp = null;
  if (!await T.exists(base)) {
    T.showMissing(main, "Experiment " + id + " does not exist");
    return;
  }

  // ---- header and actions -------------------------------------------------------------
  const title = el("h1", { id: "exp-name" });
  const stateBadge = el("span", { id: "exp-state" });
  const actions = el("div", { className: "actions", id: "actions" });
  const act = (action, label, text, danger) => T.actionButton(label,
    danger ? "danger" : "secondary", async () => {
      const ok = await T.confirmAction(label + " “" + exp.name + "”?", text, label, danger);
      if (!ok) return;
      await T.api(base + "/" + action, { method: "POST" });
      T.banner(label + ": done.", "info");
      poller.now();
    });
  const buttons = {
    pause: act("pause", "Pause", "No new jobs start while paused; running jobs finish."),
    resume: act("resume", "Resume", "Jobs start again."),
    cancel: act("cancel", "Cancel", "Every unfinished trial is cancelled. This cannot be undone.",
      true),
  };
  for (const [k, b] of Object.entries(buttons)) { b.id = "action-" + k; b.hidden = true; }
  if (admin) actions.append(buttons.pause, buttons.resume, buttons.cancel);
  main.append(el("nav", { className: "crumbs", "aria-label": "Breadcrumb" },
    el("a", { href: "/ui" }, "Experiments"), " › ", el("span", null, "experiment " + id)));
  main.append(el("div", { className: "title-row" }, title, stateBadge, actions));
  // Why the service paused it (the breaker), while it says so.
  const stateReason = el("p", { id: "exp-state-reason", className: "state-reason" });
  stateReason.hidden = true;
  main.append(stateReason);

  // ---- the best trial -----------------------------------------------------------------
  const best = {
    value: el("div", { className: "best-value", id: "best-value" }, "—"),
    metric: el("div", { className: "muted small", id: "best-metric" }),
    link: el("a", { id: "best-link" }),
    step: el("dd", { id: "best-step" }, "—"),
    checkpoint: el("dd", { id: "best-checkpoint" }, "—"),
    seen: el("dd", { id: "best-seen" }, "—"),
    params: el("dd", { id: "best-params", className: "params" }, "—"),
  };
  const bestFacts = el("dl", { className: "facts best-facts" },
    el("div", null, el("dt", null, "Trial"), el("dd", null, best.link)),
    el("div", null, el("dt", null, "Step (rung)"), best.step),
    el("div", null, el("dt", null, "Checkpoint"), best.checkpoint),
    el("div", null, el("dt", null, "Best at any rung"), best.seen),
    el("div", { className: "wide" }, el("dt", null, "Parameters"), best.params));
  main.append(el("section", { className: "panel best", id: "best", "aria-labelledby": "best-h" },
    el("h2", { id: "best-h" }, "Best trial"),
    el("div", { className: "best-grid" }, el("div", null, best.value, best.metric), bestFacts),
    el("p", { className: "muted small" }, "Ranked as the scheduler ranks: the highest rung "
      + "reached, then the value there. The checkpoint is the one saved at that step or after.")));

  function fillBest(t) {
    if (!t) {
      T.setText(best.value, "—");
      T.setText(best.metric, "no trial has a result yet");
      return;
    }
    const ranked = t.ranked_value !== undefined ? t.ranked_value : t.best_value;
    T.setText(best.value, T.fmtValue(ranked));
    T.setText(best.metric, exp.config.metric + " (" + (exp.config.mode === "max" ? "higher"
      : "lower") + " is better), at its highest rung");
    T.setAttr(best.link, "href", T.trialUrl(id, t.number));
    T.setText(best.link, "trial " + T.trialName(id, t.number));
    const step = t.ranked_step !== undefined && t.ranked_step !== null ? t.ranked_step : null;
    T.setText(best.step, step === null ? "—" : "step " + T.fmtInt(step) + " (rung " + t.rung + ")");
    const ckStep = t.checkpoint_step;
    T.setText(best.checkpoint, t.checkpoint
      ? t.checkpoint + (ckStep !== undefined && ckStep !== null ? ", saved at step "
        + T.fmtInt(ckStep) : "") : "no checkpoint reported");
    T.setText(best.seen, T.fmtValue(t.best_value));
    T.setText(best.params, T.fmtParams(t.params));
  }

  // ---- summary ------------------------------------------------------------------------
  const f = {};
  const card = (label, key, extra) => {
    f[key] = el("div", { className: "value", id: "sum-" + key });
    return el("div", { className: "card" }, el("div", { className: "label" }, label), f[key],
      extra || null);
  };
  const progressBar = el("progress", { max: "1", value: "0", id: "exp-progress" });
  const states = T.stateBar();
  main.append(el("section", { className: "cards", "aria-label": "Summary" },
    card("Trials", "trials", progressBar),
    card("Resource used", "resource"),
    card("Age", "age"),
    el("div", { className: "card" }, el("div", { className: "label" }, "Trials by state"),
      states.node)));

  // ---- best so far and learning curves ------------------------------------------------
  const bsfBy = el("select", { id: "best-by", "aria-label": "Best so far against" },
    el("option", { value: "time" }, "over wall time"),
    el("option", { value: "resource" }, "over resource spent"));
  const bsfNote = el("p", { className: "muted small", id: "best-so-far-note" });
  const bsfDiv = el("div", { className: "chart short-wide", id: "best-so-far-chart" });
  let bsfData = null;
  bsfBy.addEventListener("change", () => { if (bsfData) drawBestSoFar(); });
  main.append(T.section("Best value so far", "best-so-far",
    el("div", { className: "toolbar" }, bsfBy), bsfNote, bsfDiv));

  const curvesNote = el("p", { className: "muted small", id: "curves-note" });
  const curvesDiv = el("div", { className: "chart", id: "curves-chart" });
  main.append(T.section("Learning curves", "curves", curvesNote, curvesDiv));

  // ---- trials table and comparison ----------------------------------------------------
  const trials = TrialsTable.create({
    experimentId: id, admin,
    onStop: async (row) => { if (await T.stopTrial(id, row.number)) poller.now(); },
    onCompare: (numbers) => showCompare(numbers),
  });
  main.append(T.section("Trials", "trials", trials.node));

  const cmpDiv = el("div", { className: "chart medium", id: "compare-chart" });
  const cmpTable = el("table", { id: "compare-table", className: "compare" });
  const cmpClose = el("button", { type: "button", className: "secondary", id: "compare-close" },
    "Close");
  const cmpSection = T.section("Compare trials", "compare",
    el("div", { className: "toolbar" }, cmpClose), cmpDiv,
    el("div", { className: "table-wrap", tabindex: "0", role: "region",
      "aria-label": "Parameters side by side" }, cmpTable));
  cmpSection.hidden = true;
  cmpClose.addEventListener("click", () => { cmpSection.hidden = true; });
  main.append(cmpSection);

  const rungs = T.tableOf(["Bracket", "Rung", "Resource", "Results", "Promoted", "Stopped",
    "Waiting", "Top ⌊n/η⌋", "Value to beat"], { caption: "Rungs and brackets" });
  rungs.table.id = "rungs-table";
  const rungsNote = el("p", { className: "muted small" });
  main.append(T.section("Rungs and brackets", "rungs", rungsNote, rungs.wrap));

  const pcNote = el("p", { className: "muted small", id: "parcoords-note" });
  const pcDiv = el("div", { className: "chart tall", id: "parcoords-chart" });
  main.append(T.section("Parameters against the final value", "parcoords", pcNote, pcDiv));

  const impMethod = el("p", { className: "muted small", id: "importance-method" });
  const impReason = el("p", { className: "reason", id: "importance-reason" });
  const impDiv = el("div", { className: "chart short", id: "importance-chart" });
  main.append(T.section("Parameter importance", "importance", impMethod, impReason, impDiv));

  const docPre = el("pre", { className: "doc", id: "exp-document", tabindex: "0" });
  main.append(T.section("Experiment document", "document",
    el("details", null, el("summary", null, "Show the document (JSON)"), docPre)));

  // ---- drawing ------------------------------------------------------------------------
  function drawBestSoFar() {
    const b = bsfData;
    if (!b.value.length) {
      Plotly.purge(bsfDiv);
      bsfDiv.hidden = true;
      T.setText(bsfNote, "No finite result at a rung yet.");
      return null;
    }
    bsfDiv.hidden = false;
    T.setText(bsfNote, b.value.length + " improvements over " + T.fmtInt(b.n_results)
      + " rung results; now " + T.fmtValue(b.value[b.value.length - 1]) + " (trial "
      + T.trialName(id, b.number[b.number.length - 1]) + ").");
    return Charts.bestSoFar(bsfDiv, b, bsfBy.value);
  }

  function drawCurves(c) {
    const points = c.groups.reduce((n, g) => n + g.x.length, 0);
    if (!points) {  // no empty axes: say why there is no chart
      Plotly.purge(curvesDiv);
      curvesDiv.hidden = true;
      T.setText(curvesNote, "No reports yet.");
      return null;
    }
    curvesDiv.hidden = false;
    T.setText(curvesNote, (c.shown_trials < c.total_trials
      ? "Showing " + T.fmtInt(c.shown_trials) + " of " + T.fmtInt(c.total_trials)
        + " trials (the best third and a spread of the rest)"
      : "All " + T.fmtInt(c.total_trials) + " trials") + ", at most " + c.max_points
      + " points each. The value axis is fitted to the results past the first rung "
      + "(double-click the chart for all of it). Dotted lines: rungs. Click a line to open "
      + "its trial.");
    return Charts.curves(curvesDiv, c);
  }

  function bindClick(div) {
    if (div._bound) return;
    div._bound = true;
    div.on("plotly_click", (ev) => {
      const p = ev.points && ev.points[0];
      if (p && p.customdata !== undefined && p.customdata !== null) {
        location.assign(T.trialUrl(id, p.customdata));
      }
    });
  }

  function drawParcoords(pc) {
    if (pc.n === 0) {  // one sentence, not a tall empty box
      Plotly.purge(pcDiv);
      pcDiv.classList.add("empty-chart");
      T.setText(pcNote, "No trial has a finite result at a rung yet.");
      return null;
    }
    pcDiv.classList.remove("empty-chart");
    T.setText(pcNote, "One line per trial: its parameters and its value at the highest rung it "
      + "reached (" + T.fmtInt(pc.n) + " of " + T.fmtInt(pc.total) + " trials with a result; "
      + (pc.mode === "min" ? "lower" : "higher") + " is better, brighter colours). "
      + "Categorical parameters are drawn at their choices; drag on an axis to filter.");
    return Charts.parcoords(pcDiv, pc);
  }

  function drawImportance(imp) {
    T.setText(impMethod, "Method: " + imp.method);
    if (!imp.items.length) {
      T.setText(impReason, "No importances yet: " + (imp.reason || "not enough data") + ".");
      Plotly.purge(impDiv);
      impDiv.hidden = true;
      return null;
    }
    impDiv.hidden = false;
    T.setText(impReason, "Fit on " + T.fmtInt(imp.n_trials) + " trials at rung " + imp.rung
      + " (resource " + T.fmtInt(imp.resource) + ").");
    return Charts.importance(impDiv, imp);
  }

  /* The top rung (resource R = max_resource) promotes nothing: its trials are done there,
   * so it has no one waiting, no top ⌊n/η⌋ and no value to beat. */
  function fillRungRow(tr, r) {
    const c = tr._c;
    const top = r.resource >= exp.config.scheduler.max_resource;
    tr.classList.toggle("top-rung", top);
    T.setText(c[0], r.bracket); T.setText(c[1], r.rung + (top ? " (top)" : ""));
    T.setText(c[2], T.fmtInt(r.resource));
    T.setText(c[3], T.fmtInt(r.n_results)); T.setText(c[4], T.fmtInt(r.n_promoted));
    T.setText(c[5], T.fmtInt(r.n_stopped));
    T.setText(c[6], top ? "—" : T.fmtInt(r.n_results - r.n_promoted - r.n_stopped));
    T.setText(c[7], top ? "—" : r.top_k);
    T.setText(c[8], top || r.top_k === 0 ? "—"
      : (r.promotable_value === null ? "non-finite" : T.fmtValue(r.promotable_value)));
  }

  // ---- comparison ---------------------------------------------------------------------
  function compareRows(c) {
    const rowOf = (t) => trials.rowOf(t.number) || { metrics: {} };
    const metrics = new Set();
    for (const t of c.trials) for (const m of Object.keys(rowOf(t).metrics)) metrics.add(m);
    return [
      ["State", (t) => T.trialStatus(t).text],
      [c.metric + " at rung", (t) => T.fmtValue(t.ranked_value !== undefined ? t.ranked_value
        : null)],
      ["Step", (t) => (t.ranked_step === undefined || t.ranked_step === null ? "—"
        : T.fmtInt(t.ranked_step))],
      ["Best at any rung", (t) => T.fmtValue(t.best_value)],
      ["Checkpoint", (t) => t.checkpoint || "—"],
      ...c.params.map((p) => [p, (t) => (p in t.params ? (typeof t.params[p] === "number"
        ? T.fmtValue(t.params[p]) : String(t.params[p])) : "—"), "param"]),
      ...Array.from(metrics).sort().map((m) => [m, (t) => T.fmtValue(rowOf(t).metrics[m]),
        "metric"]),
    ];
  }

  async function showCompare(numbers) {
    const q = numbers.map((n) => "trial=" + n).join("&");
    const c = await T.api(ui + "/compare?" + q);
    cmpSection.hidden = false;
    const head = el("tr", null, el("th", { scope: "col" }, ""), ...c.trials.map((t, i) => {
      const swatch = el("i", { className: "dot" });
      swatch.style.background = Charts.COMPARE_COLORS[i % Charts.COMPARE_COLORS.length];
      return el("th", { scope: "col" }, swatch, " ",
        el("a", { href: T.trialUrl(id, t.number) }, T.trialName(id, t.number)));
    }));
    const body = compareRows(c).map(([label, get, kind]) => el("tr",
      { className: kind || "" }, el("th", { scope: "row" }, label),
      ...c.trials.map((t) => el("td", { className: "num" }, get(t)))));
    cmpTable.replaceChildren(el("thead", null, head), el("tbody", null, ...body));
    cmpSection.scrollIntoView({ block: "start" });
    await T.plotly();
    await Charts.compare(cmpDiv, c);
    document.body.dataset.compared = numbers.join(",");
  }

  // ---- the poll -----------------------------------------------------------------------
  let docShown = false;
  let tableAt = 0;
  let haveTable = false;

  function fillHeader(e) {
    document.title = e.name + " · tuner";
    T.setText(title, e.name);
    T.setBadge(stateBadge, e.state);
    T.setText(stateReason, e.state_reason || "");
    stateReason.hidden = !e.state_reason;
    buttons.pause.hidden = e.state !== "running";
    buttons.resume.hidden = e.state !== "paused";
    buttons.cancel.hidden = !(e.state === "running" || e.state === "paused");
  }

  function fillSummary(e) {
    const maxTrials = e.config.budget && e.config.budget.max_trials;
    T.setText(f.trials, T.fmtInt(e.n_trials) + (maxTrials ? " / " + T.fmtInt(maxTrials) : ""));
    if (maxTrials) {
      T.setAttr(progressBar, "max", maxTrials);
      T.setAttr(progressBar, "value", Math.min(e.n_trials, maxTrials));
      T.setAttr(progressBar, "aria-label", "trials started: " + f.trials.textContent);
    } else { progressBar.hidden = true; }
    const maxRes = e.config.budget && e.config.budget.max_resource_units;
    T.setText(f.resource, T.fmtInt(e.resource_used) + (maxRes ? " / " + T.fmtInt(maxRes) : "")
      + " units");
    T.setText(f.age, T.fmtAge(e.created_at).replace(" ago", "")
      + (e.ended_at ? " (ended " + T.fmtAge(e.ended_at) + ")" : ""));
    T.fillStateBar(states, e.progress.trials_by_state);
    if (!docShown) { docShown = true; T.setText(docPre, JSON.stringify(e.config, null, 2)); }
  }

  /* The export JSON: every poll while small; at most every BIG_TABLE_MS when large. The
   * first slice is asked for with its ETag: unchanged, nothing changed. */
  async function readTable(restAfter) {
    const due = !haveTable || exp.n_trials <= BIG_TABLE || Date.now() - tableAt > BIG_TABLE_MS;
    if (!due) return null;
    tableAt = Date.now();
    const slice = (offset) => base + "/export?format=json&limit=" + TABLE_SLICE
      + "&offset=" + offset;
    const first = await T.api(slice(0), { conditional: true });
    if (!first || first.total <= TABLE_SLICE) return first;
    if (!haveTable) {  // the best trials, now
      haveTable = true;
      trials.update(first);
      performance.mark("tuner:table-first");
    }
    await restAfter;  // the rest once the charts are drawn: they matter more
    const rest = [];
    for (let at = TABLE_SLICE; at < first.total; at += TABLE_SLICE) rest.push(T.api(slice(at)));
    return mergeTables([first, ...await Promise.all(rest)]);
  }

  /* The table fills on its own (slices of a large one take longer); the rest of the page
   * does not wait for it. */
  async function fillTable(restAfter) {
    const table = await readTable(restAfter);
    if (table) { haveTable = true; trials.update(table); }
    if (!performance.getEntriesByName("tuner:table").length) performance.mark("tuner:table");
  }

  async function tick() {
    if (exp === null) exp = await T.api(base);  // the table needs its size
    let chartsDone = null;
    const tableRead = fillTable(new Promise((resolve) => { chartsDone = resolve; }));
    try {
      await fillPage();
    } finally {
      chartsDone();
    }
    await tableRead;
    document.body.dataset.ready = "1";
  }

  async function fillPage() {
    const [e, top, rg, cv, bsf, pc, imp] = await Promise.all([
      T.api(base), T.api(base + "/trials?order_by=value&limit=1"), T.api(base + "/rungs"),
      T.api(ui + "/curves", { conditional: true }),
      T.api(ui + "/best-so-far", { conditional: true }),
      T.api(ui + "/parcoords", { conditional: true }),
      T.api(ui + "/importance", { conditional: true }),
    ]);
    exp = e;
    fillHeader(e);
    fillBest(e.progress.best ? top.items[0] : null);
    fillSummary(e);

    T.patchRows(rungs.tbody, rg.items, (r) => r.bracket + "." + r.rung, () => {
      const tr = el("tr");
      tr._c = Array.from({ length: 9 }, () => el("td", { className: "num" }));
      tr.append(...tr._c);
      return tr;
    }, fillRungRow);
    if (!rg.items.length) T.emptyRow(rungs.tbody, 9, "No rung has a result yet.");
    T.setText(rungsNote, "η = " + rg.eta + ", " + (rg.mode === "min" ? "lower" : "higher")
      + " is better. Value to beat: the ⌊n/η⌋-th best value of the rung (position ⌊n/η⌋−1 "
      + "sorted best first); a result must be at least this good to be in the top ⌊n/η⌋ and "
      + "go on now. “—” while ⌊n/η⌋ = 0, and at the top rung (its trials are done).");

    // One chart per frame, so that the browser paints in between.
    const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
    await T.plotly();
    performance.mark("tuner:plotly");
    if (bsf) { bsfData = bsf; await frame(); await drawBestSoFar(); }
    if (cv) {
      await frame();
      await drawCurves(cv);
      if (!curvesDiv.hidden) bindClick(curvesDiv);  // a chart was drawn
      performance.mark("tuner:curves");
    }
    if (imp) { await frame(); await drawImportance(imp); performance.mark("tuner:importance"); }
    // parcoords last, and only once its section is near the viewport: it is WebGL-only,
    // and its first draw compiles shaders (seconds on software GL), so a page whose reader
    // never scrolls there should not pay for it.
    if (pc) {
      pcPending = pc;
      // (with no result there is nothing to compile: its sentence shows at once)
      if (pcVisible || pc.n === 0) { await frame(); await drawPendingParcoords(); }
    }
  }
  let pcPending = null;
  let pcVisible = false;
  async function drawPendingParcoords() {
    if (!pcPending) return;
    const data = pcPending;
    pcPending = null;
    await drawParcoords(data);
    performance.mark("tuner:parcoords");
  }
  new IntersectionObserver((entries) => {
    pcVisible = entries.some((entry) => entry.isIntersecting);
    if (pcVisible) drawPendingParcoords();
  }, { rootMargin: "200px" }).observe(pcDiv);
  poller = T.poll(tick);
}));
