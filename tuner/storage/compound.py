"""PostgreSQL's merged writes for :class:`tuner.storage.sql.SqlStore`.

Each function runs one statement of :func:`tuner.storage.statements._postgres_writes` (or of a
statement builder cached there), with data-modifying CTEs, and turns its row into domain
values; :class:`~tuner.storage.sql.SqlStore` calls them when its session is on PostgreSQL and
runs the same writes one by one on SQLite (no round trips to save there). Like
:mod:`tuner.storage.snapshot`, they use the store's own helpers and caches.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select
from sqlalchemy.exc import IntegrityError

from tuner.domain import (
    DecisionKind,
    DecisionRecord,
    Job,
    JobState,
    Report,
    RungResult,
    Trial,
    TrialState,
)
from tuner.errors import ConflictError, NotFound, ParamsSeen
from tuner.storage.models import RUNG_CLOSED, RUNG_PROMOTED
from tuner.storage.rows import (
    EXPERIMENT_COLUMNS,
    TRIAL_COLUMNS,
    _bound,
    _experiment_of,
    _is_foreign_key_violation,
    _trial_of,
    _trial_values,
    rung_row,
    split_value,
)
from tuner.storage.statements import _postgres_writes, _record_step, _settle_trial
from tuner.store import Lease, RungAhead, RungStop

if TYPE_CHECKING:
    from tuner.storage.sql import SqlStore


def _new_trial(
    experiment_id: int,
    bracket: int,
    params: dict[str, Any],
    params_key: str,
    now: float,
    state: TrialState,
    add_resource_used: int,
) -> dict[str, Any]:
    """The bound values of a new trial's numbering and insert (``create_trial`` and
    ``start_trial`` statements)."""
    return {
        "e_id": experiment_id,
        "amount_": add_resource_used,
        "v_bracket": bracket,
        "v_params": params,
        "v_params_key": params_key,
        "v_state": state,
        "v_now": now,
    }


def create_trial(
    store: SqlStore,
    experiment_id: int,
    bracket: int,
    params: dict[str, Any],
    params_key: str,
    now: float,
    state: TrialState,
    add_resource_used: int,
) -> tuple[int, int]:
    bound = _new_trial(
        experiment_id, bracket, params, params_key, now, state, add_resource_used
    )
    row = store._run(_postgres_writes().create_trial, {**bound, "unseen_": False}).first()
    if row is None:
        raise NotFound(f"experiment {experiment_id} does not exist")
    if row.id is None:
        raise ConflictError(f"experiment {experiment_id} already has trial {row.number}")
    return int(row.number), int(row.id)


def start_trial(
    store: SqlStore,
    experiment_id: int,
    bracket: int,
    params: dict[str, Any],
    params_key: str,
    now: float,
    rung: int,
    resource: int,
    lease: Lease,
    reason: dict[str, Any],
) -> tuple[Trial, Job]:
    store._counters_changed(experiment_id)
    bound = {
        **_new_trial(
            experiment_id, bracket, params, params_key, now, TrialState.RUNNING, resource
        ),
        "d_kind": DecisionKind.CONTINUE,
        "d_reason": dict(reason),
        "j_rung": rung,
        "j_resource": resource,
        "j_worker": lease.worker_id,
        "j_until": lease.expires_at,
        "j_hash": lease.token_hash,
        "unseen_": True,
    }
    row = store._run(_postgres_writes().start_trial, bound).first()
    if row is None:  # why not: read it (rare)
        if store.has_params(experiment_id, params_key):
            raise ParamsSeen(f"experiment {experiment_id} has tried these params already")
        raise NotFound(f"experiment {experiment_id} does not exist")
    if row.id is None:
        raise ConflictError(f"experiment {experiment_id} already has trial {row.number}")
    number, running = int(row.number), TrialState.RUNNING
    trial = Trial.new(int(row.id), experiment_id, number, bracket, params, running, now)
    job = Job(
        id=int(row.job_id),
        experiment_id=experiment_id,
        trial_id=trial.id,
        trial_number=trial.number,
        bracket=bracket,
        rung=rung,
        from_resource=0,
        to_resource=resource,
        checkpoint=None,
        state=JobState.LEASED,
        attempt=0,
        worker_id=lease.worker_id,
        lease_expires_at=lease.expires_at,
        created_at=now,
        token_hash=lease.token_hash,
    )
    return trial, store._seen(job)


def record_step(
    store: SqlStore,
    report: Report,
    token_hash: str,
    now: float,
    expires_at: float,
    changes: dict[str, Any],
    *,
    lock: bool = False,
    ahead: RungAhead | None = None,
) -> Trial | None:
    """With ``lock``, the statement also locks and reads the job's experiment, for the
    store's next ``get_experiment(lock=True)``. With ``ahead`` (and ``lock``), the rung
    result it names follows in the same round trip, guarded (``add_rung_result_ahead``):
    the store's next ``add_rung_result`` of it is answered from that (:func:`took_ahead`)."""
    values = _trial_values(now, changes)
    params = _step_params(report, token_hash, now, expires_at, values)
    stmt = _record_step(tuple(sorted(values)), lock)
    guarded = None if ahead is None else _ahead_params(ahead, report)
    pair = None
    if guarded is not None:
        pair = store._run_pair((stmt, params), (_postgres_writes().add_rung_result_ahead, guarded))
    if pair is None:
        row = store._run(stmt, params).one()
    else:
        row = pair[0].one()
        added = pair[1].first()
        if ahead is not None and added is not None:
            store._ahead[(ahead.result.trial_id, ahead.result.rung)] = (ahead, added)
    if not row.n_renewed:
        store.get_job(report.job_id)  # NotFound for an unknown id
        return None
    if lock:
        store._locked = _experiment_of(row[1 + len(TRIAL_COLUMNS):])
    if row.id is None:
        raise ConflictError(
            f"trial {report.trial_id} already has a report at step {report.step}"
        )
    return _trial_of(row[1:])


