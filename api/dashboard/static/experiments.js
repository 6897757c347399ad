/* Experiments: newest first, with state, progress, best value, trials by state and age. */
"use strict";

const PAGE = 50;

function progressOf(exp) {
  const max = exp.config && exp.config.budget ? exp.config.budget.max_trials : null;
  return { started: exp.n_trials, max };
}

document.addEventListener("DOMContentLoaded", () => T.start((main) => {
  const { el } = T;
  let offset = 0;
  const status = el("p", { className: "muted", "aria-live": "polite" });
  const prev = el("button", { type: "button", className: "secondary" }, "← Newer");
  const next = el("button", { type: "button", className: "secondary" }, "Older →");
  const tbl = T.tableOf(["Name", "State", "Progress", "Best value", "Trials by state",
    "Created"], { caption: "Experiments, newest first", className: "experiments",
    cols: ["name", "state", "progress", "best", "states", "created"] });
  tbl.table.id = "experiments-table";
  main.append(
    el("div", { className: "title-row" }, el("h1", null, "Experiments")),
    el("section", { className: "panel" }, tbl.wrap,
      el("div", { className: "pager" }, prev, status, next)));

  let poller = null;
  prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); poller.now(); });
  next.addEventListener("click", () => { offset += PAGE; poller.now(); });

  function createRow(exp) {
    const tr = el("tr");
    tr._name = el("a", { href: "/ui/experiments/" + exp.id, className: "name" });
    tr._id = el("span", { className: "muted id" });
    tr._state = el("span");
    tr._bar = el("progress", { max: "1", value: "0" });
    tr._progressText = el("span", { className: "muted small" });
    tr._bestValue = el("span", { className: "best-value-num" });
    tr._bestTrial = el("span", { className: "muted best-trial" });
    tr._best = el("td", { className: "num best col-best" }, tr._bestValue, tr._bestTrial);
    tr._states = T.stateBar();
    tr._age = el("td", { className: "nowrap col-created" });
    tr.append(
      el("td", { className: "col-name" }, tr._name, " ", tr._id),
      el("td", { className: "col-state" }, tr._state),
      el("td", { className: "progress-cell col-progress" }, tr._bar, tr._progressText),
      tr._best,
      el("td", { className: "col-states" }, tr._states.node),
      tr._age);
    return tr;
  }

  function fillRow(tr, exp) {
    T.setText(tr._name, exp.name);
    T.setText(tr._id, "#" + exp.id);
    T.setBadge(tr._state, exp.state);
    const p = progressOf(exp);
    if (p.max) {
      T.setAttr(tr._bar, "max", p.max);
      T.setAttr(tr._bar, "value", Math.min(p.started, p.max));
      T.setText(tr._progressText, T.fmtInt(p.started) + " / " + T.fmtInt(p.max) + " trials");
    } else {
      tr._bar.hidden = true;
      T.setText(tr._progressText, T.fmtInt(p.started) + " trials");
    }
    T.setAttr(tr._bar, "aria-label", tr._progressText.textContent);
    const best = exp.progress.best;
    T.setText(tr._bestValue, best ? T.fmtValue(best.value) : "—");
    T.setText(tr._bestTrial, best ? " (trial " + T.trialName(exp.id, best.trial_number) + ")"
      : "");
    T.fillStateBar(tr._states, exp.progress.trials_by_state);
    T.setText(tr._age, T.fmtAge(exp.created_at));
    T.setAttr(tr._age, "title", T.fmtTime(exp.created_at));
  }

  poller = T.poll(async () => {
    const page = await T.api("/api/v1/experiments?limit=" + PAGE + "&offset=" + offset);
    T.patchRows(tbl.tbody, page.items, (e) => e.id, createRow, fillRow);
    if (page.items.length === 0) T.emptyRow(tbl.tbody, 6, "No experiments yet. Create one with `tuner submit`.");
    const first = page.total ? offset + 1 : 0;
    T.setText(status, first + "–" + (offset + page.items.length) + " of " + T.fmtInt(page.total));
    prev.disabled = offset === 0;
    next.disabled = offset + page.items.length >= page.total;
  });
}));
