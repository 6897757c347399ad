"""The PostgreSQL store: :class:`tuner.storage.sql.store.SqlStore` with its multi-statement
writes merged into one statement each (:mod:`tuner.storage.sql.postgres_writes`).

A new trial with its bracket counter, its decision and its leased job; a report with its
lease renewal and trial update (and, for a judgement, the experiment's lock); a rung result
with its rung counter; a promotion; a decision with its trial update, a stop's job end and
rung close: one round trip each, where SQLite (one writer, no round trips to save) runs
them one by one. What each decides is the base store's: only the number of round trips
differs, and the store contract suite runs against both.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import CursorResult, Select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.base import Executable

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
from tuner.ranking import counts
from tuner.storage.models import RUNG_CLOSED, RUNG_OPEN, RUNG_PROMOTED
from tuner.storage.sql.executor import Executor, Rows
from tuner.storage.sql.postgres_writes import (
    JUDGED_RUNG,
    postgres_writes,
    record_step_statement,
    settle_trial_statement,
)
from tuner.storage.sql.ranking import rank_params
from tuner.storage.sql.snapshot import COUNTERS_AND_QUEUED, counters_of
from tuner.storage.sql.store import SqlStore
from tuner.storage.sql.tables import (
    EXPERIMENT_COLUMNS,
    TRIAL_COLUMNS,
    bound,
    experiment_of,
    is_foreign_key_violation,
    rung_row,
    split_value,
    trial_of,
    trial_values,
)
from tuner.store import Judging, Lease, RungStop, StepBounds


def step_statement(
    report: Report,
    bounds: StepBounds,
    expires_at: float,
    changes: dict[str, Any],
    *,
    judging: Judging | None = None,
) -> tuple[Select[Any], dict[str, Any]]:
    """A report's writes (:meth:`PostgresStore.record_step`) as one statement and its
    parameters. The service's fast path for plain writes runs the same statement in
    autocommit on a connection of its own (``api.writer``)."""
    values = trial_values(bounds.now, changes)
    value, kind = split_value(report.value)
    params = {
        **bound(values),
        "j_id": report.job_id,
        "hash_": bounds.token_hash,
        "now_": bounds.now,
        "v_until": expires_at,
        "r_step": report.step,
        "r_value": value,
        "r_kind": kind,
        "r_metrics": dict(report.metrics),
        "r_at": report.created_at,
        "floor_": bounds.floor,
    }
    plain = bounds.floor is not None
    return record_step_statement(tuple(sorted(values)), judging is not None, plain), params


def step_was_stored(row: Any) -> bool:
    """Whether the row of :func:`step_statement` tells of a report stored."""
    return bool(row.n_renewed) and row.id is not None


class PostgresStore(SqlStore):
    """:class:`SqlStore` on PostgreSQL (see the module docstring)."""

    def __init__(self, executor: Executor) -> None:
        super().__init__(executor)
        # Rung inserts that go with the next statement: (statement, parameters, conflict).
        self._pending: list[tuple[Executable, dict[str, Any], str]] = []

    def _number_and_insert_trial(
        self,
        experiment_id: int,
        bracket: int,
        params: dict[str, Any],
        params_key: str,
        now: float,
        state: TrialState,
        add_resource_used: int,
    ) -> tuple[int, int]:
        bound_values = _new_trial(
            experiment_id, bracket, params, params_key, now, state, add_resource_used
        )
        row = self.execute(postgres_writes().create_trial, {**bound_values, "unseen_": False})
        first = row.first()
        if first is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        if first.id is None:
            raise ConflictError(f"experiment {experiment_id} already has trial {first.number}")
        return int(first.number), int(first.id)

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
        self.cache.counters_changed(experiment_id)
        running = TrialState.RUNNING
        bound_values = {
            **_new_trial(experiment_id, bracket, params, params_key, now, running, resource),
            "d_kind": DecisionKind.CONTINUE,
            "d_reason": dict(reason),
            "j_rung": rung,
            "j_resource": resource,
            "j_worker": lease.worker_id,
            "j_until": lease.expires_at,
            "j_hash": lease.token_hash,
            "unseen_": True,
        }
        row = self.execute(postgres_writes().start_trial, bound_values).first()
        if row is None:  # why not: read it (rare)
            if self.has_params(experiment_id, params_key):
                raise ParamsSeen(f"experiment {experiment_id} has tried these params already")
            raise NotFound(f"experiment {experiment_id} does not exist")
        if row.id is None:
            raise ConflictError(f"experiment {experiment_id} already has trial {row.number}")
        number = int(row.number)
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
        return trial, self.cache.seen(job)

    def end_job(
        self, job_id: int, state: JobState, now: float, *, add_resource_used: int = 0
    ) -> bool:
        if not add_resource_used:
            return super().end_job(job_id, state, now)
        params = {"j_id": job_id, "v_state": state, "v_now": now, "amount_": add_resource_used}
        if self.execute(postgres_writes().end_job, params).scalar():
            return True
        self.get_job(job_id)  # NotFound for an unknown id
        return False

    def record_step(
        self,
        report: Report,
        bounds: StepBounds,
        expires_at: float,
        *,
        judging: Judging | None = None,
        **changes: Any,
    ) -> Trial | None:
        """With ``judging``, the statement also locks and reads the job's experiment, for
        the store's next ``get_experiment(lock=True)``, and a statement of its own in the same
        round trip reads the size of the rung named there with the count it names, for the
        judgement's snapshot and rung insert (exact while this transaction holds the lock)."""
        stmt, params = step_statement(report, bounds, expires_at, changes, judging=judging)
        rung_read = None
        if judging is not None and judging.rung is not None:
            row, rung_read = self._with_rung_read(stmt, params, judging)
        else:
            row = self.execute(stmt, params).one()
        if not row.n_renewed:
            self.get_job(report.job_id)  # NotFound for an unknown id
            return None
        if judging is not None:
            at_experiment = 1 + len(TRIAL_COLUMNS)
            experiment = experiment_of(row[at_experiment : at_experiment + len(EXPERIMENT_COLUMNS)])
            self.cache.locked = experiment
            if rung_read is not None and judging.rung is not None:
                key = (experiment.id, judging.bracket, judging.rung)
                self.cache.rung_sizes[key] = rung_read.n_rung or 0
                self.cache.judged = (key, rung_read.n_rung or 0, report.trial_id)
                if judging.count_up_to > 0 and math.isfinite(judging.loss):
                    self.cache.ranks[key] = (judging.loss, judging.count_up_to, rung_read.n_better)
        if row.id is None:  # the same step, stored meanwhile by another transaction
            raise ConflictError(
                f"trial {report.trial_id} already has a report at step {report.step}"
            )
        return trial_of(row[1:])

    def add_rung_result(self, experiment_id: int, result: RungResult) -> None:
        """Insert it and count it in its rung, in one statement; the rung's size is kept
        for the snapshot (exact while this transaction holds the rung's row). At the rung a
        judging ``record_step`` read (whose size it knows, and where the trial, held by that
        statement, has no result), the insert waits for the next statement and goes in its
        round trip (:meth:`execute`)."""
        rung_key = (experiment_id, result.bracket, result.rung)
        judged, rank = self.cache.judged, self.cache.ranks.get(rung_key)
        mine = judged is not None and judged[0] == rung_key and judged[2] == result.trial_id
        size_before = judged[1] if judged is not None and mine else None
        self.cache.counters_changed(experiment_id)
        row = rung_row(experiment_id, result)
        params = {"v_" + name: value for name, value in row.items()}
        params.update(
            e_id=experiment_id,
            left_=int(row["status"] != RUNG_OPEN),
            promoted_=int(row["status"] == RUNG_PROMOTED),
            k_counts=counts(result),  # and the trial's ranked result (tuner.ranking)
            **rank_params(result),
        )
        conflict = f"trial {result.trial_number} already has a result at rung {result.rung}"
        if size_before is not None:
            self._pending.append((postgres_writes().add_rung_result, params, conflict))
            self.cache.rung_sizes[rung_key] = size_before + 1
            if rank is not None and rank[0] == result.loss:  # the new one is not better
                self.cache.ranks[rung_key] = rank
            return
        try:
            added = self.execute(postgres_writes().add_rung_result, params).first()
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFound(f"trial {result.trial_id} does not exist") from None
            raise
        if added is None:
            raise ConflictError(conflict)
        self.cache.rung_sizes[rung_key] = added.n_results

    def _with_rung_read(
        self, stmt: Executable, params: dict[str, Any], judging: Judging
    ) -> tuple[Any, Any]:
        """A judging report's writes (``stmt``, which takes the experiment's lock), then its
        rung's read (:data:`JUDGED_RUNG`), in one round trip: the row of each."""
        counted = math.isfinite(judging.loss)
        read = (JUDGED_RUNG, {
            "j_experiment": judging.experiment_id, "j_bracket": judging.bracket,
            "j_rung": judging.rung, "j_loss": judging.loss if counted else 0.0,
            "j_limit": judging.count_up_to if counted else 0,
        })
        if self._pending:
            rows, rung_rows = self._after_pending([(stmt, params), read])
        else:
            self.cache.statement_runs()
            both = self.executor.run_pipeline([(stmt, params), read])
            if both is None:  # no plans yet: one after the other
                return self.execute(stmt, params).one(), self.execute(*read).one()
            rows, rung_rows = both
        return rows.one(), rung_rows.one()

    def execute(self, stmt: Executable, params: dict[str, Any]) -> CursorResult[Any] | Rows:
        """Run one statement, after the inserts that wait for it, in the same round trip."""
        if not self._pending:
            return super().execute(stmt, params)
        rows: CursorResult[Any] | Rows = self._after_pending([(stmt, params)])[0]
        return rows

    def flush(self) -> None:
        """Send the inserts that still wait, then what the ORM Session holds."""
        if self._pending:
            self._after_pending([])
        super().flush()

    def _after_pending(self, statements: list[tuple[Executable, dict[str, Any]]]) -> list[Any]:
        """The waiting inserts, then ``statements``, in one round trip (one by one until
        they have plans); ConflictError if an insert found its row there already."""
        pending, self._pending = self._pending, []
        self.cache.statement_runs()
        batch = [(stmt, params) for stmt, params, _ in pending] + statements
        results: list[Any] | None = self.executor.run_pipeline(batch)
        if results is None:
            results = [self.executor.run(stmt, params) for stmt, params in batch]
        for (_, _, conflict), inserted in zip(pending, results, strict=False):
            if inserted.first() is None:
                raise ConflictError(conflict)
        return results[len(pending) :]

    def _compare_and_leave(self, params: dict[str, Any]) -> int | None:
        trial_id = self.execute(postgres_writes().leave, params).scalar()
        return None if trial_id is None else int(trial_id)

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
        self.cache.counters_changed(experiment_id)
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
        row = self.execute(postgres_writes().promote, params).first()
        if row is None:  # not open: _leave says why (NotFound or ConflictError)
            self._leave(experiment_id, bracket, rung, trial_number, promoted=True)
            raise ConflictError(f"trial {trial_number} left rung {rung} concurrently")
        return trial_of(row)

    def settle_trial(
        self, record: DecisionRecord, now: float, *, stop: RungStop | None = None, **changes: Any
    ) -> Trial:
        values = trial_values(now, changes)
        params = {
            **bound(values),
            "t_id": record.trial_id,
            "d_kind": record.kind,
            "d_reason": dict(record.reason),
            "d_step": record.step,
            "d_at": record.created_at,
        }
        if stop is not None:
            self.cache.counters_changed(stop.experiment_id)
            params.update(
                s_job=stop.job_id, amount_=stop.add_resource_used, e_id=stop.experiment_id,
                number_=stop.trial_number, rung_=stop.rung, bracket_=stop.bracket,
                v_status=RUNG_CLOSED, promoted_=0,
            )
        stmt = settle_trial_statement(tuple(sorted(values)), stop is not None)
        try:
            if stop is not None and self.claim_follows:  # the job ends: the claim's read too
                row = self._then_claim_read(stmt, params, stop.experiment_id).first()
            else:
                row = self.execute(stmt, params).first()
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFound(f"trial {record.trial_id} does not exist") from None
            raise
        if row is None:  # pragma: no cover - the decision's foreign key fails first
            raise NotFound(f"trial {record.trial_id} does not exist")
        if stop is None:
            return trial_of(row)
        if row.closed is None:  # not open: NotFound, ConflictError or
            self._leave(  # closed already (a no-op, like close_rung_result)
                stop.experiment_id, stop.bracket, stop.rung, stop.trial_number, promoted=False
            )
        elif row.e_id is not None:  # the experiment's row, as this statement left it, locked
            self.cache.locked = experiment_of(row[-len(EXPERIMENT_COLUMNS) :])
        return trial_of(row[: len(TRIAL_COLUMNS)])

    def _then_claim_read(
        self, stmt: Executable, params: dict[str, Any], experiment_id: int
    ) -> Any:
        """``stmt``, then (in the same round trip, once both statements have plans) the
        read that the claim which follows starts with (:meth:`next_queued_job`)."""
        claim_read = (COUNTERS_AND_QUEUED[True], {"e_id": experiment_id})
        if self._pending:
            rows, read = self._after_pending([(stmt, params), claim_read])
        else:
            self.cache.statement_runs()
            pair = self.executor.run_pipeline([(stmt, params), claim_read])
            if pair is None:
                return self.execute(stmt, params)
            rows, read = pair
        counters, queued = counters_of(read)
        self.cache.claim_read = (experiment_id, counters, queued)
        return rows


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
