/* One trial, named as people type it ("2/3": trial 3 of experiment 2): facts, parameters,
 * learning curve (only when it has reports), its attempts (each job: worker, outcome, time,
 * the error's last lines), decisions with their reasons, output tail, jobs and workers. */
"use strict";

const LIVE = new Set(["pending", "running", "paused", "lost"]);
const ERROR_TAIL_LINES = 6;

/* Plotly renders a small subset of HTML in its labels: escape names users typed. */
function plotText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/* The resource of each rung (tuner.schedulers.rungs.rung_levels): min_resource times eta
 * to the k, below max_resource, then max_resource. */
function rungLevels(config) {
  const s = config.scheduler || {};
  const levels = [];
  for (let level = s.min_resource || 1; level < s.max_resource; level *= s.eta || 3) {
    levels.push(level);
  }
  levels.push(s.max_resource);
  return levels;
}

/* The experiment page's rule for its learning curves' x axis (charts.js isLogX): log when
 * the top rung is at least 9 times the bottom one; ticks at the rungs. */
function resourceAxis(config) {
  const levels = rungLevels(config);
  const log = levels.length > 1 && levels[levels.length - 1] / levels[0] >= 9;
  return { title: { text: "resource (step)" }, type: log ? "log" : "linear",
    tickvals: levels.length > 1 ? levels : undefined };
}

function plural(n, word) { return T.fmtInt(n) + " " + word + (n === 1 ? "" : "s"); }

function tailOf(text, lines) {
  const all = String(text || "").trimEnd().split("\n");
  return all.slice(-lines).join("\n");
}

