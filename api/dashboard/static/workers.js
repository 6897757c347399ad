/* Workers: hosts, GPUs, current jobs, last heartbeat, lost leases. */
"use strict";

const STALE_S = 60;

document.addEventListener("DOMContentLoaded", () => T.start((main) => {
  const { el } = T;
  const tbl = T.tableOf(["Worker", "Host", "GPUs", "CPUs", "Slots", "Current jobs",
    "Last heartbeat", "Lost leases", "Labels"], { caption: "Workers, most recently seen first" });
  tbl.table.id = "workers-table";
  const status = el("p", { className: "muted", "aria-live": "polite" });
  main.append(el("div", { className: "title-row" }, el("h1", null, "Workers")),
    el("section", { className: "panel" }, status, tbl.wrap));

  function create(w) {
    const tr = el("tr", { id: "worker-" + w.worker_id });
    tr._c = Array.from({ length: 9 }, () => el("td"));
    tr._c[3].className = tr._c[4].className = tr._c[7].className = "num";
    tr.append(...tr._c);
    return tr;
  }

  function fill(tr, w, _fresh, now) {
    const c = tr._c;
    T.setText(c[0], w.worker_id);
    T.setText(c[1], w.host);
    T.setChildren(c[2], w.gpus.length
      ? w.gpus.map((g) => el("span", { className: "chip" }, String(g))) : ["none"]);
    T.setText(c[3], w.cpus === null ? "—" : w.cpus);
    T.setText(c[4], w.slots);
    T.setChildren(c[5], w.current_jobs.length ? w.current_jobs.flatMap((j, i) => [
      i ? ", " : "",
      el("a", { href: "/ui/trials/" + j.trial_id },
        "trial #" + j.trial_number + " (exp " + j.experiment_id + ", → " + j.to_resource + ")"),
    ]) : ["idle"]);
    const age = (now - w.last_seen_at);
    T.setText(c[6], T.fmtAge(w.last_seen_at, now * 1000));
    T.setAttr(c[6], "title", T.fmtTime(w.last_seen_at));
    c[6].classList.toggle("stale", age > STALE_S);
    T.setText(c[7], w.lost_leases);
    c[7].classList.toggle("warn", w.lost_leases > 0);
    T.setText(c[8], Object.entries(w.labels).map(([k, v]) => k + "=" + v).join(", ") || "—");
  }

  T.poll(async () => {
    const page = await T.api("/ui/api/workers?limit=500");
    T.patchRows(tbl.tbody, page.items, (w) => w.worker_id, create,
      (tr, w, fresh) => fill(tr, w, fresh, page.now));
    if (!page.items.length) T.emptyRow(tbl.tbody, 9, "No worker has registered yet.");
    const busy = page.items.filter((w) => w.current_jobs.length).length;
    T.setText(status, T.fmtInt(page.total) + " workers, " + busy + " busy. Heartbeats older than "
      + STALE_S + " s are marked.");
    document.body.dataset.ready = "1";
  });
}));
