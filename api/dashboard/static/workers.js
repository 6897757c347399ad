/* Workers: state (busy, idle, offline: not seen within its heartbeat window), hosts, each
 * GPU's use and memory (or "unknown" where the agent cannot read them), current jobs, jobs
 * done, last heartbeat, lost leases. Offline workers are greyed. */
"use strict";

const COLUMNS = ["Worker", "State", "Host", "GPUs", "Current jobs", "Jobs done",
  "Last heartbeat", "Lost leases", "Labels"];
/* Column classes (col-NAME): at phone width only worker, state and jobs show. */
const COLUMN_KEYS = ["worker", "state", "host", "gpus", "current", "done", "heartbeat",
  "lost", "labels"];

function fmtMiB(mb) {
  return mb >= 1024 ? (mb / 1024).toFixed(1) + " GiB" : Math.round(mb) + " MiB";
}

/* One line per GPU: "0 H100: 87 % · 31.2 / 80.0 GiB", or the names and "use unknown". */
function gpuLines(w) {
  const { el } = T;
  if (Array.isArray(w.gpu_stats) && w.gpu_stats.length) {
    return w.gpu_stats.map((g) => {
      const util = g.utilization === null || g.utilization === undefined ? null : g.utilization;
      const mem = g.memory_used_mb !== null && g.memory_used_mb !== undefined
        && g.memory_total_mb ? fmtMiB(g.memory_used_mb) + " / " + fmtMiB(g.memory_total_mb)
        : "memory unknown";
      return el("span", { className: "gpu" },
        g.index + " " + (g.name || "GPU") + ": ",
        util === null ? "use unknown" : el("meter", { min: "0", max: "100", value: util,
          "aria-label": "GPU " + g.index + " use" }),
        util === null ? "" : " " + Math.round(util) + " %", " · " + mem);
    });
  }
  if (!w.gpus.length) return ["none"];
  return w.gpus.map((g, i) => el("span", { className: "gpu" }, i + " " + String(g)
    + ": use and memory unknown"));
}

document.addEventListener("DOMContentLoaded", () => T.start((main) => {
  const { el } = T;
  const tbl = T.tableOf(COLUMNS, { caption: "Workers, most recently seen first",
    cols: COLUMN_KEYS, className: "workers" });
  tbl.table.id = "workers-table";
  const status = el("p", { className: "muted", "aria-live": "polite", id: "workers-status" });
  main.append(el("div", { className: "title-row" }, el("h1", null, "Workers")),
    el("section", { className: "panel" }, status, tbl.wrap));

  function create(w) {
    const tr = el("tr", { id: "worker-" + w.worker_id });
    tr._c = COLUMN_KEYS.map((key) => el("td", { className: "col-" + key }));
    tr._c[5].classList.add("num");
    tr._c[7].classList.add("num");
    tr._c[0].classList.add("nowrap");
    tr._state = el("span");
    tr._c[1].append(tr._state);
    tr.append(...tr._c);
    return tr;
  }

  function fill(tr, w, _fresh, now) {
    const c = tr._c;
    const state = w.state || (w.current_jobs.length ? "busy" : "idle");
    tr.classList.toggle("offline", state === "offline");
    tr.dataset.state = state;
    T.setText(c[0], w.worker_id);
    tr._state.className = "badge worker-" + state;
    T.setText(tr._state, state);
    T.setText(c[2], w.host + (w.cpus === null ? "" : " (" + w.cpus + " CPUs, " + w.slots
      + (w.slots === 1 ? " slot)" : " slots)")));
    T.setChildren(c[3], gpuLines(w));
    T.setChildren(c[4], w.current_jobs.length ? w.current_jobs.flatMap((j, i) => [
      i ? ", " : "",
      el("a", { href: T.trialUrl(j.experiment_id, j.trial_number) },
        "trial " + T.trialName(j.experiment_id, j.trial_number) + " (→ " + j.to_resource + ")"),
    ]) : ["—"]);
    T.setText(c[5], w.jobs_done === undefined ? "—" : T.fmtInt(w.jobs_done));
    T.setText(c[6], T.fmtAge(w.last_seen_at, now * 1000));
    T.setAttr(c[6], "title", T.fmtTime(w.last_seen_at));
    T.setText(c[7], w.lost_leases);
    c[7].classList.toggle("warn", w.lost_leases > 0);
    T.setText(c[8], Object.entries(w.labels).map(([k, v]) => k + "=" + v).join(", ") || "—");
  }

  T.poll(async () => {
    const page = await T.api("/ui/api/workers?limit=500");
    T.patchRows(tbl.tbody, page.items, (w) => w.worker_id, create,
      (tr, w, fresh) => fill(tr, w, fresh, page.now));
    if (!page.items.length) T.emptyRow(tbl.tbody, COLUMNS.length, "No worker has registered yet.");
    const count = (s) => page.items.filter((w) => (w.state || (w.current_jobs.length ? "busy"
      : "idle")) === s).length;
    T.setText(status, T.fmtInt(page.total) + " workers: " + count("busy") + " busy, "
      + count("idle") + " idle, " + count("offline") + " offline (it stopped, or was not "
      + "seen within its heartbeat window).");
    document.body.dataset.ready = "1";
  });
}));
