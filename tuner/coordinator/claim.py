"""Handing out work: one transaction under the experiment's lock.

Everything after the lock is taken is on the clock of every other claim and completion of the
experiment, so the writes are few: a new trial is inserted RUNNING with its job already
leased (and its resource counted in the same counter update that numbers it); a promotion
marks the rung result, sets the trial RUNNING and counts its resource (one statement on
PostgreSQL), then inserts its leased job.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

from tuner.coordinator.outcomes import Context, finish_experiment, record
from tuner.domain import DecisionKind, ExperimentState, Job, Reason, Trial, TrialState
from tuner.errors import ParamsSeen, SpaceExhausted
from tuner.protocol import hash_token
from tuner.rng import derive_rng
from tuner.samplers import build_sampler
from tuner.schedulers.base import Finished, Promote, StartTrial, Wait
from tuner.space import params_key
from tuner.store import Lease, Store


@dataclass(frozen=True)
class Assignment:
    """A leased job. ``lease_token`` is shown once, to the worker that claimed it;
    ``metric`` and ``mode``: what its experiment optimises (the script is told)."""

    job: Job
    trial: Trial
    lease_token: str
    metric: str
    mode: Literal["min", "max"]


@dataclass(frozen=True)
class NothingNow:
    """No job now (rungs wait for stragglers, budget or concurrency limit, paused)."""

    reason: Reason


@dataclass(frozen=True)
class ExperimentOver:
    state: ExperimentState


ClaimResult = Assignment | NothingNow | ExperimentOver


class _History:
    """The sampler's view of the experiment (:class:`tuner.samplers.SamplerHistory`).

    ``trusting``: answer "not seen" without asking the store. The claim's first sample
    trusts, because :meth:`tuner.store.Store.start_trial` refuses seen params anyway
    (:class:`ParamsSeen`) and asking costs a round trip under the experiment's lock, for
    what in a space with a continuous parameter is practically never true; after a refusal
    the claim samples again, asking.
    """

    def __init__(self, store: Store, ctx: Context, *, trusting: bool) -> None:
        self._store, self._ctx, self._trusting = store, ctx, trusting
        self.n_trials = ctx.experiment.n_trials

    def has_params(self, key: str) -> bool:
        return not self._trusting and self._store.has_params(self._ctx.experiment.id, key)

    def results(self, min_count: int) -> tuple[int, list[tuple[dict[str, Any], float]]] | None:
        found = self._store.results_at_highest_level(self._ctx.experiment.id, min_count)
        if found is None:
            return None
        rung, rows = found
        return self._ctx.scheduler.levels[rung], rows


def budget_allows_jobs(ctx: Context, now: float) -> bool:
    """``time_limit_s`` and ``max_resource_units`` stop every new job, promotions included."""
    budget = ctx.config.budget
    if budget.time_limit_s is not None and now - ctx.experiment.created_at >= budget.time_limit_s:
        return False
    return not (
        budget.max_resource_units is not None
        and ctx.experiment.resource_used >= budget.max_resource_units
    )


def _new_lease(ctx: Context, worker_id: str, now: float) -> tuple[Lease, str]:
    """A lease for ``worker_id`` and the token that proves it (shown once)."""
    token = secrets.token_urlsafe(24)
    return Lease(worker_id, hash_token(token), ctx.config.lease_until(now)), token


def _lease(store: Store, ctx: Context, job: Job, worker_id: str, now: float) -> Assignment:
    lease, token = _new_lease(ctx, worker_id, now)
    job = store.lease_job(job.id, lease.worker_id, lease.token_hash, lease.expires_at)
    trial = store.update_trial(job.trial_id, now, state=TrialState.RUNNING)
    return Assignment(job, trial, token, ctx.config.metric, ctx.config.mode)


def claim(store: Store, experiment_id: int, worker_id: str, now: float) -> ClaimResult:
    """Choose what ``worker_id`` trains next and lease it.

    Order: a re-queued job (lost or failed earlier) first; then, within the concurrency and
    budget limits, what the scheduler answers (a promotion or a new trial).

    Args:
        store: the transaction's store.
        experiment_id: which experiment.
        worker_id: recorded on the job.
        now: seconds since the epoch.

    Returns:
        An :class:`Assignment`, :class:`NothingNow` or :class:`ExperimentOver`.

    Raises:
        NotFound: no such experiment.
    """
    ctx = Context.load(store, experiment_id, lock=True)
    experiment = ctx.experiment
    if experiment.state.is_finished():
        return ExperimentOver(experiment.state)
    if experiment.state is ExperimentState.PAUSED:
        return NothingNow(Reason("paused", note="the experiment is paused"))
    queued = store.next_queued_job(experiment.id)
    if queued is not None:
        return _lease(store, ctx, queued, worker_id, now)
    limit = ctx.config.budget.max_concurrent
    n_active = None  # counted only when needed (the snapshot counts it if asked)
    if limit is not None:
        n_active = store.count_active(experiment.id)
        if n_active >= limit:
            return NothingNow(Reason("max_concurrent", n=n_active, threshold=limit))
    if not budget_allows_jobs(ctx, now):
        if n_active is None:
            n_active = store.count_active(experiment.id)
        if n_active:
            return NothingNow(Reason("budget", note="budget spent; waiting for active trials"))
        finish_experiment(store, ctx, now, Reason("budget", note="budget spent"))
        return ExperimentOver(ExperimentState.COMPLETED)
    max_trials = ctx.config.budget.max_trials
    can_start = max_trials is None or experiment.n_trials < max_trials
    trusting = True  # see _History
    while True:
        snap = store.snapshot(experiment, can_start=can_start, n_active=n_active)
        action = ctx.scheduler.next_action(snap)
        if action.scheduler_state is not None:
            store.set_scheduler_state(experiment.id, action.scheduler_state)
        match action:
            case Promote():
                trial = store.promote(
                    experiment.id,
                    action.bracket,
                    action.from_rung,
                    action.trial_number,
                    now,
                    add_resource_used=action.resource - action.from_resource,
                )
                record(store, trial, DecisionKind.CONTINUE, action.reason, now)
                lease, token = _new_lease(ctx, worker_id, now)
                job = store.create_job(
                    trial,
                    action.rung,
                    action.from_resource,
                    action.resource,
                    trial.checkpoint,
                    0,
                    now,
                    lease,
                )
                return Assignment(job, trial, token, ctx.config.metric, ctx.config.mode)
            case StartTrial():
                try:
                    params = _sample(store, ctx, trusting=trusting)
                except SpaceExhausted:
                    can_start = False  # the space has no unseen point: a spent budget
                    continue
                lease, token = _new_lease(ctx, worker_id, now)
                try:
                    trial, job = store.start_trial(
                        experiment.id,
                        action.bracket,
                        params,
                        params_key(params),
                        now,
                        rung=action.rung,
                        resource=action.resource,
                        lease=lease,
                        reason=action.reason.as_dict(),
                    )
                except ParamsSeen:
                    trusting = False  # nothing was written: sample again, asking
                    continue
                return Assignment(job, trial, token, ctx.config.metric, ctx.config.mode)
            case Wait():
                return NothingNow(action.reason)
            case Finished():
                finish_experiment(store, ctx, now, action.reason)
                return ExperimentOver(ExperimentState.COMPLETED)


def _sample(store: Store, ctx: Context, *, trusting: bool) -> dict[str, Any]:
    sampler = build_sampler(ctx.config.sampler, ctx.config.seed)
    rng = derive_rng(ctx.config.seed, "sample", ctx.experiment.n_trials)
    return sampler.sample(ctx.config.space, _History(store, ctx, trusting=trusting), rng)