def _ahead_params(ahead: RungAhead, report: Report) -> dict[str, Any]:
    """The bound values of ``add_rung_result_ahead``: :func:`add_rung_result`'s, and the
    guard's (the report's step and job, the bracket's lowest rung)."""
    row = rung_row(ahead.experiment_id, ahead.result)
    params = _rung_params(ahead.experiment_id, row, left=0, promoted=0, rank_eta=ahead.rank_eta)
    params.update(g_step=report.step, g_job=report.job_id, g_bottom=ahead.bottom)
    return params


def took_ahead(
    store: SqlStore,
    experiment_id: int,
    result: RungResult,
    rank_eta: int | None,
    taken: tuple[RungAhead, Any],
) -> None:
    """``add_rung_result`` of a result that :func:`record_step` wrote ahead: what its insert
    counted, as :func:`add_rung_result` keeps it. The result must be the one written."""
    ahead, added = taken
    if (ahead.experiment_id, ahead.result, ahead.rank_eta) != (experiment_id, result, rank_eta):
        raise RuntimeError(
            f"rung result written ahead {ahead} differs from the one added: {result}"
        )
    _keep_counts(store, experiment_id, result, rank_eta, added)


def quiet_step(
    report: Report,
    token_hash: str,
    now: float,
    expires_at: float,
    floor: int,
    changes: dict[str, Any],
) -> tuple[Select[Any], dict[str, Any]]:
    """:func:`record_step` where the report needs no judgement nor error, as a statement
    and its parameters (``_record_step(quiet=True)``; ``api.quiet_reports`` runs it in
    autocommit on a driver's connection of its own). Its row's ``id`` is not NULL when the
    report was stored; when it is NULL nothing was written (but for a lease renewed by a
    report that lost the race to store the same step)."""
    values = _trial_values(now, changes)
    params = _step_params(report, token_hash, now, expires_at, values)
    params["floor_"] = floor
    return _record_step(tuple(sorted(values)), quiet=True), params


def _step_params(
    report: Report, token_hash: str, now: float, expires_at: float, values: dict[str, Any]
) -> dict[str, Any]:
    """The bound values of :func:`_record_step` (the trial's columns ``values``)."""
    value, kind = split_value(report.value)
    return {
        **_bound(values),
        "j_id": report.job_id,
        "hash_": token_hash,
        "now_": now,
        "v_until": expires_at,
        "r_step": report.step,
        "r_value": value,
        "r_kind": kind,
        "r_metrics": dict(report.metrics),
        "r_at": report.created_at,
    }


