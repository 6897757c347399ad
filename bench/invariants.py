"""The invariants a run under faults must keep, checked from the workers' logs, the
database and the API after ``bench/fleet.py`` drained it; and the counts per fault kind.

Times: workers log ``time.time()`` before a call (``ts``) and after its answer (``tr``);
the servers use the same clock for leases. A lease taken or renewed by a call that the
server handled at ``now`` (``ts <= now <= tr``) runs to ``now + lease_ttl_s``. Every check
below turns that into bounds that cannot raise a false alarm:

- **acknowledged reports**: every report answered 200 is in its trial's history with that
  value, current or superseded (a retry's re-report of the step replaced it), in the API's
  trial detail and in the database; the current value of a step is never that of a job
  older than one whose other value was acknowledged there; no job has two values at a step.
- **one live lease per trial**: a job is surely leased from its claim's answer to the
  earlier of (its last accepted heartbeat's send time + TTL) and the send time of the call
  that ended it; no two jobs of a trial are surely leased at the same moment. In the
  ``jobs`` table, each job of a trial ended before the next began, an expired job ended
  after its lease ran out, and a job that ended otherwise ended before it did.
- **no call accepted after its lease ran out**: a call sent after every bound on its job's
  lease (the claim's ``lease_expires_at``, each earlier accepted call's answer + TTL) and
  answered 200 must be a repeat that wrote nothing (listed apart) — never a new write.
- **promotions**: a promotion's recorded reason (rank, n, threshold) matches the rung as it
  was: the first ``n`` results of that rung by id (rung results are inserted under the
  experiment's lock, so ids follow the order the decider saw them in), in which the
  promoted trial ranks ``rank < threshold = n // eta``; one promotion per trial and rung.
- **retries resume from a checkpoint**: a retried job starts at or after the newest
  checkpoint its trial's lost job had acknowledged.
- **every trial final**, every experiment over, no job queued or leased.
- **budgets**: ``n_trials <= max_trials``; no trial, job or report past ``max_resource``;
  ``resource_used`` is, per experiment, the sum over trials of the highest rung's resource
  that each was given (ASHA promotion form: a start counts ``r``, a promotion the step up).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import Fleet

FINAL_TRIALS = frozenset({"completed", "stopped", "failed", "cancelled"})
EPS = 1e-6


@dataclass
class Check:
    name: str
    checked: int = 0
    #: A failed soft check is a defect to report, not a broken invariant (no exit 1).
    hard: bool = True
    failed: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def fail(self, example: str) -> None:
        self.failed += 1
        if len(self.examples) < 5:
            self.examples.append(example)

    @property
    def ok(self) -> bool:
        return self.failed == 0


@dataclass
class Findings:
    checks: dict[str, Check]
    faults: dict[str, dict[str, Any]]
    calls: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values() if c.hard)


def read_logs(workdir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The leases and calls that the workers logged (a torn last line is skipped)."""
    leases, calls = [], []
    for path in sorted(workdir.glob("worker*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("ev") == "lease":
                leases.append(rec)
            elif rec.get("ev") == "call":
                calls.append(rec)
    return leases, calls


class Facts:
    """The database's rows that the checks read, once."""

    def __init__(self, fleet: Fleet) -> None:
        q = fleet.query
        self.experiments = {r.id: r for r in q(
            "SELECT id, state, n_trials, resource_used, config FROM experiments")}
        self.trials = {r.id: r for r in q(
            "SELECT id, experiment_id, number, bracket, state, rung, resource, ranked_kind, "
            "ranked_step, ranked_loss FROM trials")}
        self.jobs = {r.id: r for r in q(
            "SELECT id, experiment_id, trial_id, rung, from_resource, to_resource, state, "
            "attempt, worker_id, lease_expires_at, created_at, ended_at FROM jobs")}
        self.reports = q("SELECT trial_id, job_id, step, value, created_at FROM reports")
        tables = {r[0] for r in q(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            if fleet.cfg.database == "postgres" else
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.superseded = q(
            "SELECT trial_id, job_id, step, value, superseded_by_job_id, created_at "
            "FROM superseded_reports") if "superseded_reports" in tables else []
        self.rung_results = q(
            "SELECT id, experiment_id, bracket, rung, trial_number, trial_id, loss, "
            "loss_rank_kind, status, resource FROM rung_results ORDER BY id")
        self.decisions = q("SELECT id, trial_id, kind, reason, step, created_at FROM decisions "
                           "ORDER BY id")


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)


def history_from_api(fleet: Fleet, trial_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each trial's reports as ``GET /api/v1/trials/{id}`` shows them: current ones and
    superseded ones (``superseded_by_job_id`` set)."""
    return {
        tid: list(fleet.request("GET", f"/api/v1/trials/{tid}").get("reports", []))
        for tid in trial_ids
    }


def check_run(fleet: Fleet, api_sample: int | None = None) -> Findings:
    """Every check, and the counts per fault kind, of a drained run."""
    leases, calls = read_logs(fleet.workdir)
    facts = Facts(fleet)
    ttl = fleet.cfg.lease_ttl_s
    checks = {
        "acked_reports": _check_acked(fleet, facts, calls, api_sample),
        **_check_leases(facts, leases, calls, ttl),
        "promotions": _check_promotions(facts),
        "checkpoints": _check_checkpoints(facts, leases, calls),
        "final": _check_final(facts, fleet.cfg.cancel_at_end),
        "budgets": _check_budgets(facts),
        "ranking": _check_ranking(facts),
        "repeat_answers": _check_repeat_answers(LeaseBounds(facts, leases, calls, ttl), calls),
    }
    claims = [{"kind": "claim", "status": 200, "code": "", "ts": x["ts"], "tr": x["tr"]}
              for x in leases]
    return Findings(checks, _fault_counts(fleet, facts, calls),
                    _call_counts([*claims, *calls]))


# ---- acknowledged reports ----------------------------------------------------------------
def _check_acked(fleet: Fleet, facts: Facts, calls: list[dict[str, Any]],
                 api_sample: int | None) -> Check:
    check = Check("acked_reports")
    db: dict[tuple[int, int], list[tuple[float | None, int, int | None]]] = defaultdict(list)
    for r in facts.reports:
        db[(r.trial_id, r.step)].append((r.value, r.job_id, None))
    for r in facts.superseded:
        db[(r.trial_id, r.step)].append((r.value, r.job_id, r.superseded_by_job_id))
    acked = [c for c in calls if c["kind"] == "report" and c["status"] == 200]
    # A retry may report again what a lost job reported (it supersedes it); within one job
    # the trainer never sends two values for a step. So any duplicate_report is a refused
    # retry: the defect that failed trials whose worker was lost.
    for c in calls:
        if c["kind"] == "report" and c["status"] == 409 and c.get("code") == "duplicate_report":
            check.fail(f"job {c['job']}: its report of step {c.get('step')} was refused as a "
                       "duplicate of another job's")
    trial_ids = sorted({c["trial"] for c in acked})
    if api_sample is not None:
        trial_ids = trial_ids[:: max(1, len(trial_ids) // max(api_sample, 1))][:api_sample]
    api = history_from_api(fleet, trial_ids)
    from_api: dict[tuple[int, int], list[tuple[float | None, int, int | None]]] = defaultdict(list)
    for tid, entries in api.items():
        for e in entries:
            from_api[(tid, e["step"])].append(
                (e.get("value"), e.get("job_id", -1), e.get("superseded_by_job_id")))
    seen: set[tuple[int, int, float]] = set()
    n_current = n_superseded = n_api = 0
    for c in acked:
        key = (c["trial"], c["step"])
        if (c["trial"], c["step"], c["value"]) in seen:
            continue
        seen.add((c["trial"], c["step"], c["value"]))
        check.checked += 1
        hits = [e for e in db[key] if e[0] == c["value"]]
        if not hits:
            check.fail(f"trial {key[0]} step {key[1]}: value {c['value']} acknowledged to job "
                       f"{c['job']} at {c['tr']:.3f} is not in the database ({db[key]})")
            continue
        if any(e[2] is None for e in hits):
            n_current += 1
        else:
            n_superseded += 1
        if c["trial"] in api:
            n_api += 1
            if not any(e[0] == c["value"] for e in from_api[key]):
                check.fail(f"trial {key[0]} step {key[1]}: acknowledged value {c['value']} is "
                           f"missing from GET /api/v1/trials/{key[0]} ({from_api[key]})")
    # The newest acknowledged job's value is current: never an older job's other value.
    newest: dict[tuple[int, int], tuple[int, float]] = {}
    for c in acked:
        key = (c["trial"], c["step"])
        if key not in newest or c["job"] > newest[key][0]:
            newest[key] = (c["job"], c["value"])
    n_older_current = 0
    for key, (job, value) in newest.items():
        current = [e for e in db[key] if e[2] is None]
        if current and current[0][1] < job and current[0][0] != value:
            n_older_current += 1
            check.fail(f"trial {key[0]} step {key[1]}: current value {current[0][0]} is job "
                       f"{current[0][1]}'s, older than job {job} whose {value} was acknowledged")
    per_job_step = Counter((e[1], key[1]) for key, es in db.items() for e in es)
    twice = [k for k, n in per_job_step.items() if n > 1]
    for job, step in twice[:5]:
        check.fail(f"job {job} has {per_job_step[(job, step)]} values at step {step}")
    check.failed += max(0, len(twice) - 5)
    check.detail = {"acknowledged": check.checked, "current": n_current,
                    "superseded": n_superseded, "checked_in_api": n_api,
                    "api_trials": len(api), "older_job_current": n_older_current,
                    "two_values_one_job_step": len(twice)}
    return check


# ---- leases ------------------------------------------------------------------------------
class LeaseBounds:
    """The latest a job's lease can run out, as far as the calls before a moment show: the
    claim's ``lease_expires_at``, each accepted call answered by then (renewed at most at
    its answer) and each write of the job (renewed at its ``created_at``), plus TTL."""

    def __init__(self, facts: Facts, leases: list[dict[str, Any]],
                 calls: list[dict[str, Any]], ttl: float) -> None:
        self.ttl = ttl
        self.until = {lease["job"]: lease["until"] for lease in leases}
        self.answered: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for c in calls:
            if c["status"] == 200 and c.get("job") is not None:
                self.answered[c["job"]].append((c["ts"], c["tr"]))
        self.writes: dict[int, list[float]] = defaultdict(list)
        for r in [*facts.reports, *facts.superseded]:
            self.writes[r.job_id].append(r.created_at)

    def upper(self, job: int, before: float, call: dict[str, Any] | None = None) -> float:
        """Renewals that may have been handled before ``before`` (``call`` itself apart)."""
        own = (call["ts"], call["tr"]) if call is not None and call["status"] == 200 else None
        return max([self.until.get(job, -math.inf),
                    *(tr + self.ttl for ts, tr in self.answered.get(job, [])
                      if ts < before and (ts, tr) != own),
                    *(t + self.ttl for t in self.writes.get(job, []) if t < before)])


def _check_leases(facts: Facts, leases: list[dict[str, Any]], calls: list[dict[str, Any]],
                  ttl: float) -> dict[str, Check]:
    by_job: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for c in calls:
        if c.get("job") is not None:
            by_job[c["job"]].append(c)
    # Client side: the intervals in which each job was surely leased. A lease is renewed to
    # now + TTL by a heartbeat (now >= its send time) and by a report that wrote (its row's
    # created_at is that now); a completion sent (answered or not) may end it at once.
    client = Check("overlapping_leases_client")
    writes: dict[int, list[float]] = defaultdict(list)
    for r in [*facts.reports, *facts.superseded]:
        writes[r.job_id].append(r.created_at)
    sure: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    for lease in leases:
        job_calls = by_job.get(lease["job"], [])
        renewed = [c["ts"] for c in job_calls
                   if c["kind"] == "heartbeat" and c["status"] == 200
                   and c.get("decision") == "continue"] + writes.get(lease["job"], [])
        end = max([lease["until"], *(t + ttl for t in renewed)])
        # Any completion sent (answered, dropped, or in flight when its worker was killed).
        ending = [c["ts"] for c in job_calls if c["kind"] == "complete" or (
            c["status"] == 200 and c.get("decision") in ("stop", "pause", "complete"))]
        if ending:
            end = min(end, min(ending))
        sure[lease["trial"]].append((lease["tr"], end, lease["job"]))
    for trial, spans in sure.items():
        spans.sort()
        for i, (a0, a1, ja) in enumerate(spans):
            for b0, b1, jb in spans[i + 1:]:
                client.checked += 1
                if max(a0, b0) + EPS < min(a1, b1):
                    client.fail(f"trial {trial}: jobs {ja} and {jb} both surely leased during "
                                f"[{max(a0, b0):.3f}, {min(a1, b1):.3f}]")
    client.detail = {"jobs_seen_by_workers": len(leases), "pairs_compared": client.checked}

    # Server side: the jobs table. Its times are each request's clock, read before the
    # request waited for the experiment's lock, so consecutive jobs of a trial may look
    # out of order by that wait (counted, not failed); what must hold exactly: an expired
    # job ended after its lease ran out and its retry was made no earlier, and a job that
    # ended otherwise ended while its lease was live.
    server = Check("overlapping_leases_jobs_table")
    per_trial: dict[int, list[Any]] = defaultdict(list)
    for j in facts.jobs.values():
        per_trial[j.trial_id].append(j)
    states: Counter[str] = Counter()
    inversions: list[float] = []
    for trial, jobs in per_trial.items():
        jobs.sort(key=lambda j: j.id)
        for prev, nxt in zip(jobs, jobs[1:], strict=False):
            server.checked += 1
            if prev.ended_at is None:
                server.fail(f"trial {trial}: job {nxt.id} was made while job {prev.id} "
                            f"({prev.state}) had not ended")
            elif prev.state == "expired" and nxt.created_at + EPS < prev.lease_expires_at:
                server.fail(f"trial {trial}: job {nxt.id} made at {nxt.created_at:.3f}, before "
                            f"expired job {prev.id}'s lease ran out at "
                            f"{prev.lease_expires_at:.3f}")
            elif nxt.created_at < prev.ended_at:
                inversions.append(prev.ended_at - nxt.created_at)
        for j in jobs:
            states[j.state] += 1
            if j.ended_at is None or j.lease_expires_at is None:
                continue
            if j.state == "expired" and j.ended_at + EPS < j.lease_expires_at:
                server.fail(f"job {j.id} expired at {j.ended_at:.3f}, before its lease ran out "
                            f"at {j.lease_expires_at:.3f}")
            if j.state in ("done", "failed", "released") and \
                    j.ended_at > j.lease_expires_at + EPS:
                server.fail(f"job {j.id} ended {j.state} at {j.ended_at:.3f}, after its lease "
                            f"ran out at {j.lease_expires_at:.3f}")
    server.detail = {"jobs": len(facts.jobs), "by_state": dict(states),
                     "clock_inversions": len(inversions),
                     "max_inversion_ms": round(1000 * max(inversions, default=0.0), 1)}

    # No call accepted after every bound on its lease had passed (a repeat apart).
    late = Check("accepted_after_lease_end")
    stored = {(r.trial_id, r.step): r for r in facts.reports}
    bounds = LeaseBounds(facts, leases, calls, ttl)
    n_repeats = 0
    for job, job_calls in by_job.items():
        if job not in bounds.until:
            continue
        for c in job_calls:
            if c["status"] != 200:
                continue
            late.checked += 1
            # Renewals that may have been handled before c was: calls sent before c's answer
            # came, and writes of the job (a dropped call's too).
            bound = bounds.upper(job, c["tr"], c)
            if c["ts"] <= bound + EPS:
                continue
            row = stored.get((c["trial"], c.get("step")))
            repeat = c["kind"] == "complete" or (
                c["kind"] == "report" and row is not None and row.value == c.get("value")
                and row.created_at < c["ts"])
            if c["kind"] == "heartbeat" and c.get("decision") != "continue":
                repeat = True  # a settled answer (stop, pause, complete): it renewed nothing
            if repeat:
                n_repeats += 1
            else:
                late.fail(f"job {job}: {c['kind']} step {c.get('step')} sent at {c['ts']:.3f}, "
                          f"after its lease ran out (at most {bound:.3f}), was accepted")
    late.detail = {"accepted_calls": late.checked,
                   "settled_or_repeat_answers_after_lease_end": n_repeats}
    return {"overlapping_leases_client": client, "overlapping_leases_jobs_table": server,
            "accepted_after_lease_end": late}


# ---- promotions --------------------------------------------------------------------------
def _check_promotions(facts: Facts) -> Check:
    check = Check("promotions")
    eta = {eid: as_dict(e.config)["scheduler"]["eta"] for eid, e in facts.experiments.items()}
    rungs: dict[tuple[int, int, int], list[Any]] = defaultdict(list)
    for r in facts.rung_results:  # ordered by id
        rungs[(r.experiment_id, r.bracket, r.rung)].append(r)
    seen: Counter[tuple[int, int]] = Counter()
    for d in facts.decisions:
        reason = as_dict(d.reason)
        if not str(reason.get("rule", "")).endswith(".promote"):
            continue
        check.checked += 1
        trial = facts.trials[d.trial_id]
        k, n, rank, threshold = reason["rung"], reason["n"], reason["rank"], reason["threshold"]
        seen[(d.trial_id, k)] += 1
        rows = rungs[(trial.experiment_id, reason.get("bracket", trial.bracket), k)]
        e = eta[trial.experiment_id]
        where = f"trial {trial.number} of experiment {trial.experiment_id} promoted from rung {k}"
        if threshold != n // e or not rank < threshold:
            check.fail(f"{where}: reason rank {rank}, n {n}, threshold {threshold} (eta {e})")
            continue
        if len(rows) < n:
            check.fail(f"{where}: reason says n={n}, the rung holds {len(rows)}")
            continue
        first = rows[:n]
        mine = [r for r in first if r.trial_id == d.trial_id]
        if not mine:
            check.fail(f"{where}: not among the rung's first {n} results")
            continue
        key = (mine[0].loss_rank_kind, mine[0].loss, mine[0].trial_number)
        actual = sum((r.loss_rank_kind, r.loss, r.trial_number) < key for r in first)
        if actual != rank or actual >= n // e:
            check.fail(f"{where}: ranks {actual} of the first {n} results, reason says {rank}")
    for (trial_id, k), count in seen.items():
        if count > 1:
            check.fail(f"trial {trial_id} promoted {count} times from rung {k}")
    check.detail = {"promotions": check.checked}
    return check


# ---- checkpoints -------------------------------------------------------------------------
def _check_checkpoints(facts: Facts, leases: list[dict[str, Any]],
                       calls: list[dict[str, Any]]) -> Check:
    check = Check("checkpoints")
    acked_ckpt: dict[int, int] = defaultdict(int)  # job -> newest acknowledged checkpoint step
    for c in calls:
        if c["kind"] == "report" and c["status"] == 200 and c.get("ckpt"):
            acked_ckpt[c["job"]] = max(acked_ckpt[c["job"]], c["ckpt"])
    per_trial_rung: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for j in sorted(facts.jobs.values(), key=lambda j: j.id):
        per_trial_rung[(j.trial_id, j.rung)].append(j)
    resumed = 0
    for jobs in per_trial_rung.values():
        for i, j in enumerate(jobs[1:], start=1):
            check.checked += 1
            newest = max(acked_ckpt.get(p.id, 0) for p in jobs[:i])
            if j.from_resource < newest or j.from_resource > j.to_resource:
                check.fail(f"job {j.id} (retry of trial {j.trial_id} at rung {j.rung}) starts "
                           f"at {j.from_resource}, but step {newest} was checkpointed before")
            if j.from_resource > jobs[0].from_resource:
                resumed += 1
    mismatched = sum(1 for lease in leases if lease.get("ckpt")
                     and int(lease["ckpt"].rsplit("/", 1)[1]) != lease["frm"])
    if mismatched:
        check.fail(f"{mismatched} jobs were handed a checkpoint of another step than their "
                   "from_resource")
    check.detail = {"retried_jobs": check.checked, "resumed_past_rung_start": resumed,
                    "checkpoint_step_mismatch": mismatched}
    return check


# ---- the end state -----------------------------------------------------------------------
def _check_final(facts: Facts, cancelled_ok: bool) -> Check:
    check = Check("final")
    over = {"completed", "cancelled"} if cancelled_ok else {"completed"}
    for e in facts.experiments.values():
        check.checked += 1
        if e.state not in over:
            check.fail(f"experiment {e.id} is {e.state}")
    states = Counter(t.state for t in facts.trials.values())
    for t in facts.trials.values():
        check.checked += 1
        if t.state not in FINAL_TRIALS:
            check.fail(f"trial {t.id} (experiment {t.experiment_id}) is {t.state}")
    active = [j.id for j in facts.jobs.values() if j.state in ("queued", "leased")]
    for j in active[:5]:
        check.fail(f"job {j} is still active")
    check.failed += max(0, len(active) - 5)
    check.detail = {"experiments": len(facts.experiments), "trials": dict(states)}
    return check


def _check_ranking(facts: Facts) -> Check:
    """Each trial's ranked result (tuner.ranking; what orders the best trials) is its
    result at the highest rung where it was judged, ``trials.rung``, kept in step by the
    rung writes whatever faults and retries went on; a worst-value placeholder left at a
    higher rung by a failure or a stop does not rank it."""
    check = Check("ranking")
    at = {(r.trial_id, r.rung): r for r in facts.rung_results}
    for t in facts.trials.values():
        check.checked += 1
        judged = at.get((t.id, t.rung))
        want = (2, None, 0.0) if judged is None else (
            judged.loss_rank_kind, judged.resource, judged.loss)
        got = (t.ranked_kind, t.ranked_step, t.ranked_loss)
        if got != want:
            check.fail(f"trial {t.id} at rung {t.rung} is ranked {got}, its result there {want}")
    return check


def _check_budgets(facts: Facts) -> Check:
    check = Check("budgets")
    trials_of: dict[int, list[Any]] = defaultdict(list)
    for t in facts.trials.values():
        trials_of[t.experiment_id].append(t)
    top_job: dict[int, int] = defaultdict(int)
    for j in facts.jobs.values():
        top_job[j.trial_id] = max(top_job[j.trial_id], j.to_resource)
    top_step: dict[int, int] = defaultdict(int)
    for r in facts.reports:
        top_step[r.trial_id] = max(top_step[r.trial_id], r.step)
    for e in facts.experiments.values():
        config = as_dict(e.config)
        big_r = config["scheduler"]["max_resource"]
        max_trials = config["budget"].get("max_trials")
        trials = trials_of[e.id]
        check.checked += 1
        if max_trials is not None and (e.n_trials > max_trials or len(trials) > max_trials):
            check.fail(f"experiment {e.id}: {len(trials)} trials, max_trials {max_trials}")
        if len(trials) != e.n_trials:
            check.fail(f"experiment {e.id}: n_trials {e.n_trials}, {len(trials)} rows")
        for t in trials:
            worst = max(t.resource, top_job[t.id], top_step[t.id])
            if worst > big_r:
                check.fail(f"trial {t.id}: resource {worst} > max_resource {big_r}")
        given = sum(top_job[t.id] for t in trials)
        if given != e.resource_used:
            check.fail(f"experiment {e.id}: resource_used {e.resource_used}, but its trials "
                       f"were given {given} units")
    check.detail = {"experiments": check.checked}
    return check


def _check_repeat_answers(bounds: LeaseBounds, calls: list[dict[str, Any]]) -> Check:
    """A call sent again (its answer dropped, or sent twice on purpose) while its lease may
    still be live is answered as the first was: the same decision. Soft: a different answer
    loses nothing, but misleads."""
    check = Check("repeat_answers", hard=False)
    answers: Counter[str] = Counter()
    dropped: dict[tuple[int, str, int | None], float] = {}
    for c in calls:
        if c.get("fault") == "dropped":
            dropped[(c["job"], c["kind"], c.get("step"))] = c["ts"]
        if c.get("fault") not in ("dup2", "drop"):
            continue
        if c["fault"] == "drop" and \
                c["ts"] - dropped.get((c["job"], c["kind"], c.get("step")), -math.inf) > 1.0:
            continue  # sent again after an outage: its lease may have run out meanwhile
        check.checked += 1
        if c["fault"] == "dup2":
            same = c["status"] == 200 and c.get("decision") == c.get("first")
            label = f"{c['kind']} sent twice: {c.get('first')} then " + (
                c.get("decision") if c["status"] == 200 else f"{c['status']} {c['code']}")
        else:
            same = c["status"] == 200
            label = f"{c['kind']} sent again after a dropped answer: " + (
                c.get("decision") if c["status"] == 200 else f"{c['status']} {c['code']}")
        if c["status"] == 0 or c["ts"] > bounds.upper(c["job"], c["ts"]) + EPS:
            # No answer at all (a server down), or sent after the lease surely ran out (its
            # worker was stopped meanwhile): a refusal is the right answer then.
            check.checked -= 1
            continue
        answers[label] += 1
        if not same:
            check.fail(f"job {c['job']}: {label}")
    check.detail = {"answers": dict(answers)}
    return check


# ---- counts per fault kind ---------------------------------------------------------------
def _fault_counts(fleet: Fleet, facts: Facts,
                  calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    events = [e for e in fleet.events if "skipped" not in e]
    skipped = Counter(e["kind"] for e in fleet.events if "skipped" in e)

    def of(kind: str) -> list[dict[str, Any]]:
        return [e for e in events if e["kind"] == kind]

    if "kill_worker" in fleet.cfg.faults:
        kills = of("kill_worker")
        names = {n for e in kills for n in e["names"]}
        expired = [j for j in facts.jobs.values() if j.state == "expired" and j.worker_id in names]
        out["kill_worker"] = {"injected": len(kills), "skipped": skipped["kill_worker"],
                              "leases expired": len(expired)}
    if "zombie" in fleet.cfg.faults:
        zombies = of("zombie")
        first_call: dict[int, float] = {}
        for c in calls:
            if c.get("job") is not None:
                first_call[c["job"]] = min(first_call.get(c["job"], math.inf), c["ts"])
        after: Counter[str] = Counter()
        for e in zombies:
            # A stopped process sends nothing: what it sent after the stop, it sent awake.
            stopped = e.get("stop_t", e["t"]) + 0.01
            names = set(e["names"])
            for c in calls:
                if c["w"] in names and c["ts"] > stopped and c.get("job") and \
                        first_call.get(c["job"], math.inf) < e["t"] and c["status"] >= 0:
                    after[f"{c['kind']} {c['status']} {c['code'] or c.get('decision')}"] += 1
        out["zombie"] = {"injected": len(zombies), "skipped": skipped["zombie"],
                         "its calls after SIGCONT": dict(after)}
    if "kill_server" in fleet.cfg.faults:
        kills = of("kill_server")
        down = [(e["t"], e.get("up_t", e["t"] + 5) + 1.0) for e in kills]
        lost = sum(1 for c in calls if c["status"] == 0 and any(a <= c["ts"] <= b for a, b in down))
        restarts = [e["restart_s"] for e in kills if "restart_s" in e]
        out["kill_server"] = {
            "injected": len(kills), "restarted": len(restarts),
            "mean restart s": round(sum(restarts) / len(restarts), 1) if restarts else None,
            "calls without answer": lost,
        }
    if "pg_terminate" in fleet.cfg.faults and fleet.cfg.database == "postgres":
        terms = of("pg_terminate")
        windows = [(e["t"], e["t"] + 3.0) for e in terms]
        errors = Counter(c["status"] for c in calls if (c["status"] >= 500 or c["status"] == 0)
                         and any(a <= c["ts"] <= b for a, b in windows))
        out["pg_terminate"] = {"injected": len(terms),
                               "connections terminated": sum(e["terminated"] for e in terms),
                               "5xx or no answer within 3 s": dict(errors)}
    dups = [c for c in calls if c.get("fault") == "dup2" and c["status"] != 0]
    out["duplicate"] = {"sent twice": len(dups),
                        "same answer": sum(1 for c in dups if c["status"] == 200
                                           and c.get("decision") == c.get("first")),
                        "other answer": [
                            f"{c['kind']} {c.get('first')}->{c['status']}/{c.get('decision')}"
                            for c in dups if not (c["status"] == 200
                                                  and c.get("decision") == c.get("first"))][:5]}
    for kind in ("reorder", "late", "drop"):
        sent = [c for c in calls if c.get("fault") == kind]
        out[kind] = {"sent": len(sent), "answers": dict(Counter(
            f"{c['status']}{'/' + c['code'] if c['code'] else ''}" for c in sent))}
    # A retry's report of a step that an earlier job of its trial stored.
    stored = {(r.trial_id, r.step): r.job_id for r in facts.reports}
    replaced = {(r.trial_id, r.step, r.superseded_by_job_id) for r in facts.superseded}
    re_reports = [c for c in calls if c["kind"] == "report" and c.get("fault") == ""
                  and (stored.get((c["trial"], c["step"]), c["job"]) < c["job"]
                       or (c["trial"], c["step"], c["job"]) in replaced)]
    out["retry_re_report"] = {"sent": len(re_reports), "answers": dict(Counter(
        f"{c['status']}{'/' + c['code'] if c['code'] else ''}" for c in re_reports))}
    return out


def _call_counts(calls: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    status: Counter[str] = Counter()
    for c in calls:
        if c["status"] == -2:
            continue  # a completion about to be sent (bench/trainer.py)
        by_kind[c["kind"]].append(c["tr"] - c["ts"])
        status[f"{c['kind']} {c['status']}{' ' + c['code'] if c['code'] else ''}"] += 1
    return {"n": len(calls), "by_status": dict(status),
            "latency_ms": {k: {"n": len(v), "p50": round(1000 * _pct(v, 0.5), 1),
                               "p99": round(1000 * _pct(v, 0.99), 1)}
                           for k, v in by_kind.items()}}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