document.addEventListener("DOMContentLoaded", () => T.start(async (main) => {
  const { el } = T;
  const eid = Number(document.body.dataset.experiment);
  const number = Number(document.body.dataset.number);
  const name = T.trialName(eid, number);
  const admin = T.isAdmin();
  let poller = null;
  if (!await T.exists("/api/v1/experiments/" + eid)) {
    T.showMissing(main, "Experiment " + eid + " does not exist");
    return;
  }
  if (!await T.exists("/api/v1/experiments/" + eid + "/trials/" + number)) {
    T.showMissing(main, "Trial " + name + " does not exist", "/ui/experiments/" + eid,
      "Back to experiment " + eid);
    return;
  }

  const title = el("h1", { id: "trial-title" }, "Trial " + name);
  const stateBadge = el("span", { id: "trial-state" });
  const stopBtn = T.actionButton("Stop training", "secondary", async () => {
    if (await T.stopTrial(eid, number)) poller.now();
  });
  stopBtn.id = "action-stop";
  stopBtn.hidden = true;
  T.setAttr(stopBtn, "title", "Stop training this trial at its next report; it is not "
    + "promoted again");
  const expLink = el("a", { id: "trial-experiment", href: "/ui/experiments/" + eid },
    "experiment " + eid);
  main.append(el("nav", { className: "crumbs", "aria-label": "Breadcrumb", id: "crumbs" },
    el("a", { href: "/ui" }, "Experiments"), " › ", expLink, " › ",
    el("span", { "aria-current": "page" }, "trial " + number)));
  main.append(el("div", { className: "title-row" }, title, stateBadge,
    el("span", { className: "muted", id: "trial-exp-name" }),
    el("div", { className: "actions" }, admin ? stopBtn : null)));

  const facts = {};
  const factList = el("dl", { className: "facts", id: "trial-facts" });
  for (const [k, label] of [["ranked", "Value at its highest rung"], ["step", "Step (rung)"],
    ["best", "Best at any rung"], ["last", "Last value"], ["resource", "Resource completed"],
    ["bracket", "Bracket"], ["checkpoint", "Checkpoint"], ["retries", "Retries"],
    ["created", "Created"], ["updated", "Updated"], ["ended", "Ended"]]) {
    facts[k] = el("dd", { id: "fact-" + k });
    factList.append(el("div", null, el("dt", null, label), facts[k]));
  }
  const params = T.tableOf(["Parameter", "Value"], { caption: "Parameters" });
  params.table.id = "params-table";
  main.append(el("div", { className: "two" }, T.section("Facts", "facts", factList),
    T.section("Parameters", "params", params.wrap)));

  const curveNote = el("p", { className: "muted small", id: "trial-curve-note" });
  const curveDiv = el("div", { className: "chart medium", id: "trial-curve" });
  main.append(T.section("Learning curve", "curve", curveNote, curveDiv));

  const attemptsList = el("ol", { className: "attempts", id: "attempts" });
  const attempts = T.section("Attempts", "attempts-section",
    el("p", { className: "muted small" }, "Each job of the trial: who ran it, how it ended "
      + "and, for a failure, the last lines of its error."), attemptsList);
  attempts.hidden = true;
  main.append(attempts);

  const rungs = T.tableOf(["Bracket", "Rung", "Value", "Status", "Recorded"],
    { caption: "Rung values" });
  main.append(T.section("Rung values", "rungvalues", rungs.wrap));

  const decisions = T.tableOf(["#", "Decision", "Step", "Rule", "Rung", "Resource", "Rank",
    "n", "Threshold", "Cutoff", "Note", "When"], { caption: "Decisions" });
  decisions.table.id = "decisions-table";
  const cutoffHead = decisions.thead.rows[0].cells[9];
  cutoffHead.id = "decisions-cutoff";
  const decisionsNote = el("p", { className: "muted small", id: "decisions-note" });
  main.append(T.section("Decisions and their reasons", "decisions", decisionsNote,
    decisions.wrap));

  const outPre = el("pre", { className: "output", id: "trial-output", tabindex: "0",
    "aria-label": "Output tail" });
  main.append(T.section("Output (tail)", "output", outPre));

  const jobs = T.tableOf(["Job", "Rung", "From → to", "State", "Attempt", "Worker",
    "Lease expires", "Created", "Ended"], { caption: "Jobs" });
  jobs.table.id = "jobs-table";
  const workers = T.tableOf(["Worker", "Host", "GPUs", "Last heartbeat", "Lost leases"],
    { caption: "Workers" });
  workers.table.id = "trial-workers-table";
  main.append(T.section("Jobs", "jobs", jobs.wrap), T.section("Workers", "workers", workers.wrap));

  const cells = (n) => () => {
    const tr = el("tr");
    tr._c = Array.from({ length: n }, () => el("td", { className: "nowrap" }));
    tr.append(...tr._c);
    return tr;
  };

  function fillFacts(t) {
    const ranked = t.ranked_value !== undefined ? t.ranked_value : null;
    T.setText(facts.ranked, T.fmtValue(ranked));
    const step = t.ranked_step === undefined ? null : t.ranked_step;
    T.setText(facts.step, step === null ? "—" : T.fmtInt(step) + " (rung " + t.rung + ")");
    T.setText(facts.best, T.fmtValue(t.best_value));
    T.setText(facts.last, T.fmtValue(t.last_value, t.last_value_kind));
    // `resource` counts the trial's completed jobs only; a trial stopped during its first
    // job has reported steps past it.
    const steps = t.reports.filter((r) => r.superseded_by_job_id == null).map((r) => r.step);
    const lastStep = steps.length ? Math.max(...steps) : null;
    T.setText(facts.resource, T.fmtInt(t.resource) + (lastStep !== null && lastStep > t.resource
      ? " (last report at step " + T.fmtInt(lastStep) + ")" : ""));
    T.setText(facts.bracket, t.bracket);
    const ck = t.checkpoint_step;
    T.setText(facts.checkpoint, t.checkpoint ? t.checkpoint + (ck !== undefined && ck !== null
      ? " (step " + T.fmtInt(ck) + ")" : "") : "—");
    T.setText(facts.retries, t.retries + (t.stop_requested ? " (stop requested)" : ""));
    T.setText(facts.created, T.fmtTime(t.created_at));
    T.setText(facts.updated, T.fmtAge(t.updated_at));
    T.setText(facts.ended, t.ended_at ? T.fmtTime(t.ended_at) : "—");
  }

  async function drawCurve(t, config) {
    const current = t.reports.filter((r) => r.superseded_by_job_id == null);
    const replaced = t.reports.filter((r) => r.superseded_by_job_id != null);
    if (!t.reports.length) {  // no empty axes: say why there is no chart
      curveDiv.hidden = true;
      T.setText(curveNote, t.state === "failed"
        ? "No report: the trial failed before its first report (see Attempts)."
        : "No report yet.");
      return;
    }
    curveDiv.hidden = false;
    const stepValue = new Map(current.map((r) => [r.step, r.value]));
    const rungX = [];
    const rungY = [];
    for (const j of t.jobs) {
      if (stepValue.has(j.to_resource) && !rungX.includes(j.to_resource)) {
        rungX.push(j.to_resource);
        rungY.push(stepValue.get(j.to_resource));
      }
    }
    await T.plotly();
    const type = current.length > 2000 ? "scattergl" : "scatter";
    await Plotly.react(curveDiv, [
      { type, mode: current.length > 1 ? "lines" : "markers", x: current.map((r) => r.step),
        y: current.map((r) => r.value), name: "reports", line: { color: "#2563eb", width: 2 },
        hovertemplate: "step %{x}<br>value %{y}<extra></extra>" },
      { type, mode: "markers", x: replaced.map((r) => r.step), y: replaced.map((r) => r.value),
        name: "superseded", marker: { size: 5, color: "#9ca3af" },
        hovertemplate: "step %{x}<br>value %{y}<br>superseded by a retry<extra></extra>" },
      { type, mode: "markers", x: rungX, y: rungY, name: "rungs",
        marker: { size: 9, color: "#facc15", line: { color: "#111827", width: 1 } },
        hovertemplate: "rung at %{x}<br>value %{y}<extra></extra>" },
    ], { uirevision: "trial", height: 320, margin: { l: 56, r: 16, t: 8, b: 44 },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", showlegend: false,
      xaxis: resourceAxis(config),
      yaxis: { title: { text: plotText(config.metric) } } },
    T.plotConfig);
    T.setText(curveNote, plural(current.length, "report") + "; yellow markers: the end of each job "
      + "(a rung)" + (replaced.length ? "; grey: " + replaced.length + " values a retry "
      + "reported again (superseded)." : "."));
  }

  function attemptItem(j) {
    const outcome = j.state === "leased" ? "running" : j.state;
    const when = j.ended_at ? "ended " + T.fmtTime(j.ended_at) : "started " + T.fmtTime(j.created_at);
    const error = j.error;  // a failure's error, or why a lost job's lease ran out
    return el("li", { dataset: { job: j.id } },
      el("div", { className: "head" },
        el("strong", null, "Attempt " + (j.attempt + 1)), el("span", null, "job " + j.id),
        el("span", null, "worker " + (j.worker_id || "—")),
        el("span", { className: "outcome-" + outcome }, outcome),
        el("span", { className: "muted" }, when),
        el("span", { className: "muted" }, "steps " + j.from_resource + " → " + j.to_resource)),
      error ? el("pre", { className: "error-tail" }, tailOf(error, ERROR_TAIL_LINES)) : null);
  }

  function fillAttempts(t) {
    const troubled = t.jobs.some((j) => j.state === "failed" || j.state === "expired");
    attempts.hidden = !troubled;
    if (!troubled) return;
    const items = t.jobs.map(attemptItem);
    T.setChildren(attemptsList, items);
  }

  /* The cutoff as the scheduler stores it is a loss (lower is better: the value, negated
   * for a metric to maximise); shown here in the metric's own direction. */
  function decisionValues(d, i, config) {
    const r = d.reason || {};
    const sign = config.mode === "max" ? -1 : 1;
    // A failure's note is its error: its last line here, the tail under Attempts.
    const note = r.rule === "job_failed" ? tailOf(r.note, 1) : (r.note || "");
    return [i + 1, d.kind, d.step === null ? "—" : d.step, r.rule || "—",
      r.rung ?? "—", r.resource ?? "—", r.rank ?? "—", r.n ?? "—", r.threshold ?? "—",
      r.cutoff_loss === undefined || r.cutoff_loss === null ? "—"
        : T.fmtValue(sign * r.cutoff_loss),
      note, T.fmtTime(d.created_at)];
  }

  function fillTables(t, w, config) {
    T.patchRows(params.tbody, Object.entries(t.params), (p) => p[0], cells(2), (tr, p) => {
      T.setText(tr._c[0], p[0]);
      T.setText(tr._c[1], typeof p[1] === "number" ? T.fmtValue(p[1]) : JSON.stringify(p[1]));
    });
    T.patchRows(rungs.tbody, t.rung_values, (r) => r.bracket + "." + r.rung, cells(5), (tr, r) => {
      T.setText(tr._c[0], r.bracket); T.setText(tr._c[1], r.rung);
      T.setText(tr._c[2], T.fmtValue(r.value, r.value_kind)); T.setText(tr._c[3], r.status);
      T.setText(tr._c[4], T.fmtAge(r.created_at));
    });
    if (!t.rung_values.length) T.emptyRow(rungs.tbody, 5, "No rung result yet.");
    const ds = t.decisions.map((d, i) => Object.assign({ i }, d));
    T.patchRows(decisions.tbody, ds, (d) => d.i, cells(12), (tr, d) => {
      decisionValues(d, d.i, config).forEach((v, k) => T.setText(tr._c[k], v));
      tr._c[1].className = "decision-" + d.kind;
    });
    if (!ds.length) T.emptyRow(decisions.tbody, 12, "No decision yet.");
    T.patchRows(jobs.tbody, t.jobs, (j) => j.id, cells(9), (tr, j) => {
      const vals = [j.id, j.rung, j.from_resource + " → " + j.to_resource, j.state, j.attempt,
        j.worker_id || "—", j.state === "leased" ? T.fmtTime(j.lease_expires_at) : "—",
        T.fmtTime(j.created_at),
        j.ended_at ? T.fmtTime(j.ended_at) : (j.state === "leased" ? "running" : "—")];
      vals.forEach((v, k) => T.setText(tr._c[k], v));
    });
    if (!t.jobs.length) T.emptyRow(jobs.tbody, 9, "No job yet.");
    T.patchRows(workers.tbody, w.items, (x) => x.worker_id, cells(5), (tr, x) => {
      if (!tr._link) {
        tr._link = el("a", { href: "/ui/workers#worker-" + encodeURIComponent(x.worker_id) });
        tr._c[0].replaceChildren(tr._link);
      }
      T.setText(tr._link, x.worker_id);
      T.setText(tr._c[1], x.host);
      T.setText(tr._c[2], x.gpus.length ? x.gpus.map(String).join(", ") : "none");
      T.setText(tr._c[3], T.fmtAge(x.last_seen_at));
      T.setText(tr._c[4], x.lost_leases);
    });
    if (!w.items.length) T.emptyRow(workers.tbody, 5, "No registered worker ran this trial.");
  }

  let config = null;  // the experiment's document: its metric, mode and scheduler
  async function tick() {
    const t = await T.trialByNumber(eid, number);
    const [w, e] = await Promise.all([T.api("/ui/api/trials/" + t.id + "/workers"),
      config === null ? T.api("/api/v1/experiments/" + eid) : Promise.resolve(null)]);
    if (e) {
      config = e.config;
      T.setText(document.getElementById("trial-exp-name"), e.name);
      T.setText(cutoffHead, "Cutoff (" + config.metric + ")");
      T.setText(decisionsNote, "Rank is 0-based (best first) among the n results of the rung; "
        + "the threshold is how many of them go on; the cutoff is the " + config.metric
        + " a result had to reach to go on (" + (config.mode === "max" ? "higher" : "lower")
        + " is better). A failure's error is under Attempts.");
    }
    document.title = "experiment " + eid + " › trial " + number + " · tuner";
    T.setTrialBadge(stateBadge, t);
    stopBtn.hidden = !LIVE.has(t.state) || t.stop_requested;
    fillFacts(t);
    fillAttempts(t);
    fillTables(t, w, config);
    const atBottom = outPre.scrollHeight - outPre.scrollTop - outPre.clientHeight < 24;
    T.setText(outPre, t.output_tail || "(no output received)");
    if (atBottom) outPre.scrollTop = outPre.scrollHeight;
    await drawCurve(t, config);
    document.body.dataset.ready = "1";
  }
  poller = T.poll(tick);
}));