def add_rung_result(
    store: SqlStore,
    experiment_id: int,
    result: RungResult,
    row: dict[str, Any],
    *,
    left: int,
    promoted: int,
    rank_eta: int | None,
) -> None:
    """Insert ``row`` (the rung result's columns) and count it in its rung; with
    ``rank_eta``, count the results better than a finite one too (the store keeps both)."""
    conflict = f"trial {result.trial_number} already has a result at rung {result.rung}"
    missing = f"trial {result.trial_id} does not exist"
    if not math.isfinite(result.loss):
        rank_eta = None  # the stopping test ranks finite results only
    params = _rung_params(experiment_id, row, left=left, promoted=promoted, rank_eta=rank_eta)
    ranked = rank_eta is not None
    writes = _postgres_writes()
    stmt = writes.add_rung_result_ranked if ranked else writes.add_rung_result
    try:
        added = store._run(stmt, params).first()
    except IntegrityError as exc:
        if _is_foreign_key_violation(exc):
            raise NotFound(missing) from None
        raise
    if added is None:
        raise ConflictError(conflict)
    _keep_counts(store, experiment_id, result, rank_eta, added)


def _rung_params(
    experiment_id: int, row: dict[str, Any], *, left: int, promoted: int, rank_eta: int | None
) -> dict[str, Any]:
    """The bound values of a rung insert (``statements._rung_insert``): the row's columns,
    the rung's counters, and ``eta_`` for the ranked insert."""
    params = {"v_" + name: value for name, value in row.items()}
    params.update(e_id=experiment_id, left_=left, promoted_=promoted)
    if rank_eta is not None:
        params["eta_"] = rank_eta
    return params


def _keep_counts(
    store: SqlStore, experiment_id: int, result: RungResult, rank_eta: int | None, added: Any
) -> None:
    """What a rung insert counted (its row ``added``), kept for the snapshot: the rung's size
    and, for a ranked insert, the stopping test's rank."""
    rung_key = (experiment_id, result.bracket, result.rung)
    store._rung_sizes[rung_key] = added.n_results
    if rank_eta is not None:
        cap = max(added.n_results // rank_eta, 1)
        store._ranks[rung_key] = (result.loss, cap, added.n_better)


def promote(
    store: SqlStore,
    experiment_id: int,
    bracket: int,
    rung: int,
    trial_number: int,
    now: float,
    add_resource_used: int,
) -> Trial:
    params = {
        "e_id": experiment_id,
        "number_": trial_number,
        "rung_": rung,
        "bracket_": bracket,
        "v_status": RUNG_PROMOTED,
        "promoted_": 1,
        "amount_": add_resource_used,
        "v_state": TrialState.RUNNING,
        "v_now": now,
    }
    row = store._run(_postgres_writes().promote, params).first()
    if row is None:  # not open: _leave says why (NotFound or ConflictError)
        store._leave(experiment_id, bracket, rung, trial_number, promoted=True)
        raise ConflictError(f"trial {trial_number} left rung {rung} concurrently")
    return _trial_of(row)


def settle_trial(
    store: SqlStore,
    record: DecisionRecord,
    now: float,
    stop: RungStop | None,
    changes: dict[str, Any],
) -> Trial:
    values = _trial_values(now, changes)
    params = {
        **_bound(values),
        "t_id": record.trial_id,
        "d_kind": record.kind,
        "d_reason": dict(record.reason),
        "d_step": record.step,
        "d_at": record.created_at,
    }
    if stop is not None:
        store._counters_changed(stop.experiment_id)
        params.update(
            s_job=stop.job_id, amount_=stop.add_resource_used, e_id=stop.experiment_id,
            number_=stop.trial_number, rung_=stop.rung, bracket_=stop.bracket,
            v_status=RUNG_CLOSED, promoted_=0,
        )
    stmt = _settle_trial(tuple(sorted(values)), stop is not None)
    try:
        if stop is not None and store.claim_follows:  # the job ends: the claim's read with it
            row = store._run_then_claim_read(stmt, params, stop.experiment_id).first()
        else:
            row = store._run(stmt, params).first()
    except IntegrityError as exc:
        if _is_foreign_key_violation(exc):
            raise NotFound(f"trial {record.trial_id} does not exist") from None
        raise
    if row is None:  # pragma: no cover - the decision's foreign key fails first
        raise NotFound(f"trial {record.trial_id} does not exist")
    if stop is None:
        return _trial_of(row)
    if row.closed is None:  # not open: NotFound, ConflictError or
        store._leave(  # closed already (a no-op, like close_rung_result)
            stop.experiment_id, stop.bracket, stop.rung, stop.trial_number, promoted=False
        )
    elif row.e_id is not None:  # the experiment's row, as this statement left it, locked
        store._locked = _experiment_of(row[-len(EXPERIMENT_COLUMNS):])
    return _trial_of(row[: len(TRIAL_COLUMNS)])
