"""The SQL guards of the job protocol's rules, built in one place.

A write that must only land while a rule holds checks it in its own statement, since
another transaction may have changed the rows after the coordinator read them. Each guard
here is the SQL form of one rule of :mod:`tuner.protocol`, over a ``jobs`` row and values
the coordinator worked out (:class:`tuner.store.StepBounds`): SQL compares the numbers it
is given and never works out a rung itself.

| rule (:mod:`tuner.protocol`) | guard | bound values |
| --- | --- | --- |
| ``holds_token`` and ``lease_is_live`` | :func:`lease_is_live` | ``hash_``, ``now_`` |
| leased, not ``lease_is_live`` (the reaper's) | :func:`lease_has_expired` | ``now_`` |
| the trial has no report at the step | :func:`step_is_new` | ``r_step`` |
| not ``stop_asked``; judged at every rung reached | :func:`nothing_to_judge` | ``floor_`` |

Both SQL dialects run them (SQLite in the lease's compare-and-set, PostgreSQL in the one
statement of a report's writes), and the in-memory store checks the same rules in Python.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Float, Integer, String, bindparam, exists, literal

from tuner.domain import ExperimentState, JobState
from tuner.storage.sql.tables import EXP, JOB, REPORT, TRIAL

TOKEN_HASH = bindparam("hash_", type_=String)
NOW = bindparam("now_", type_=Float)
STEP = bindparam("r_step", type_=Integer)
FLOOR = bindparam("floor_", type_=Integer)


def lease_is_live() -> tuple[ColumnElement[bool], ...]:
    """The job's lease token is ``hash_`` and its lease is live at ``now_``."""
    return (
        JOB.state == literal(JobState.LEASED, JOB.state.type),
        JOB.token_hash == TOKEN_HASH,
        JOB.lease_expires_at >= NOW,  # NULL (never leased) compares false
    )


def lease_has_expired() -> tuple[ColumnElement[bool], ...]:
    """The job is leased and its lease ran out before ``now_`` (what the reaper ends): a
    leased job whose lease is not live."""
    return (
        JOB.state == literal(JobState.LEASED, JOB.state.type),
        JOB.lease_expires_at < NOW,
    )


def step_is_new() -> ColumnElement[bool]:
    """The job's trial has no report at ``r_step``."""
    return ~exists().where(REPORT.trial_id == JOB.trial_id, REPORT.step == STEP)


def nothing_to_judge() -> ColumnElement[bool]:
    """A plain write may land: no stop asked of the job's trial, its experiment not
    cancelled, and the trial's rung at least ``floor_``."""
    return exists().where(
        TRIAL.id == JOB.trial_id,
        TRIAL.rung >= FLOOR,
        TRIAL.stop_requested.is_(False),
        EXP.id == JOB.experiment_id,
        EXP.state != literal(ExperimentState.CANCELLED, EXP.state.type),
    )
