"""PostgreSQL's merged writes: the writes that take two or three statements on SQLite,
as one statement each, with data-modifying CTEs (:class:`tuner.storage.sql.postgres.PostgresStore`
runs them). Each sub-statement sees the snapshot the statement started with; they see each
other's rows only through RETURNING, which is all they use.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    CTE,
    Boolean,
    Exists,
    Float,
    Integer,
    Select,
    String,
    Update,
    bindparam,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql

from tuner.domain import JobState
from tuner.storage.models import LOSS_FINITE
from tuner.storage.sql.ranking import RANK_TRIAL
from tuner.storage.sql.statements import (
    COUNT_LEFT,
    END_JOB,
    EXPERIMENT_ID,
    LEAVE_RUNG,
    LIVE_JOB_STATES,
    TRIAL_ID,
    one_of,
    renew,
    update_trial_statement,
)
from tuner.storage.sql.tables import (
    BRACKETS,
    DECISIONS,
    EXP,
    EXPERIMENT_COLUMNS,
    EXPERIMENTS,
    JOB,
    JOBS,
    REPORT,
    REPORTS,
    RESULT,
    RUNG_RESULTS,
    RUNGS,
    TRIAL,
    TRIAL_COLUMNS,
    TRIALS,
)


@functools.lru_cache(maxsize=128)
def settle_trial_statement(columns: tuple[str, ...], stop: bool) -> Update:
    """PostgreSQL: log a decision about a trial and update the trial, in one statement
    (``WITH logged AS (INSERT INTO decisions ...) UPDATE trials ... RETURNING``).

    With ``stop``, the same statement also ends the job ``s_job`` (DONE, adding ``amount_``
    to the experiment's resource_used) and closes the trial's result at ``rung_`` (the
    compare-and-set of :data:`LEAVE_RUNG` with its counter). After the trial's columns it
    returns the closed result's trial id (NULL when it was not open), then the experiment's
    columns as that update left them (NULL when no job was ended): the experiment's row is
    locked then, and a claim that follows in the transaction need not read it again.
    """
    logged = (
        insert(DECISIONS)
        .values(
            trial_id=TRIAL_ID,
            kind=bindparam("d_kind", type_=DECISIONS.c.kind.type),
            reason=bindparam("d_reason", type_=DECISIONS.c.reason.type),
            step=bindparam("d_step", type_=Integer),
            created_at=bindparam("d_at", type_=Float),
        )
        .cte("logged")
    )
    settled = update_trial_statement(columns).add_cte(logged)
    if not stop:
        return settled
    done = (  # its own bind names: v_state and v_now belong to the trial's update here
        update(JOBS)
        .where(JOB.id == bindparam("s_job", type_=Integer), one_of(JOB.state, LIVE_JOB_STATES))
        .values(state=JobState.DONE, ended_at=bindparam("d_at", type_=Float))
    )
    _, refunded = job_ended(done, returning=True)
    left, _, counted = rung_left()
    closed = select(left.c.trial_id).scalar_subquery().label("closed")
    experiment = [select(c).scalar_subquery().label("e_" + c.name) for c in refunded.c]
    return settled.add_cte(refunded, counted).returning(closed, *experiment)


def job_ended(ending: Update, *, returning: bool = False) -> tuple[CTE, CTE]:
    """``ending`` (an UPDATE that ends one job) as a CTE, and the CTE that then adds
    ``amount_`` to its experiment's ``resource_used`` (with ``returning``, it returns the
    experiment's columns)."""
    ended = ending.returning(JOB.experiment_id).cte("ended")
    used = (
        update(EXPERIMENTS)
        .where(EXP.id == ended.c.experiment_id)
        .values(resource_used=EXP.resource_used + bindparam("amount_", type_=Integer))
    )
    if returning:
        used = used.returning(*EXPERIMENT_COLUMNS)
    return ended, used.cte("refunded")


def rung_left() -> tuple[CTE, Exists, CTE]:
    """The compare-and-set of :data:`LEAVE_RUNG` as a CTE, whether it left, and the CTE
    that then counts it in its rung."""
    left = LEAVE_RUNG.cte("left_rung")
    has_left = exists(select(literal(1)).select_from(left))
    return left, has_left, COUNT_LEFT.where(has_left).cte("counted")



@functools.lru_cache(maxsize=64)
def record_step_statement(columns: tuple[str, ...], lock: bool, plain: bool) -> Select[Any]:
    """A report's three writes in one statement. Renew the lease where the guards hold
    (:func:`tuner.storage.sql.statements.renew` with ``step``, and ``plain`` as given); if
    it was renewed, insert the report (once); if that was new, update the trial (``columns``).
    Answers one row: how many leases were renewed (0 or 1), then the updated trial's columns
    (NULL when nothing was updated); with ``lock``, then the job's experiment, locked (``FOR
    UPDATE``: the round trip of the lock that a judgement takes next)."""
    renewed = (
        renew(step=True, plain=plain)
        .returning(JOB.id, JOB.trial_id, JOB.experiment_id)
        .cte("renewed")
    )
    report = select(
        renewed.c.trial_id,
        renewed.c.id,
        bindparam("r_step", type_=Integer),
        bindparam("r_value", type_=Float),
        bindparam("r_kind", type_=REPORTS.c.value_kind.type),
        bindparam("r_metrics", type_=REPORTS.c.metrics.type),
        bindparam("r_at", type_=Float),
    ).select_from(renewed)
    names = ["trial_id", "job_id", "step", "value", "value_kind", "metrics", "created_at"]
    added = (
        postgresql.insert(REPORTS)
        .from_select(names, report)
        .on_conflict_do_nothing()
        .returning(REPORT.trial_id)
        .cte("added")
    )
    updated = (
        update(TRIALS)
        .where(TRIAL.id == added.c.trial_id)
        .values({name: bindparam("v_" + name) for name in columns})
        .returning(*TRIAL_COLUMNS)
        .cte("updated")
    )
    n_renewed = select(func.count()).select_from(renewed).scalar_subquery()
    one = select(literal(1).label("one")).subquery("one")
    joined = one.outerjoin(updated, true())
    selected: list[Any] = [n_renewed.label("n_renewed"), *updated.c]
    if lock:
        locked = (
            select(*EXPERIMENT_COLUMNS)
            .where(EXP.id.in_(select(renewed.c.experiment_id)))
            .with_for_update(of=EXPERIMENTS)
            .cte("locked")
        )
        joined = joined.outerjoin(locked, true())
        selected += list(locked.c)
    return select(*selected).select_from(joined)


def _judged_rung() -> Select[Any]:
    """The size of rung ``j_rung`` of bracket ``j_bracket`` of experiment ``j_experiment``
    (``n_rung``; NULL: no result there yet) and how many of its finite results are better
    than ``j_loss``, counted up to ``j_limit`` (``n_better``). A statement of its own after
    the one that took the experiment's lock: under READ COMMITTED each statement reads the
    rows as they were when it started, so only a statement that starts once the lock is held
    sees every rung write before it."""
    e_id = bindparam("j_experiment", type_=Integer)
    bracket = bindparam("j_bracket", type_=Integer)
    rung = bindparam("j_rung", type_=Integer)
    n_rung = (
        select(RUNGS.c.n_results)
        .where(RUNGS.c.experiment_id == e_id, RUNGS.c.bracket == bracket, RUNGS.c.rung == rung)
        .scalar_subquery()
        .label("n_rung")
    )
    better = (  # columns of ix_rung_results_order only: an index-only scan where it can
        select(RESULT.trial_number)
        .where(
            RESULT.experiment_id == e_id,
            RESULT.bracket == bracket,
            RESULT.rung == rung,
            RESULT.loss_rank_kind == LOSS_FINITE,
            RESULT.loss < bindparam("j_loss", type_=Float),
        )
        .limit(bindparam("j_limit", type_=Integer))
        .subquery("better")
    )
    n_better = select(func.count()).select_from(better).scalar_subquery().label("n_better")
    return select(n_rung, n_better)


#: A judging report's read of its rung, sent with its writes (``PostgresStore.record_step``).
JUDGED_RUNG = _judged_rung()


class _PostgresWrites:
    """Writes of two or three statements merged into one for PostgreSQL, with
    data-modifying CTEs (SQLite has none, and runs them one by one at no round-trip cost).
    Each sub-statement sees the snapshot the statement started with; they see each other's
    rows only through RETURNING, which is all they use."""

    def __init__(self) -> None:
        e_id, bracket = EXPERIMENT_ID, bindparam("v_bracket", type_=Integer)
        # create_trial: number it, insert it, count it in its bracket -> (number, id or NULL
        # on a conflict); no row: no such experiment, or (with ``unseen_``) an experiment
        # that has a trial with these params already.
        seen = exists().where(
            TRIAL.experiment_id == e_id,
            TRIAL.params_key == bindparam("v_params_key", type_=TRIAL.params_key.type),
        )
        numbered = (
            update(EXPERIMENTS)
            .where(EXP.id == e_id, or_(~bindparam("unseen_", type_=Boolean), ~seen))
            .values(
                n_trials=EXP.n_trials + 1,
                resource_used=EXP.resource_used + bindparam("amount_", type_=Integer),
            )
            .returning((EXP.n_trials - 1).label("number"))
            .cte("numbered")
        )
        now = bindparam("v_now", type_=Float)
        new_trial = select(
            e_id,
            numbered.c.number,
            bracket,
            bindparam("v_params", type_=TRIAL.params.type),
            bindparam("v_params_key", type_=TRIAL.params_key.type),
            bindparam("v_state", type_=TRIAL.state.type),
            literal(-1),
            literal(0),
            literal(0),
            literal(0),
            literal(False),
            now,
            now,
        ).select_from(numbered)
        columns = ["experiment_id", "number", "bracket", "params", "params_key", "state"]
        columns += ["rung", "resource", "checkpoint_step", "retries", "stop_requested"]
        inserted = (
            postgresql.insert(TRIALS)
            .from_select([*columns, "created_at", "updated_at"], new_trial)
            .on_conflict_do_nothing()
            .returning(TRIAL.id)
            .cte("inserted")
        )
        in_bracket = postgresql.insert(BRACKETS).from_select(
            ["experiment_id", "bracket", "n_trials"],
            select(e_id, bracket, literal(1)).select_from(inserted),
        )
        in_bracket = in_bracket.on_conflict_do_update(
            index_elements=["experiment_id", "bracket"],
            set_={"n_trials": BRACKETS.c.n_trials + in_bracket.excluded.n_trials},
        )
        self.create_trial = (
            select(numbered.c.number, inserted.c.id)
            .select_from(numbered.outerjoin(inserted, true()))
            .add_cte(in_bracket.cte("in_bracket"))
        )
        # start_trial: create_trial, then log why it started and insert its leased job ->
        # (number, trial id or NULL on a conflict, job id).
        logged = postgresql.insert(DECISIONS).from_select(
            ["trial_id", "kind", "reason", "step", "created_at"],
            select(
                inserted.c.id,
                bindparam("d_kind", type_=DECISIONS.c.kind.type),
                bindparam("d_reason", type_=DECISIONS.c.reason.type),
                null(),
                now,
            ).select_from(inserted),
        )
        job_columns = ["experiment_id", "trial_id", "trial_number", "bracket", "rung"]
        job_columns += ["from_resource", "to_resource", "state", "attempt", "worker_id"]
        job_columns += ["lease_expires_at", "created_at", "token_hash"]
        job = (
            postgresql.insert(JOBS)
            .from_select(
                job_columns,
                select(
                    e_id,
                    inserted.c.id,
                    numbered.c.number,
                    bracket,
                    bindparam("j_rung", type_=Integer),
                    literal(0),
                    bindparam("j_resource", type_=Integer),
                    literal(JobState.LEASED, type_=JOBS.c.state.type),
                    literal(0),
                    bindparam("j_worker", type_=String),
                    bindparam("j_until", type_=Float),
                    now,
                    bindparam("j_hash", type_=String),
                ).select_from(inserted.join(numbered, true())),
            )
            .returning(JOB.id)
            .cte("job")
        )
        self.start_trial = (
            select(numbered.c.number, inserted.c.id, job.c.id.label("job_id"))
            .select_from(numbered.outerjoin(inserted, true()).outerjoin(job, true()))
            .add_cte(in_bracket.cte("in_bracket"), logged.cte("logged"))
        )

        # add_rung_result: insert it and, if it was new, count it -> (id, n_results); no
        # row: conflict.
        self.add_rung_result = _rung_insert()

        # end_job with a change of the experiment's resource_used -> 1 if the job ended.
        ended, used_now = job_ended(END_JOB)
        self.end_job = select(func.count()).select_from(ended).add_cte(used_now)

        # _leave: open -> promoted or closed, and count it -> trial id; no row: see why.
        left, has_left, counted = rung_left()
        self.leave = select(left.c.trial_id).add_cte(counted)

        # promote: _leave, then the trial runs and the experiment counts its resource ->
        # the trial; no row: see why.
        used = (
            update(EXPERIMENTS)
            .where(EXP.id == e_id, has_left)
            .values(resource_used=EXP.resource_used + bindparam("amount_", type_=Integer))
            .cte("used")
        )
        running = (
            update(TRIALS)
            .where(TRIAL.id == left.c.trial_id)
            .values(state=bindparam("v_state"), updated_at=bindparam("v_now"))
            .returning(*TRIAL_COLUMNS)
            .cte("running")
        )
        self.promote = select(running).add_cte(counted, used)


def _rung_insert() -> Select[Any]:
    """A rung result's insert (``v_*``: its columns) that, if it was new, counts it in its
    rung and, if it counts for the ranking (``k_counts``), makes it the trial's ranked result
    where it replaces the current one (:data:`tuner.storage.sql.ranking.RANK_TRIAL`,
    ``k_*``) -> (id, n_results); no row: nothing inserted (a conflict)."""
    e_id, bracket = EXPERIMENT_ID, bindparam("v_bracket", type_=Integer)
    names = [c.name for c in RUNG_RESULTS.c if c.name != "id"]
    insert_ = postgresql.insert(RUNG_RESULTS).values(
        {name: bindparam("v_" + name) for name in names}
    )
    added = insert_.on_conflict_do_nothing().returning(RUNG_RESULTS.c.id).cte("added")
    in_rung = postgresql.insert(RUNGS).from_select(
        ["experiment_id", "bracket", "rung", "n_results", "n_left", "n_promoted"],
        select(
            e_id,
            bracket,
            bindparam("v_rung", type_=Integer),
            literal(1),
            bindparam("left_", type_=Integer),
            bindparam("promoted_", type_=Integer),
        ).select_from(added),
    )
    in_rung = in_rung.on_conflict_do_update(
        index_elements=["experiment_id", "bracket", "rung"],
        set_={n: RUNGS.c[n] + in_rung.excluded[n] for n in ("n_results", "n_left", "n_promoted")},
    )
    counted = in_rung.returning(RUNGS.c.n_results).cte("in_rung")
    ranked = RANK_TRIAL.where(
        bindparam("k_counts", type_=Boolean), select(added.c.id).exists()
    ).cte("ranked")
    return (
        select(added.c.id, counted.c.n_results)
        .select_from(added.join(counted, true()))
        .add_cte(ranked)
    )


@functools.lru_cache(maxsize=1)
def postgres_writes() -> _PostgresWrites:
    return _PostgresWrites()
