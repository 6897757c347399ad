/* The experiment page's trials table, filled from the export JSON
 * (GET /api/v1/experiments/{id}/export): one row per trial in ranking order, one sortable,
 * filterable column per parameter and per reported metric, filters by state and by rung
 * reached, a selection to compare, and the CSV / JSON downloads. */
"use strict";

const TrialsTable = (() => {
  const PAGE = 50;
  const MAX_COMPARE = 8;
  const { el } = T;

  // ---- column filters: "<0.1", ">= 3", "1..5", "=adam", or text (case-insensitive part) ----
  const OPS = {
    "<": (a, b) => a < b, "<=": (a, b) => a <= b, ">": (a, b) => a > b,
    ">=": (a, b) => a >= b, "=": (a, b) => a === b,
  };

  function parseFilter(text) {
    const s = text.trim();
    if (!s) return null;
    let m = s.match(/^(<=|>=|<|>|=)\s*(.+)$/);
    if (m && !Number.isNaN(Number(m[2]))) {
      const op = OPS[m[1]];
      const n = Number(m[2]);
      return (v) => typeof v === "number" && op(v, n);
    }
    if (m && m[1] === "=") return (v) => String(v) === m[2];
    m = s.match(/^(\S+)\s*\.\.\s*(\S+)$/);
    if (m && !Number.isNaN(Number(m[1])) && !Number.isNaN(Number(m[2]))) {
      const lo = Number(m[1]);
      const hi = Number(m[2]);
      return (v) => typeof v === "number" && v >= lo && v <= hi;
    }
    const part = s.toLowerCase();
    return (v) => v !== null && v !== undefined && String(v).toLowerCase().includes(part);
  }

  function fmtCell(v) {
    if (v === null || v === undefined) return "—";
    return typeof v === "number" ? T.fmtValue(v) : String(v);
  }

  /* null and undefined sort last whatever the direction. */
  function compareValues(a, b, dir) {
    const na = a === null || a === undefined;
    const nb = b === null || b === undefined;
    if (na || nb) return na === nb ? 0 : na ? 1 : -1;
    if (typeof a === "number" && typeof b === "number") return dir * (a - b);
    return dir * String(a).localeCompare(String(b));
  }

  // ---- columns ----------------------------------------------------------------------------
  function columnsOf(table) {
    const eid = table.experiment_id;
    const cols = [
      { key: "rank", label: "#", title: "position in the ranking", get: (r) => r._rank,
        num: true },
      { key: "trial", label: "Trial", get: (r) => r.number, num: true,
        render: (td, r) => {
          let a = td.firstChild;
          if (!a) { a = el("a"); td.append(a); }
          T.setAttr(a, "href", T.trialUrl(eid, r.number));
          T.setText(a, T.trialName(eid, r.number));
        } },
      { key: "value", label: table.metric + " at rung", num: true, better: true,
        title: "the value at the highest rung reached (the ranking's value)",
        get: (r) => r.ranked_value,
        render: (td, r) => {
          T.setText(td, fmtCell(r.ranked_value));
          T.setAttr(td, "title", r.ranked_step === null ? null : "at step " + r.ranked_step);
        } },
      { key: "state", label: "State", get: (r) => T.trialStatus(r).text,
        render: (td, r) => {
          let b = td.firstChild;
          if (!b) { b = el("span"); td.append(b); }
          T.setTrialBadge(b, r);
        } },
      { key: "rung", label: "Rung", get: (r) => (r.rung < 0 ? null : r.rung), num: true },
      { key: "best", label: "Best at a rung", num: true, better: true,
        title: "the best of its values at the rungs where it was judged", get: (r) => r.best_value },
    ];
    for (const p of table.params) {
      cols.push({ key: "param." + p, label: p, get: (r) => r.params[p], param: true,
        num: table.trials.some((r) => typeof r.params[p] === "number") });
    }
    for (const m of table.metrics) {
      cols.push({ key: "metric." + m, label: m, get: (r) => r.metrics[m], num: true,
        metric: true });
    }
    cols.push({ key: "step", label: "Step", title: "the step of the ranked value",
      get: (r) => r.ranked_step, num: true });
    cols.push({ key: "retries", label: "Retries", get: (r) => r.retries, num: true });
    return cols;
  }

  /* Fixed columns get a class of their own ("col-rank"), for the phone layout. */
  function cellClass(col) {
    const own = col.param || col.metric ? "" : " col-" + col.key;
    return (col.num ? "num" : (col.param ? "param" : "")) + own;
  }

  function create(opts) {
    const state = { table: null, rows: [], cols: [], colKey: "", sort: { key: "rank", dir: 1 },
      filters: new Map(), stateFilter: "", rungFilter: -1, offset: 0,
      selected: new Set() };

    // ---- toolbar ------------------------------------------------------------------------
    const stateSel = el("select", { id: "trial-filter", "aria-label": "Filter trials by state" },
      el("option", { value: "" }, "all states"),
      ...T.TRIAL_STATES.map((s) => el("option", { value: s }, T.TRIAL_WORDS[s])));
    stateSel.addEventListener("change", () => {
      state.stateFilter = stateSel.value; state.offset = 0; render();
    });
    const rungSel = el("select", { id: "rung-filter", "aria-label": "Filter by rung reached" },
      el("option", { value: "-1" }, "any rung"));
    rungSel.addEventListener("change", () => {
      state.rungFilter = Number(rungSel.value); state.offset = 0; render();
    });
    const compareBtn = el("button", { type: "button", id: "compare-btn", className: "secondary",
      disabled: true }, "Compare selected");
    compareBtn.addEventListener("click", () => opts.onCompare(Array.from(state.selected)));
    const clearBtn = el("button", { type: "button", className: "secondary", id: "trials-clear" },
      "Clear filters");
    clearBtn.addEventListener("click", clearFilters);
    const eid = opts.experimentId;
    const base = "/api/v1/experiments/" + eid + "/export?format=";
    const dl = (fmt) => {
      const b = el("button", { type: "button", className: "secondary", id: "download-" + fmt },
        fmt.toUpperCase());
      b.addEventListener("click", async () => {
        b.disabled = true;
        try { await T.download(base + fmt, "experiment-" + eid + "-trials." + fmt); }
        catch (e) { T.banner("Download failed: " + e.message); }
        finally { b.disabled = false; }
      });
      return b;
    };
    const count = el("span", { className: "muted small", id: "trials-count",
      "aria-live": "polite" });
    const toolbar = el("div", { className: "toolbar" },
      el("label", null, "State ", stateSel), el("label", null, "Rung reached ", rungSel),
      clearBtn, compareBtn,
      el("span", { className: "downloads" }, "Download ", dl("csv"), dl("json")), count);

    // ---- table and pager ----------------------------------------------------------------
    const table = el("table", { className: "trials", id: "trials-table" },
      el("caption", { className: "sr-only" }, "Trials, best first"));
    const thead = el("thead");
    const tbody = el("tbody");
    table.append(thead, tbody);
    const wrap = el("div", { className: "table-wrap", tabindex: "0", role: "region",
      "aria-label": "Trials" }, table);
    const pageInfo = el("span", { className: "muted", id: "trials-page", "aria-live": "polite" });
    const pager = (label, id, fn) => {
      const b = el("button", { type: "button", className: "secondary", id }, label);
      b.addEventListener("click", () => { fn(); render(); });
      return b;
    };
    const first = pager("« First", "trials-first", () => { state.offset = 0; });
    const prev = pager("‹ Prev", "trials-prev",
      () => { state.offset = Math.max(0, state.offset - PAGE); });
    const next = pager("Next ›", "trials-next", () => { state.offset += PAGE; });
    const help = el("p", { className: "muted small" }, "Best first: the highest rung reached, "
      + "then the value there. Click a heading to sort; type in the boxes under the headings "
      + "to filter (e.g. <0.01, >=3, 1..5, adam).");
    const node = el("div", null, toolbar, help, wrap,
      el("div", { className: "pager" }, first, prev, pageInfo, next));

    function clearFilters() {
      state.filters.clear();
      for (const input of thead.querySelectorAll("input.col-filter")) input.value = "";
      stateSel.value = ""; state.stateFilter = "";
      rungSel.value = "-1"; state.rungFilter = -1;
      state.offset = 0;
      render();
    }

    function headerCell(col) {
      const b = el("button", { type: "button", className: "sort", dataset: { key: col.key },
        title: col.title || null }, col.label);
      b.addEventListener("click", () => {
        const s = state.sort;
        const dir = col.better && state.table.mode === "max" ? -1 : 1;  // best first at first
        state.sort = s.key === col.key ? { key: col.key, dir: -s.dir } : { key: col.key, dir };
        state.offset = 0;
        render();
      });
      return el("th", { scope: "col", className: cellClass(col) }, b);
    }

    function filterCell(col) {
      const cls = "filter " + cellClass(col);
      if (col.key === "rank" || col.key === "state") return el("th", { className: cls });
      const input = el("input", { type: "text", className: "col-filter", size: "6",
        placeholder: col.num ? "<, >, a..b" : "contains", dataset: { key: col.key },
        "aria-label": "Filter " + col.label });
      input.value = state.filters.has(col.key) ? state.filters.get(col.key).text : "";
      input.addEventListener("input", () => {
        const fn = parseFilter(input.value);
        if (fn) state.filters.set(col.key, { text: input.value, fn });
        else state.filters.delete(col.key);
        state.offset = 0;
        render();
      });
      return el("th", { className: cls }, input);
    }

    function buildHeader() {
      const top = el("tr", null, el("th", { scope: "col", className: "select" },
        el("span", { className: "sr-only" }, "Select")), ...state.cols.map(headerCell));
      const filters = el("tr", { className: "filters" }, el("th", { className: "filter" }),
        ...state.cols.map(filterCell));
      if (opts.admin) {
        top.append(el("th", { scope: "col" }, "Action"));
        filters.append(el("th", { className: "filter" }));
      }
      thead.replaceChildren(top, filters);
      tbody.replaceChildren();
    }

    function paintSort() {
      for (const b of thead.querySelectorAll("button.sort")) {
        const on = b.dataset.key === state.sort.key;
        b.classList.toggle("active", on);
        b.classList.toggle("desc", on && state.sort.dir < 0);
        if (on) b.parentElement.setAttribute("aria-sort",
          state.sort.dir > 0 ? "ascending" : "descending");
        else b.parentElement.removeAttribute("aria-sort");
      }
    }

    function createRow(r) {
      const tr = el("tr");
      const box = el("input", { type: "checkbox", className: "pick",
        "aria-label": "Select trial " + T.trialName(eid, r.number) });
      box.addEventListener("change", () => {
        if (box.checked) state.selected.add(tr._number);
        else state.selected.delete(tr._number);
        paintSelection();
      });
      tr._box = box;
      tr._cells = state.cols.map((c) => el("td", { className: cellClass(c) }));
      tr.append(el("td", { className: "select" }, box), ...tr._cells);
      if (opts.admin) {
        tr._stop = T.actionButton("Stop training", "small secondary", () => opts.onStop(tr._row));
        tr.append(el("td", null, tr._stop));
      }
      return tr;
    }

    function fillRow(tr, r) {
      tr._row = r;
      tr._number = r.number;
      tr.dataset.number = r.number;
      tr._box.checked = state.selected.has(r.number);
      state.cols.forEach((c, i) => {
        if (c.render) c.render(tr._cells[i], r);
        else T.setText(tr._cells[i], fmtCell(c.get(r)));
      });
      if (tr._stop) {
        tr._stop.hidden = !["pending", "running", "paused", "lost"].includes(r.state);
        T.setAttr(tr._stop, "aria-label", "Stop training trial " + T.trialName(eid, r.number));
      }
    }

    function paintSelection() {
      const n = state.selected.size;
      compareBtn.disabled = n < 2 || n > MAX_COMPARE;
      T.setText(compareBtn, n ? "Compare selected (" + n + ")" : "Compare selected");
      T.setAttr(compareBtn, "title", n > MAX_COMPARE ? "at most " + MAX_COMPARE + " trials" : null);
    }

    function visibleRows() {
      const colOf = new Map(state.cols.map((c) => [c.key, c]));
      let rows = state.rows.filter((r) => (!state.stateFilter || r.state === state.stateFilter)
        && (state.rungFilter < 0 || r.rung >= state.rungFilter));
      for (const [key, f] of state.filters) {
        const col = colOf.get(key);
        if (col) rows = rows.filter((r) => f.fn(col.get(r)));
      }
      const col = colOf.get(state.sort.key) || colOf.get("rank");
      const dir = state.sort.dir;
      return rows.slice().sort((a, b) => compareValues(col.get(a), col.get(b), dir)
        || a._rank - b._rank);
    }

    function render() {
      if (!state.table) return;
      paintSort();
      const rows = visibleRows();
      if (state.offset >= rows.length) state.offset = Math.max(0, rows.length - PAGE);
      state.offset -= state.offset % PAGE;
      const shown = rows.slice(state.offset, state.offset + PAGE);
      T.patchRows(tbody, shown, (r) => r.number, createRow, fillRow);
      const span = state.cols.length + 1 + (opts.admin ? 1 : 0);
      if (!shown.length) T.emptyRow(tbody, span, "No trials match.");
      const lo = rows.length ? state.offset + 1 : 0;
      T.setText(pageInfo, lo + "–" + (state.offset + shown.length) + " of " + T.fmtInt(rows.length));
      T.setText(count, T.fmtInt(rows.length) + " of " + T.fmtInt(state.rows.length) + " trials");
      first.disabled = prev.disabled = state.offset === 0;
      next.disabled = state.offset + shown.length >= rows.length;
    }

    function fillRungOptions(table) {
      const top = table.trials.reduce((m, r) => Math.max(m, r.rung), -1);
      if (rungSel.options.length === top + 2) return;
      const keep = rungSel.value;
      rungSel.replaceChildren(el("option", { value: "-1" }, "any rung"),
        ...Array.from({ length: top + 1 }, (_, k) => el("option", { value: String(k) },
          k === 0 ? "rung 0 or more" : "rung " + k + " or more")));
      rungSel.value = Number(keep) <= top ? keep : "-1";
    }

    /* A new export JSON (null: unchanged since the last one). */
    function update(table) {
      if (!table) return;
      state.table = table;
      state.rows = table.trials.map((r, i) => Object.assign({ _rank: i + 1 }, r));
      const cols = columnsOf(table);
      const colKey = cols.map((c) => c.key).join("\u0001");
      if (colKey !== state.colKey) {
        state.cols = cols;
        state.colKey = colKey;
        buildHeader();
      } else {
        state.cols = cols;
      }
      for (const opt of stateSel.options) {
        if (!opt.value) continue;
        const n = table.trials.filter((r) => r.state === opt.value).length;
        T.setText(opt, T.TRIAL_WORDS[opt.value] + " (" + n + ")");
      }
      fillRungOptions(table);
      render();
    }

    function rowOf(number) { return state.rows.find((r) => r.number === number) || null; }

    return { node, update, rowOf, selected: state.selected };
  }

  return { create, parseFilter };
})();
