/* One experiment: document, actions, best trial, live progress, trials table, learning
 * curves, rungs and brackets, parallel coordinates and parameter importance. */
"use strict";

const TRIALS_PAGE = 50;
const ACTIVE = new Set(["pending", "running", "paused", "lost"]);

/* Plotly renders a small subset of HTML in its labels: escape names users typed. */
function plotText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

document.addEventListener("DOMContentLoaded", () => T.start((main) => {
  const { el } = T;
  const id = Number(document.body.dataset.id);
  const admin = T.isAdmin();
  const base = "/api/v1/experiments/" + id;
  const ui = "/ui/api/experiments/" + id;
  let poller = null;
  let exp = null;

  // ---- header and actions -------------------------------------------------------------
  const title = el("h1", { id: "exp-name" });
  const stateBadge = el("span", { id: "exp-state" });
  const actions = el("div", { className: "actions", id: "actions" });
  const act = (action, label, text) => T.actionButton(label, action === "cancel" ? "danger" : "",
    async () => {
      const ok = await T.confirmAction(label + " “" + exp.name + "”?", text, label);
      if (!ok) return;
      await T.api(base + "/" + action, { method: "POST" });
      T.banner(label + ": done.", "info");
      poller.now();
    });
  const buttons = {
    pause: act("pause", "Pause", "No new jobs start while paused; running jobs finish."),
    resume: act("resume", "Resume", "Jobs start again."),
    cancel: act("cancel", "Cancel", "Every unfinished trial is cancelled. This cannot be undone."),
  };
  for (const [k, b] of Object.entries(buttons)) { b.id = "action-" + k; b.hidden = true; }
  if (admin) actions.append(buttons.pause, buttons.resume, buttons.cancel);
  main.append(el("nav", { className: "crumbs", "aria-label": "Breadcrumb" },
    el("a", { href: "/ui" }, "Experiments"), " / ", el("span", null, "#" + id)));
  main.append(el("div", { className: "title-row" }, title, stateBadge, actions));
  // Why the service paused it (the breaker), while it says so.
  const stateReason = el("p", { id: "exp-state-reason", className: "state-reason" });
  stateReason.hidden = true;
  main.append(stateReason);

  // ---- summary ------------------------------------------------------------------------
  const f = {};
  const card = (label, key, extra) => {
    f[key] = el("div", { className: "value", id: "sum-" + key });
    return el("div", { className: "card" }, el("div", { className: "label" }, label), f[key],
      extra || null);
  };
  const progressBar = el("progress", { max: "1", value: "0", id: "exp-progress" });
  f.bestParams = el("div", { className: "muted small params", id: "best-params" });
  const states = T.stateBar();
  main.append(el("section", { className: "cards", "aria-label": "Summary" },
    card("Best value", "best", f.bestParams),
    card("Trials", "trials", progressBar),
    card("Resource used", "resource"),
    card("Age", "age"),
    el("div", { className: "card wide" }, el("div", { className: "label" }, "Trials by state"),
      states.node)));

  // ---- trials table -------------------------------------------------------------------
  let order = "number";
  let filter = "";
  let offset = 0;
  const filterSel = el("select", { id: "trial-filter", "aria-label": "Filter trials by state" },
    el("option", { value: "" }, "all states"),
    ...T.TRIAL_STATES.map((s) => el("option", { value: s }, s)));
  filterSel.addEventListener("change", () => { filter = filterSel.value; offset = 0; poller.now(); });
  const sortBtn = (key, label) => {
    const b = el("button", { type: "button", className: "sort", dataset: { order: key } }, label);
    b.addEventListener("click", () => { order = key; offset = 0; paintSort(); poller.now(); });
    return b;
  };
  const sorts = [sortBtn("number", "#"), sortBtn("value", "Best value"),
    sortBtn("updated", "Updated")];
  const headers = [sorts[0], "State", "Bracket", "Rung", "Resource", sorts[1], "Last value",
    "Parameters", sorts[2]];
  if (admin) headers.push("Action");
  const trials = T.tableOf(headers, { caption: "Trials", className: "trials" });
  trials.table.id = "trials-table";
  const sortLabels = { number: "ascending", value: "ascending", updated: "descending" };
  function paintSort() {
    for (const b of sorts) {
      const th = b.parentElement;
      if (b.dataset.order === order) th.setAttribute("aria-sort", sortLabels[order]);
      else th.removeAttribute("aria-sort");
      b.classList.toggle("active", b.dataset.order === order);
    }
  }
  paintSort();
  const pageInfo = el("span", { className: "muted", id: "trials-page", "aria-live": "polite" });
  const first = el("button", { type: "button", className: "secondary" }, "« First");
  const prev = el("button", { type: "button", className: "secondary" }, "‹ Prev");
  const next = el("button", { type: "button", className: "secondary", id: "trials-next" }, "Next ›");
  first.addEventListener("click", () => { offset = 0; poller.now(); });
  prev.addEventListener("click", () => { offset = Math.max(0, offset - TRIALS_PAGE); poller.now(); });
  next.addEventListener("click", () => { offset += TRIALS_PAGE; poller.now(); });
  main.append(T.section("Trials", "trials",
    el("div", { className: "toolbar" }, el("label", { for: "trial-filter" }, "State "), filterSel),
    trials.wrap, el("div", { className: "pager" }, first, prev, pageInfo, next)));

  function stopTrial(t) {
    return async () => {
      const ok = await T.confirmAction("Stop trial #" + t.number + "?",
        "The trial stops at its next report and is not promoted again.", "Stop trial");
      if (!ok) return;
      await T.api("/api/v1/trials/" + t.id + "/stop", { method: "POST" });
      poller.now();
    };
  }

  function createTrialRow(t) {
    const tr = el("tr");
    tr._num = el("a", { href: "/ui/trials/" + t.id });
    tr._cells = {};
    const td = (k, cls) => { tr._cells[k] = el("td", { className: cls || "" }); return tr._cells[k]; };
    tr._state = el("span");
    tr.append(el("td", { className: "num" }, tr._num), el("td", null, tr._state),
      td("bracket", "num"), td("rung", "num"), td("resource", "num"), td("best", "num"),
      td("last", "num"), td("params", "params"), td("updated", "nowrap"));
    if (admin) {
      tr._stop = T.actionButton("Stop", "small danger", () => tr._stopHandler());
      tr.append(el("td", null, tr._stop));
    }
    return tr;
  }

  function fillTrialRow(tr, t) {
    T.setText(tr._num, "#" + t.number);
    T.setBadge(tr._state, t.state);
    T.setText(tr._cells.bracket, t.bracket);
    T.setText(tr._cells.rung, t.rung < 0 ? "—" : t.rung);
    T.setText(tr._cells.resource, T.fmtInt(t.resource));
    T.setText(tr._cells.best, T.fmtValue(t.best_value));
    T.setText(tr._cells.last, T.fmtValue(t.last_value, t.last_value_kind));
    T.setText(tr._cells.params, T.fmtParams(t.params));
    T.setText(tr._cells.updated, T.fmtAge(t.updated_at));
    if (tr._stop) {
      tr._stopHandler = stopTrial(t);
      tr._stop.hidden = !ACTIVE.has(t.state) || t.stop_requested;
      T.setAttr(tr._stop, "aria-label", "Stop trial #" + t.number);
    }
  }

  // ---- charts -------------------------------------------------------------------------
  const curvesNote = el("p", { className: "muted small", id: "curves-note" });
  const curvesDiv = el("div", { className: "chart", id: "curves-chart" });
  main.append(T.section("Learning curves", "curves", curvesNote, curvesDiv));

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

  const darkText = "#1f2937";
  const baseLayout = (extra) => Object.assign({
    margin: { l: 56, r: 16, t: 8, b: 48 }, paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)", font: { size: 12, color: darkText }, hovermode: "closest",
  }, extra);

  function drawCurves(c) {
    const traces = c.groups.map((g) => ({
      type: "scattergl", mode: "lines+markers", name: plotText(g.state + " (" + g.n + ")"),
      x: g.x, y: g.y, text: g.number, customdata: g.trial_id, connectgaps: false,
      line: { color: T.STATE_COLORS[g.state] || "#888", width: 1 }, opacity: 0.6,
      marker: { size: 3, color: T.STATE_COLORS[g.state] || "#888" },
      hovertemplate: "trial #%{text}<br>resource %{x}<br>value %{y}<extra>" + g.state + "</extra>",
    }));
    if (c.best) {
      traces.push({ type: "scattergl", mode: "lines+markers", name: "best (#" + c.best.number + ")",
        x: c.best.x, y: c.best.y, line: { color: "#111827", width: 3 },
        marker: { size: 5, color: "#facc15", line: { color: "#111827", width: 1 } },
        customdata: c.best.x.map(() => c.best.trial_id),
        hovertemplate: "best trial #" + c.best.number + "<br>resource %{x}<br>value %{y}<extra></extra>" });
    }
    const levels = c.levels || [];
    const logx = levels.length > 1 && levels[levels.length - 1] / levels[0] >= 9;
    const layout = baseLayout({
      uirevision: "curves", height: 380, showlegend: true,
      legend: { orientation: "h", y: -0.22 },
      xaxis: { title: { text: "resource" }, type: logx ? "log" : "linear", zeroline: false,
        tickvals: levels.length ? levels : undefined },
      yaxis: { title: { text: plotText(c.metric) }, zeroline: false },
      shapes: levels.map((r) => ({ type: "line", xref: "x", yref: "paper", x0: r, x1: r, y0: 0,
        y1: 1, line: { color: "#cbd5e1", width: 1, dash: "dot" } })),
    });
    const drawn = Plotly.react(curvesDiv, traces, layout, T.plotConfig);
    T.setText(curvesNote, c.shown_trials < c.total_trials
      ? "Showing " + T.fmtInt(c.shown_trials) + " of " + T.fmtInt(c.total_trials)
        + " trials (the best third and a spread of the rest), at most " + c.max_points
        + " points each. Dotted lines: rungs. Click a line to open its trial."
      : "All " + T.fmtInt(c.total_trials) + " trials, at most " + c.max_points
        + " points each. Dotted lines: rungs. Click a line to open its trial.");
    return drawn;
  }

  function bindClick(div) {
    if (div._bound) return;
    div._bound = true;
    div.on("plotly_click", (ev) => {
      const p = ev.points && ev.points[0];
      if (p && p.customdata) location.assign("/ui/trials/" + p.customdata);
    });
  }

  function drawParcoords(pc) {
    if (pc.n === 0) {
      Plotly.purge(pcDiv);
      T.setText(pcNote, "No trial has a finite result at a rung yet.");
      return;
    }
    const dims = pc.dimensions.map((d) => {
      const out = { label: plotText(d.label), values: d.values };
      if (d.range) out.range = d.range;
      // parcoords draws tick text as plain text (no entity decoding): pass it raw.
      if (d.tickvals) { out.tickvals = d.tickvals; out.ticktext = d.ticktext; }
      return out;
    });
    const trace = { type: "parcoords", dimensions: dims,
      line: { color: pc.color, colorscale: "Viridis", reversescale: pc.mode === "min",
        showscale: true, colorbar: { title: { text: plotText(pc.metric) }, thickness: 12 } } };
    return Plotly.react(pcDiv, [trace], baseLayout({ uirevision: "parcoords", height: 420,
      margin: { l: 64, r: 48, t: 56, b: 24 } }), T.plotConfig);
    T.setText(pcNote, "One line per trial: its parameters and its value at the highest rung it "
      + "reached (" + T.fmtInt(pc.n) + " of " + T.fmtInt(pc.total) + " trials with a result; "
      + (pc.mode === "min" ? "lower" : "higher") + " is better, brighter colours). "
      + "Categorical parameters are drawn at their choices; drag on an axis to filter.");
  }

  function drawImportance(imp) {
    T.setText(impMethod, "Method: " + imp.method);
    if (!imp.items.length) {
      T.setText(impReason, "No importances yet: " + (imp.reason || "not enough data") + ".");
      Plotly.purge(impDiv);
      impDiv.hidden = true;
      return;
    }
    impDiv.hidden = false;
    T.setText(impReason, "Fit on " + T.fmtInt(imp.n_trials) + " trials at rung " + imp.rung
      + " (resource " + T.fmtInt(imp.resource) + ").");
    const items = imp.items.slice().reverse();
    return Plotly.react(impDiv, [{ type: "bar", orientation: "h", x: items.map((i) => i.importance),
      y: items.map((i) => plotText(i.param)), marker: { color: "#2563eb" },
      text: items.map((i) => i.importance.toFixed(3)), textposition: "auto",
      hovertemplate: "%{y}: %{x:.3f}<extra></extra>" }],
    baseLayout({ uirevision: "importance", height: Math.max(160, 48 + 28 * items.length),
      margin: { l: 120, r: 16, t: 8, b: 40 }, xaxis: { title: { text: "importance" },
        range: [0, 1] }, yaxis: { automargin: true, ticksuffix: "  " } }), T.plotConfig);
  }

  function fillRungRow(tr, r) {
    const c = tr._c;
    T.setText(c[0], r.bracket); T.setText(c[1], r.rung); T.setText(c[2], T.fmtInt(r.resource));
    T.setText(c[3], T.fmtInt(r.n_results)); T.setText(c[4], T.fmtInt(r.n_promoted));
    T.setText(c[5], T.fmtInt(r.n_stopped));
    T.setText(c[6], T.fmtInt(r.n_results - r.n_promoted - r.n_stopped));
    T.setText(c[7], r.top_k);
    T.setText(c[8], r.top_k === 0 ? "—"
      : (r.promotable_value === null ? "non-finite" : T.fmtValue(r.promotable_value)));
  }

  // ---- the poll -----------------------------------------------------------------------
  let bestId = null;
  let docShown = false;
  async function tick() {
    const q = "?limit=" + TRIALS_PAGE + "&offset=" + offset + "&order_by=" + order
      + (filter ? "&state=" + filter : "");
    const [e, page, rg, cv, pc, imp] = await Promise.all([
      T.api(base), T.api(base + "/trials" + q), T.api(base + "/rungs"),
      T.api(ui + "/curves", { conditional: true }), T.api(ui + "/parcoords", { conditional: true }),
      T.api(ui + "/importance", { conditional: true }),
    ]);
    exp = e;
    document.title = e.name + " · tuner";
    T.setText(title, e.name);
    T.setBadge(stateBadge, e.state);
    T.setText(stateReason, e.state_reason || "");
    stateReason.hidden = !e.state_reason;
    buttons.pause.hidden = e.state !== "running";
    buttons.resume.hidden = e.state !== "paused";
    buttons.cancel.hidden = !(e.state === "running" || e.state === "paused");

    const best = e.progress.best;
    T.setText(f.best, best ? T.fmtValue(best.value) : "—");
    if (best && best.trial_id !== bestId) {
      bestId = best.trial_id;
      const top = await T.api(base + "/trials?order_by=value&limit=1");
      const t = top.items[0];
      f.bestParams.replaceChildren(
        el("a", { href: "/ui/trials/" + best.trial_id }, "trial #" + best.trial_number),
        t ? " · " + T.fmtParams(t.params) : "");
    } else if (!best) {
      T.setText(f.bestParams, "no result yet");
    }
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
    for (const opt of filterSel.options) {
      if (!opt.value) continue;
      const n = e.progress.trials_by_state[opt.value] || 0;
      T.setText(opt, opt.value + " (" + n + ")");
    }
    if (!docShown) { docShown = true; T.setText(docPre, JSON.stringify(e.config, null, 2)); }

    T.patchRows(trials.tbody, page.items, (t) => t.id, createTrialRow, fillTrialRow);
    if (!page.items.length) T.emptyRow(trials.tbody, headers.length, "No trials match.");
    const lo = page.total ? offset + 1 : 0;
    T.setText(pageInfo, lo + "–" + (offset + page.items.length) + " of " + T.fmtInt(page.total));
    first.disabled = prev.disabled = offset === 0;
    next.disabled = offset + page.items.length >= page.total;

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
      + "go on now. “—” while ⌊n/η⌋ = 0.");

    performance.mark("tuner:table");
    // Let the browser paint the table before the charts; one chart per frame.
    const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
    await T.plotly();
    performance.mark("tuner:plotly");
    if (cv) {
      await frame();
      await drawCurves(cv);
      bindClick(curvesDiv);
      performance.mark("tuner:curves");
    }
    if (imp) { await frame(); await drawImportance(imp); performance.mark("tuner:importance"); }
    // parcoords last, and only once its section is near the viewport: it is WebGL-only,
    // and its first draw compiles shaders (seconds on software GL), so a page whose reader
    // never scrolls there should not pay for it.
    if (pc) {
      pcPending = pc;
      if (pcVisible) { await frame(); await drawPendingParcoords(); }
    }
    document.body.dataset.ready = "1";
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
