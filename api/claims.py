"""Claims: hand out a job now, or long-poll up to ``wait_s`` for one.

A claim is one transaction under the experiment's lock (the coordinator takes it), run by
:meth:`api.writer.Writer.write_async`. A claim that finds nothing sleeps, in a worker thread,
on :class:`api.deps.Wakeups`, which the writes that may make work
appear (completion, failure, reaping, resume, creation, stops) notify after they commit,
so a waiting worker wakes within milliseconds in this process; work that another replica
made available is found by re-checking every ``claim_recheck_s``.

``POST /claims`` (any experiment) visits the running experiments round-robin from a moving
start; on PostgreSQL it first skips experiments whose row another claim holds
(``FOR UPDATE SKIP LOCKED``), then waits for those it skipped.
"""

from __future__ import annotations

import logging
import time

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import Runtime
from tuner import coordinator
from tuner.coordinator import Assignment, ClaimResult, ExperimentOver, NothingNow
from tuner.domain import ExperimentState, Reason
from tuner.storage import queries
from tuner.storage.models import ExperimentRow
from tuner.storage.sql import SqlStore

ANONYMOUS = "anonymous"

log = logging.getLogger(__name__)


async def _claim_in(
    runtime: Runtime, experiment_id: int, worker_id: str | None, *, skip_locked: bool = False
) -> ClaimResult | None:
    """One transaction; None when ``skip_locked`` and another claim holds the experiment."""

    def run(store: SqlStore) -> ClaimResult | None:
        if skip_locked and store.is_postgres:
            free = store.session.scalar(
                select(ExperimentRow.id)
                .where(ExperimentRow.id == experiment_id)
                .with_for_update(skip_locked=True)
            )
            if free is None:
                return None
        return claim_now(runtime, store, experiment_id, worker_id)

    result = await runtime.writer.write_async("claim", run, experiment_id)
    if result is not None:
        counted(runtime, experiment_id, result)
    return result


def claim_now(
    runtime: Runtime, store: SqlStore, experiment_id: int, worker_id: str | None
) -> ClaimResult:
    """Claim in the caller's transaction, without waiting (a claim, or the next job that a
    report or completion asks for); then :func:`counted` once it committed."""
    now = runtime.now()
    result = coordinator.claim(store, experiment_id, worker_id or ANONYMOUS, now)
    if isinstance(result, Assignment):  # for its reports (api.writer.KnownJobs)
        runtime.writer.known_jobs.remember(result.job, store.known_experiment(experiment_id))
    if (
        worker_id is not None
        and isinstance(result, Assignment)
        and runtime.should_touch_worker(worker_id, now)
    ):
        # After the experiment's lock, like the reaper's and heartbeats' worker updates:
        # one lock order, no deadlock between them.
        queries.touch_worker(store.session, worker_id, now)
    return result


def counted(runtime: Runtime, experiment_id: int, result: ClaimResult) -> None:
    """After a claim committed: count it; wake the waiting claims when the experiment is over."""
    runtime.metrics.count_claim(result)
    if isinstance(result, ExperimentOver):
        runtime.wakeups.notify(experiment_id)


def _running_ids(runtime: Runtime) -> list[int]:
    def run(session: Session) -> list[int]:
        return list(
            session.scalars(
                select(ExperimentRow.id)
                .where(ExperimentRow.state == ExperimentState.RUNNING)
                .order_by(ExperimentRow.id)
            )
        )

    return runtime.read("running_experiments", run)


async def _claim_any(runtime: Runtime, worker_id: str | None) -> ClaimResult:
    ids = await run_in_threadpool(_running_ids, runtime)
    if ids:
        runtime.round_robin = (runtime.round_robin + 1) % len(ids)
        ids = ids[runtime.round_robin:] + ids[: runtime.round_robin]
    skipped: list[int] = []
    failed: list[Exception] = []
    for experiment_id in ids:
        result = await _isolated(runtime, experiment_id, worker_id, failed, skip_locked=True)
        if result is None:
            skipped.append(experiment_id)
        elif isinstance(result, Assignment):
            return result
    for experiment_id in skipped:
        result = await _isolated(runtime, experiment_id, worker_id, failed)
        if isinstance(result, Assignment):
            return result
    if failed and len(failed) == len(ids):
        raise failed[0]  # every experiment failed alike: the service's trouble, not theirs
    return NothingNow(Reason("no_work", note="no running experiment has work now"))


_LOG_EVERY_S = 60.0
_last_logged: dict[int, float] = {}


async def _isolated(
    runtime: Runtime,
    experiment_id: int,
    worker_id: str | None,
    failed: list[Exception],
    *,
    skip_locked: bool = False,
) -> ClaimResult | None:
    """:func:`_claim_in`, with one experiment's failure kept from the other experiments'
    claims: logged, remembered in ``failed``, and answered as "nothing here"."""
    try:
        return await _claim_in(runtime, experiment_id, worker_id, skip_locked=skip_locked)
    except Exception as exc:  # noqa: BLE001 - isolation is the point
        now = time.monotonic()
        if now - _last_logged.get(experiment_id, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            _last_logged[experiment_id] = now  # once a minute: every worker's claim meets it
            log.warning(
                "event=claim_failed experiment_id=%d error=%s detail=%r",
                experiment_id, type(exc).__name__, str(exc)[:300],
            )
        failed.append(exc)
        return NothingNow(Reason("claim_failed", note=str(exc)[:200]))


async def claim(
    runtime: Runtime, experiment_id: int | None, worker_id: str | None, wait_s: float
) -> ClaimResult:
    """Claim from one experiment (or any, when ``experiment_id`` is None), waiting up to
    ``wait_s`` seconds while the answer is "nothing now"."""
    deadline = time.monotonic() + wait_s
    while True:
        seen = runtime.wakeups.seen(experiment_id)
        if experiment_id is None:
            result = await _claim_any(runtime, worker_id)
        else:
            result = await _claim_in(runtime, experiment_id, worker_id) or NothingNow(
                Reason("busy", note="another claim holds the experiment")
            )
        remaining = deadline - time.monotonic()
        if not isinstance(result, NothingNow) or remaining <= 0:
            return result
        await run_in_threadpool(
            runtime.wakeups.wait,
            experiment_id,
            seen,
            min(remaining, runtime.settings.claim_recheck_s),
        )
