"""An in-memory :class:`tuner.store.Store`: the simulator's store and the reference that the
SQL store is tested against.

Each rung keeps two sorted lists of ``(loss, trial_number)`` keys: all results, and the ones
still open (neither promoted nor closed). ``best_unpromoted`` is then ``open[0]`` and its rank
one bisection into ``all``: O(log n) per rung, like the indexed queries of the SQL store.
There are no transactions: callers run one operation at a time (the simulator is single
threaded); a uniqueness conflict raises before anything is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from tuner.domain import (
    DecisionRecord,
    Experiment,
    ExperimentState,
    Job,
    JobState,
    Report,
    RungEntry,
    RungResult,
    Trial,
    TrialState,
)
from tuner.errors import ConflictError, NotFound
from tuner.protocol import BREAKER_COUNTS, holds_token, lease_is_live, stop_asked
from tuner.ranking import counts, replaces
from tuner.store import (
    JobContext,
    Judging,
    Lease,
    RungStop,
    StepBounds,
    settle_in_steps,
    start_trial_in_steps,
)

_ACTIVE = (TrialState.PENDING, TrialState.RUNNING, TrialState.LOST)
_LIVE_JOB = (JobState.QUEUED, JobState.LEASED)


@dataclass
class _Rung:
    all: SortedList = field(default_factory=SortedList)
    open: SortedList = field(default_factory=SortedList)
    n_promoted: int = 0


@dataclass
class _ExperimentData:
    experiment: Experiment
    trial_ids: list[int] = field(default_factory=list)
    params_keys: set[str] = field(default_factory=set)
    rungs: dict[tuple[int, int], _Rung] = field(default_factory=lambda: defaultdict(_Rung))
    bracket_counts: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    results: dict[tuple[int, int], RungResult] = field(default_factory=dict)  # (number, rung)
    queued: dict[int, None] = field(default_factory=dict)  # insertion-ordered job ids
    n_active: int = 0
    state_since: float = 0.0
    state_reason: str | None = None
    ends: list[tuple[float, JobState]] = field(default_factory=list)  # as the breaker counts


class MemoryStore:
    """Dicts and sorted lists. See :class:`tuner.store.Store` for each method's contract."""

    def __init__(self) -> None:
        self._experiments: dict[int, _ExperimentData] = {}
        self._trials: dict[int, Trial] = {}
        self._jobs: dict[int, Job] = {}
        self._leased: dict[int, None] = {}
        self._live_job: dict[int, int] = {}  # trial id -> its queued or leased job
        self._reports: dict[tuple[int, int], Report] = {}
        #: Reports that a newer job of their trial replaced, with that job's id.
        self.superseded: list[tuple[Report, int]] = []
        self._decisions: list[DecisionRecord] = []
        self._ids = itertools.count(1)

    # ---- experiments -------------------------------------------------------------------
    def create_experiment(self, config: Any, now: float) -> Experiment:
        experiment = Experiment(
            id=next(self._ids),
            name=config.name,
            config=config,
            state=ExperimentState.RUNNING,
            scheduler_state={},
            n_trials=0,
            resource_used=0,
            created_at=now,
        )
        self._experiments[experiment.id] = _ExperimentData(experiment)
        return experiment

    def _data(self, experiment_id: int) -> _ExperimentData:
        try:
            return self._experiments[experiment_id]
        except KeyError:
            raise NotFound(f"experiment {experiment_id} does not exist") from None

    def get_experiment(self, experiment_id: int, *, lock: bool = False) -> Experiment:
        return self._data(experiment_id).experiment

    def _replace_experiment(self, experiment_id: int, **changes: Any) -> None:
        data = self._data(experiment_id)
        data.experiment = dataclasses.replace(data.experiment, **changes)

    def set_experiment_state(
        self, experiment_id: int, state: ExperimentState, now: float, reason: str | None = None
    ) -> None:
        ended = now if state.is_finished() else None
        self._replace_experiment(experiment_id, state=state, ended_at=ended)
        data = self._data(experiment_id)
        data.state_since, data.state_reason = now, reason

    def state_reason(self, experiment_id: int) -> str | None:
        """Why the service gave the experiment its state (tests and summaries)."""
        return self._data(experiment_id).state_reason

    def recent_job_ends(self, experiment_id: int, limit: int) -> list[JobState]:
        data = self._data(experiment_id)
        ends = [state for at, state in reversed(data.ends) if at >= data.state_since]
        return ends[:limit]

    def set_scheduler_state(self, experiment_id: int, state: dict[str, Any]) -> None:
        self._replace_experiment(experiment_id, scheduler_state=dict(state))

    def add_resource_used(self, experiment_id: int, amount: int) -> None:
        used = self._data(experiment_id).experiment.resource_used
        self._replace_experiment(experiment_id, resource_used=used + amount)

    # ---- trials ------------------------------------------------------------------------
    def create_trial(
        self,
        experiment_id: int,
        bracket: int,
        params: dict[str, Any],
        params_key: str,
        now: float,
        *,
        state: TrialState = TrialState.PENDING,
        add_resource_used: int = 0,
    ) -> Trial:
        data = self._data(experiment_id)
        number = data.experiment.n_trials
        trial = Trial.new(next(self._ids), experiment_id, number, bracket, params, state, now)
        self._trials[trial.id] = trial
        data.trial_ids.append(trial.id)
        data.params_keys.add(params_key)
        data.bracket_counts[bracket] += 1
        data.n_active += 1 if state in _ACTIVE else 0
        self._replace_experiment(
            experiment_id,
            n_trials=data.experiment.n_trials + 1,
            resource_used=data.experiment.resource_used + add_resource_used,
        )
        return trial

    def start_trial(
        self,
        experiment_id: int,
        bracket: int,
        params: dict[str, Any],
        params_key: str,
        now: float,
        *,
        rung: int,
        resource: int,
        lease: Lease,
        reason: dict[str, Any],
    ) -> tuple[Trial, Job]:
        return start_trial_in_steps(
            self, experiment_id, bracket, params, params_key, now, rung, resource, lease, reason
        )

    def get_trial(self, trial_id: int) -> Trial:
        try:
            return self._trials[trial_id]
        except KeyError:
            raise NotFound(f"trial {trial_id} does not exist") from None

    def get_trial_by_number(self, experiment_id: int, number: int) -> Trial:
        ids = self._data(experiment_id).trial_ids
        if not 0 <= number < len(ids):
            raise NotFound(f"experiment {experiment_id} has no trial number {number}")
        return self._trials[ids[number]]

    def update_trial(self, trial_id: int, now: float, **changes: Any) -> Trial:
        old = self.get_trial(trial_id)
        new = dataclasses.replace(old, updated_at=now, **changes)
        self._trials[trial_id] = new
        was, is_ = old.state in _ACTIVE, new.state in _ACTIVE
        if was != is_:
            self._data(old.experiment_id).n_active += 1 if is_ else -1
        return new

    def count_active(self, experiment_id: int) -> int:
        return self._data(experiment_id).n_active

    def unfinished_trials(self, experiment_id: int) -> list[Trial]:
        trials = (self._trials[i] for i in self._data(experiment_id).trial_ids)
        return [t for t in trials if not t.state.is_finished()]

    def trials(self, experiment_id: int) -> list[Trial]:
        """Every trial of the experiment, by number (simulator summaries only)."""
        return [self._trials[i] for i in self._data(experiment_id).trial_ids]

    # ---- jobs --------------------------------------------------------------------------
    def create_job(
        self,
        trial: Trial,
        rung: int,
        from_resource: int,
        to_resource: int,
        checkpoint: str | None,
        attempt: int,
        now: float,
        lease: Lease | None = None,
    ) -> Job:
        if trial.id in self._live_job:
            raise ConflictError(f"trial {trial.id} already has a queued or leased job")
        job = Job(
            id=next(self._ids),
            experiment_id=trial.experiment_id,
            trial_id=trial.id,
            trial_number=trial.number,
            bracket=trial.bracket,
            rung=rung,
            from_resource=from_resource,
            to_resource=to_resource,
            checkpoint=checkpoint,
            state=JobState.QUEUED if lease is None else JobState.LEASED,
            attempt=attempt,
            worker_id=None if lease is None else lease.worker_id,
            lease_expires_at=None if lease is None else lease.expires_at,
            created_at=now,
            token_hash=None if lease is None else lease.token_hash,
        )
        self._jobs[job.id] = job
        self._live_job[trial.id] = job.id
        if lease is None:
            self._data(trial.experiment_id).queued[job.id] = None
        else:
            self._leased[job.id] = None
        return job

    def get_job(self, job_id: int) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFound(f"job {job_id} does not exist") from None

    def load_job(self, job_id: int, *, step: int | None = None) -> JobContext:
        job = self.get_job(job_id)
        report = self._reports.get((job.trial_id, job.to_resource if step is None else step))
        trial = self._trials[job.trial_id]
        return JobContext(job, trial, self._data(job.experiment_id).experiment, report)

    def next_queued_job(self, experiment_id: int) -> Job | None:
        queued = self._data(experiment_id).queued
        return self._jobs[next(iter(queued))] if queued else None

    def lease_job(self, job_id: int, worker_id: str, token_hash: str, expires_at: float) -> Job:
        job = self.get_job(job_id)
        if job.state is not JobState.QUEUED:
            raise ConflictError(f"job {job_id} is {job.state}, not queued")
        job = dataclasses.replace(
            job,
            state=JobState.LEASED,
            worker_id=worker_id,
            lease_expires_at=expires_at,
            token_hash=token_hash,
        )
        self._jobs[job_id] = job
        self._leased[job_id] = None
        del self._data(job.experiment_id).queued[job_id]
        return job

    def renew_lease(
        self, job_id: int, token_hash: str, now: float, expires_at: float
    ) -> Job | None:
        job = self.get_job(job_id)
        if not (holds_token(job, token_hash) and lease_is_live(job, now)):
            return None
        job = dataclasses.replace(job, lease_expires_at=expires_at)
        self._jobs[job_id] = job
        return job

    def end_job(
        self, job_id: int, state: JobState, now: float, *, add_resource_used: int = 0
    ) -> bool:
        job = self.get_job(job_id)
        if job.state not in _LIVE_JOB:
            return False
        if add_resource_used:
            self.add_resource_used(job.experiment_id, add_resource_used)
        self._jobs[job_id] = dataclasses.replace(job, state=state)
        if state in BREAKER_COUNTS:
            self._data(job.experiment_id).ends.append((now, state))
        self._leased.pop(job_id, None)
        self._data(job.experiment_id).queued.pop(job_id, None)
        self._live_job.pop(job.trial_id, None)
        return True

    def expire_job(self, job_id: int, now: float) -> bool:
        job = self.get_job(job_id)
        if job.state is not JobState.LEASED or lease_is_live(job, now):
            return False
        return self.end_job(job_id, JobState.EXPIRED, now)

    def expired_jobs(self, now: float, limit: int) -> list[Job]:
        expired = [self._jobs[i] for i in self._leased if not lease_is_live(self._jobs[i], now)]
        expired.sort(key=lambda job: (job.lease_expires_at or 0.0, job.id))
        return expired[:limit]

    def active_job_of_trial(self, trial_id: int) -> Job | None:
        job_id = self._live_job.get(trial_id)
        return self._jobs[job_id] if job_id is not None else None

    # ---- reports -----------------------------------------------------------------------
    def get_report(self, trial_id: int, step: int) -> Report | None:
        return self._reports.get((trial_id, step))

    def supersede_report(self, stored: Report, by_job_id: int, now: float) -> None:
        key = (stored.trial_id, stored.step)
        current = self._reports.get(key)
        if current is not None and current.job_id == stored.job_id:
            self.superseded.append((self._reports.pop(key), by_job_id))

    def add_report(self, report: Report) -> None:
        key = (report.trial_id, report.step)
        if key in self._reports:
            raise ConflictError(
                f"trial {report.trial_id} already has a report at step {report.step}"
            )
        self._reports[key] = report

    def record_step(
        self,
        report: Report,
        bounds: StepBounds,
        expires_at: float,
        *,
        judging: Judging | None = None,  # one writer at a time: nothing to lock
        **changes: Any,
    ) -> Trial | None:
        job = self.get_job(report.job_id)
        if (report.trial_id, report.step) in self._reports:
            return None
        if bounds.floor is not None:
            trial = self.get_trial(report.trial_id)
            experiment = self._data(trial.experiment_id).experiment
            if stop_asked(trial, experiment) or trial.rung < bounds.floor:
                return None
        if self.renew_lease(job.id, bounds.token_hash, bounds.now, expires_at) is None:
            return None
        self.add_report(report)
        return self.update_trial(report.trial_id, bounds.now, **changes)

    def reports_of_trial(self, trial_id: int) -> list[Report]:
        """Every report of a trial by step (tests and summaries only: a scan)."""
        return sorted(
            (r for (t, _), r in self._reports.items() if t == trial_id), key=lambda r: r.step
        )

    # ---- rungs -------------------------------------------------------------------------
    def add_rung_result(self, experiment_id: int, result: RungResult) -> None:
        data = self._data(experiment_id)
        key = (result.trial_number, result.rung)
        if key in data.results:
            raise ConflictError(
                f"trial {result.trial_number} already has a result at rung {result.rung}"
            )
        data.results[key] = result
        rung = data.rungs[(result.bracket, result.rung)]
        sort_key = (result.loss, result.trial_number)
        rung.all.add(sort_key)
        if not (result.promoted or result.closed):
            rung.open.add(sort_key)
        trial = self._trials.get(result.trial_id)  # its ranked result (tuner.ranking)
        if trial is not None and counts(result) and replaces(trial.ranked_step, result.resource):
            self._trials[trial.id] = dataclasses.replace(
                trial, ranked_step=result.resource, ranked_loss=result.loss
            )

    def get_rung_result(self, trial_id: int, rung: int) -> RungResult | None:
        trial = self.get_trial(trial_id)
        return self._data(trial.experiment_id).results.get((trial.number, rung))

    def _leave(
        self, experiment_id: int, bracket: int, rung: int, number: int, promoted: bool
    ) -> int:
        data = self._data(experiment_id)
        result = data.results.get((number, rung))
        if result is None or result.bracket != bracket:
            raise NotFound(f"trial {number} has no result at rung {rung} of bracket {bracket}")
        if result.promoted:
            raise ConflictError(f"trial {number} was already promoted from rung {rung}")
        if result.closed:
            if promoted:
                raise ConflictError(f"trial {number} is closed at rung {rung}")
            return result.trial_id
        data.results[(number, rung)] = dataclasses.replace(
            result, promoted=promoted, closed=not promoted
        )
        state = data.rungs[(bracket, rung)]
        state.open.discard((result.loss, number))
        state.n_promoted += int(promoted)
        return result.trial_id

    def mark_promoted(self, experiment_id: int, bracket: int, rung: int, trial_number: int) -> None:
        self._leave(experiment_id, bracket, rung, trial_number, promoted=True)

    def promote(
        self,
        experiment_id: int,
        bracket: int,
        rung: int,
        trial_number: int,
        now: float,
        *,
        add_resource_used: int = 0,
    ) -> Trial:
        trial_id = self._leave(experiment_id, bracket, rung, trial_number, promoted=True)
        if add_resource_used:
            self.add_resource_used(experiment_id, add_resource_used)
        return self.update_trial(trial_id, now, state=TrialState.RUNNING)

    def close_rung_result(
        self, experiment_id: int, bracket: int, rung: int, trial_number: int
    ) -> None:
        self._leave(experiment_id, bracket, rung, trial_number, promoted=False)

    def rung_results(self, experiment_id: int) -> list[RungResult]:
        """Every rung result (tests and summaries only: a scan)."""
        return list(self._data(experiment_id).results.values())

    def rung_counts(self, experiment_id: int) -> dict[tuple[int, int], tuple[int, int]]:
        """(bracket, rung) -> (results, promoted), for summaries."""
        return {k: (len(v.all), v.n_promoted) for k, v in self._data(experiment_id).rungs.items()}

    # ---- decisions ---------------------------------------------------------------------
    def add_decision(self, record: DecisionRecord) -> None:
        self.get_trial(record.trial_id)  # NotFound for an unknown trial, as in SQL
        self._decisions.append(record)

    def settle_trial(
        self, record: DecisionRecord, now: float, *, stop: RungStop | None = None, **changes: Any
    ) -> Trial:
        return settle_in_steps(self, record, now, stop, **changes)

    def decisions(self) -> list[DecisionRecord]:
        return list(self._decisions)

    # ---- what schedulers and samplers read ----------------------------------------------
    def has_params(self, experiment_id: int, params_key: str) -> bool:
        return params_key in self._data(experiment_id).params_keys

    def results_at_highest_level(
        self, experiment_id: int, min_count: int
    ) -> tuple[int, list[tuple[dict[str, Any], float]]] | None:
        data = self._data(experiment_id)
        per_rung: dict[int, int] = defaultdict(int)
        for (_, rung), state in data.rungs.items():
            per_rung[rung] += len(state.all)
        eligible = [rung for rung, count in per_rung.items() if count >= min_count]
        if not eligible:
            return None
        best = max(eligible)
        rows = [
            (self._trials[data.trial_ids[number]].params, result.loss)
            for (number, rung), result in data.results.items()
            if rung == best
        ]
        return best, rows

    def snapshot(
        self, experiment: Experiment, *, can_start: bool, n_active: int | None = None
    ) -> MemorySnapshot:
        data = self._data(experiment.id)
        active = data.n_active if n_active is None else n_active
        return MemorySnapshot(data, experiment, can_start, active)


