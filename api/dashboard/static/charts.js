/* The experiment page's charts (Plotly, loaded by T.plotly()): best so far, learning
 * curves, a comparison of a few trials, parallel coordinates and parameter importance.
 * Each draw function takes its <div> and the JSON of its endpoint. */
"use strict";

const Charts = (() => {
  const darkText = "#1f2937";
  const COMPARE_COLORS = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2",
    "#ca8a04", "#4b5563"];

  /* Plotly renders a small subset of HTML in its labels: escape names users typed. */
  function plotText(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function layout(extra) {
    return Object.assign({
      margin: { l: 56, r: 16, t: 8, b: 48 }, paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)", font: { size: 12, color: darkText }, hovermode: "closest",
    }, extra);
  }

  function quantile(sorted, q) {
    const i = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
    return sorted[i];
  }

  /* A y range fitted to where the results are, not to the first steps' values: the points
   * past the first rung, from the best one to the 90th percentile on the worse side (so a
   * 0.95-0.98 band fills the chart instead of lying flat on 0-1). Null: let Plotly choose. */
  function fittedRange(xs, ys, levels, mode) {
    const from = levels && levels.length > 1 ? levels[1] : -Infinity;
    let vals = [];
    for (let i = 0; i < ys.length; i++) {
      if (ys[i] !== null && xs[i] !== null && xs[i] >= from) vals.push(ys[i]);
    }
    if (vals.length < 2) vals = ys.filter((y) => y !== null);
    if (vals.length < 2) return null;
    vals.sort((a, b) => a - b);
    const lo = mode === "max" ? quantile(vals, 0.1) : vals[0];
    const hi = mode === "max" ? vals[vals.length - 1] : quantile(vals, 0.9);
    if (!(hi > lo)) return null;
    const pad = (hi - lo) * 0.06;
    return [lo - pad, hi + pad];
  }

  function isLogX(levels) {
    return levels.length > 1 && levels[levels.length - 1] / levels[0] >= 9;
  }

  function rungLines(levels) {
    return levels.map((r) => ({ type: "line", xref: "x", yref: "paper", x0: r, x1: r, y0: 0,
      y1: 1, line: { color: "#cbd5e1", width: 1, dash: "dot" } }));
  }

  function curves(div, c) {
    const traces = c.groups.map((g) => ({
      type: "scattergl", mode: "lines+markers", name: plotText(T.TRIAL_WORDS[g.state] || g.state)
        + " (" + g.n + ")",
      x: g.x, y: g.y, text: g.number, customdata: g.number, connectgaps: false,
      line: { color: T.STATE_COLORS[g.state] || "#888", width: 1 }, opacity: 0.6,
      marker: { size: 3, color: T.STATE_COLORS[g.state] || "#888" },
      hovertemplate: "trial " + c.experiment_id + "/%{text}<br>resource %{x}<br>value %{y}"
        + "<extra>" + (T.TRIAL_WORDS[g.state] || g.state) + "</extra>",
    }));
    const xs = [];
    const ys = [];
    for (const g of c.groups) { xs.push(...g.x); ys.push(...g.y); }
    if (c.best) {
      traces.push({ type: "scattergl", mode: "lines+markers",
        name: "best (" + c.experiment_id + "/" + c.best.number + ")",
        x: c.best.x, y: c.best.y, line: { color: "#111827", width: 3 },
        marker: { size: 5, color: "#facc15", line: { color: "#111827", width: 1 } },
        customdata: c.best.x.map(() => c.best.number),
        hovertemplate: "best trial " + c.experiment_id + "/" + c.best.number
          + "<br>resource %{x}<br>value %{y}<extra></extra>" });
    }
    const levels = c.levels || [];
    const range = fittedRange(xs, ys, levels, c.mode);
    return Plotly.react(div, traces, layout({
      uirevision: "curves", height: 380, showlegend: true, legend: { orientation: "h", y: -0.22 },
      xaxis: { title: { text: "resource" }, type: isLogX(levels) ? "log" : "linear",
        zeroline: false, tickvals: levels.length ? levels : undefined },
      yaxis: { title: { text: plotText(c.metric) }, zeroline: false,
        range: range || undefined, autorange: range ? false : true },
      shapes: rungLines(levels),
    }), T.plotConfig);
  }

  /* A step line of the best value so far, against time or resource spent (`by`). */
  function bestSoFar(div, b, by) {
    const overTime = by !== "resource";
    const xs = overTime ? b.time.map((t) => new Date(t * 1000).toISOString()) : b.resource.slice();
    const ys = b.value.slice();
    if (ys.length) {  // carry the best to now / to all the resource spent
      xs.push(overTime ? new Date(b.last_time * 1000).toISOString() : b.resource_spent);
      ys.push(ys[ys.length - 1]);
    }
    const text = b.number.map((n, i) => "trial " + b.experiment_id + "/" + n + ", rung "
      + b.rung[i]).concat(ys.length ? ["(still the best)"] : []);
    // Time ticks are short and upright (no rotated labels running into the axis title):
    // the clock time on the ticks, the day in the title when the run fits in one day.
    let timeTitle = "time (UTC)";
    let tickformat;
    if (overTime && xs.length) {
      const first = new Date(xs[0]);
      const span = new Date(xs[xs.length - 1]) - first;
      if (span < 86400e3) {
        tickformat = span < 60e3 ? "%H:%M:%S.%L" : span < 3600e3 ? "%H:%M:%S" : "%H:%M";
        timeTitle += ", " + first.toISOString().slice(0, 10);
      } else {
        tickformat = "%b %-d";
      }
    }
    const narrow = div.clientWidth < 520;
    const nticks = narrow ? (tickformat && tickformat.endsWith("%L") ? 3 : 4) : undefined;
    return Plotly.react(div, [{
      type: "scatter", mode: "lines+markers", x: xs, y: ys, text, line: { shape: "hv",
        color: "#111827", width: 2 }, marker: { size: 6, color: "#facc15",
        line: { color: "#111827", width: 1 } },
      hovertemplate: "%{y}<br>%{text}<extra></extra>",
    }], layout({
      uirevision: "best-" + (overTime ? "time" : "resource"), height: 260, showlegend: false,
      xaxis: { title: { text: overTime ? timeTitle : "resource spent (at rung results)" },
        type: overTime ? "date" : "linear", zeroline: false, tickformat, tickangle: 0,
        nticks, automargin: true },
      yaxis: { title: { text: "best " + plotText(b.metric) }, zeroline: false },
    }), T.plotConfig);
  }

  function compare(div, c) {
    const traces = c.trials.map((t, i) => ({
      type: "scatter", mode: "lines+markers", x: t.x, y: t.y,
      name: c.experiment_id + "/" + t.number,
      line: { color: COMPARE_COLORS[i % COMPARE_COLORS.length], width: 2 },
      marker: { size: 4 },
      hovertemplate: "trial " + c.experiment_id + "/" + t.number
        + "<br>resource %{x}<br>value %{y}<extra></extra>",
    }));
    const xs = [];
    const ys = [];
    for (const t of c.trials) { xs.push(...t.x); ys.push(...t.y); }
    const range = fittedRange(xs, ys, c.levels, c.mode);
    return Plotly.react(div, traces, layout({
      uirevision: "compare", height: 320, showlegend: true, legend: { orientation: "h", y: -0.25 },
      xaxis: { title: { text: "resource" }, type: isLogX(c.levels) ? "log" : "linear",
        zeroline: false, tickvals: c.levels.length ? c.levels : undefined },
      yaxis: { title: { text: plotText(c.metric) }, zeroline: false,
        range: range || undefined, autorange: range ? false : true },
      shapes: rungLines(c.levels),
    }), T.plotConfig);
  }

  function parcoords(div, pc) {
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
    // At phone width the axis titles would run into each other: they are turned.
    const narrow = div.clientWidth < 600;
    if (narrow) { trace.labelangle = -40; trace.labelside = "top"; }
    return Plotly.react(div, [trace], layout({ uirevision: "parcoords", height: 420,
      margin: { l: 48, r: 48, t: narrow ? 96 : 56, b: 24 } }), T.plotConfig);
  }

  function importance(div, imp) {
    const items = imp.items.slice().reverse();
    return Plotly.react(div, [{ type: "bar", orientation: "h", x: items.map((i) => i.importance),
      y: items.map((i) => plotText(i.param)), marker: { color: "#2563eb" },
      text: items.map((i) => i.importance.toFixed(3)), textposition: "auto",
      hovertemplate: "%{y}: %{x:.3f}<extra></extra>" }],
    layout({ uirevision: "importance", height: Math.max(160, 48 + 28 * items.length),
      margin: { l: 120, r: 16, t: 8, b: 40 }, xaxis: { title: { text: "importance" },
        range: [0, 1] }, yaxis: { automargin: true, ticksuffix: "  " } }), T.plotConfig);
  }

  return { curves, bestSoFar, compare, parcoords, importance, fittedRange, plotText,
    COMPARE_COLORS };
})();