class MemorySnapshot:
    """:class:`tuner.schedulers.base.Snapshot` over a :class:`MemoryStore`."""

    def __init__(
        self, data: _ExperimentData, experiment: Experiment, can_start: bool, n_active: int
    ) -> None:
        self._data = data
        self.n_trials = experiment.n_trials
        self.n_active = n_active
        self.can_start = can_start
        self.scheduler_state = experiment.scheduler_state

    def n_in_bracket(self, bracket: int) -> int:
        return self._data.bracket_counts.get(bracket, 0)

    def _rung(self, bracket: int, rung: int) -> _Rung | None:
        return self._data.rungs.get((bracket, rung))

    def rung_size(self, bracket: int, rung: int) -> int:
        state = self._rung(bracket, rung)
        return len(state.all) if state else 0

    def best_unpromoted(self, bracket: int, rung: int, top: int) -> RungEntry | None:
        state = self._rung(bracket, rung)
        if top <= 0 or state is None or not state.open:
            return None
        loss, number = state.open[0]
        if not math.isfinite(loss):
            return None
        rank = state.all.bisect_left((loss, number))
        return RungEntry(loss, number, rank) if rank < top else None

    def count_better(self, bracket: int, rung: int, loss: float, limit: int) -> int:
        state = self._rung(bracket, rung)
        if state is None:
            return 0
        better: int = state.all.bisect_left((loss, -1))
        return min(better, limit)

    def rung_entries(self, bracket: int, rung: int) -> list[RungEntry]:
        state = self._rung(bracket, rung)
        if state is None:
            return []
        return [RungEntry(loss, number, i) for i, (loss, number) in enumerate(state.all)]
