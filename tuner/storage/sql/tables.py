"""Rows of the SQL store and their domain values: the tables, the column lists of the hot
reads, and the conversions between stored columns and :mod:`tuner.domain` values (see
:mod:`tuner.storage.sql.store`).

Experiment documents are parsed once per stored JSON text, in a bounded LRU
(:func:`_parse_config`, :data:`CONFIG_CACHE_SIZE`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, Text, cast
from sqlalchemy.exc import IntegrityError

from tuner.domain import (
    Experiment,
    ExperimentState,
    Job,
    JobState,
    RungResult,
    Trial,
    TrialState,
    ValueKind,
)
from tuner.ranking import ranked_loss_of
from tuner.storage.models import (
    LOSS_FINITE,
    LOSS_NON_FINITE,
    RUNG_CLOSED,
    RUNG_OPEN,
    RUNG_PROMOTED,
    Base,
)

#: How many parsed experiment documents :func:`_parse_config` keeps.
CONFIG_CACHE_SIZE = 256

_tables = Base.metadata.tables
EXPERIMENTS: Table = _tables["experiments"]
TRIALS: Table = _tables["trials"]
JOBS: Table = _tables["jobs"]
REPORTS: Table = _tables["reports"]
SUPERSEDED_REPORTS: Table = _tables["superseded_reports"]
RUNG_RESULTS: Table = _tables["rung_results"]
RUNGS: Table = _tables["rungs"]
BRACKETS: Table = _tables["brackets"]
DECISIONS: Table = _tables["decisions"]

# Column lists of the hot reads, in the order the converters below unpack them (the large
# ``trials.output_tail`` and the ``params_key`` are never read here). The experiment's
# document is read as its stored JSON text: the key of the parsed-document cache.
EXP, TRIAL, JOB, REPORT = EXPERIMENTS.c, TRIALS.c, JOBS.c, REPORTS.c
RESULT = RUNG_RESULTS.c
EXPERIMENT_COLUMNS = (
    EXP.id,
    EXP.name,
    cast(EXP.config, Text).label("config_text"),
    EXP.state,
    EXP.scheduler_state,
    EXP.n_trials,
    EXP.resource_used,
    EXP.created_at,
    EXP.ended_at,
)
TRIAL_COLUMNS = (
    TRIAL.id,
    TRIAL.experiment_id,
    TRIAL.number,
    TRIAL.bracket,
    TRIAL.params,
    TRIAL.state,
    TRIAL.rung,
    TRIAL.resource,
    TRIAL.checkpoint,
    TRIAL.checkpoint_step,
    TRIAL.best_loss,
    TRIAL.best_loss_kind,
    TRIAL.last_value,
    TRIAL.last_value_kind,
    TRIAL.retries,
    TRIAL.stop_requested,
    TRIAL.created_at,
    TRIAL.updated_at,
    TRIAL.ended_at,
    TRIAL.ranked_kind,
    TRIAL.ranked_step,
    TRIAL.ranked_loss,
)
JOB_COLUMNS = (
    JOB.id,
    JOB.experiment_id,
    JOB.trial_id,
    JOB.trial_number,
    JOB.bracket,
    JOB.rung,
    JOB.from_resource,
    JOB.to_resource,
    JOB.checkpoint,
    JOB.state,
    JOB.attempt,
    JOB.worker_id,
    JOB.lease_expires_at,
    JOB.created_at,
    JOB.token_hash,
)
REPORT_COLUMNS = (
    REPORT.job_id, REPORT.step, REPORT.value, REPORT.value_kind, REPORT.metrics, REPORT.created_at
)
N_EXPERIMENT_COLUMNS = len(EXPERIMENT_COLUMNS)
N_TRIAL_COLUMNS = len(TRIAL_COLUMNS)
N_JOB_COLUMNS = len(JOB_COLUMNS)


# ---- value conversions ---------------------------------------------------------------------
def split_value(value: float | None) -> tuple[float | None, ValueKind | None]:
    """A float (maybe non-finite) as a storable (finite or NULL, kind) pair."""
    if value is None:
        return None, None
    kind = ValueKind.of(value)
    return (float(value) if kind is ValueKind.FINITE else None), kind


def join_value(value: float | None, kind: ValueKind | str | None) -> float | None:
    """The inverse of :func:`split_value`."""
    if kind is None:
        return value
    if kind == "finite" and value is not None:
        return float(value)
    return ValueKind(kind).to_float(value)


def loss_columns(loss: float) -> tuple[float, int]:
    """``(loss, loss_rank_kind)``: non-finite losses sort last (stored loss 0)."""
    return (float(loss), LOSS_FINITE) if math.isfinite(loss) else (0.0, LOSS_NON_FINITE)


def rung_row(experiment_id: int, result: RungResult) -> dict[str, Any]:
    """The columns of ``result``'s row in ``rung_results``."""
    loss, rank_kind = loss_columns(result.loss)
    value, kind = split_value(result.value)
    status = RUNG_PROMOTED if result.promoted else RUNG_CLOSED if result.closed else RUNG_OPEN
    return {
        "experiment_id": experiment_id,
        "bracket": result.bracket,
        "rung": result.rung,
        "trial_number": result.trial_number,
        "trial_id": result.trial_id,
        "loss": loss,
        "loss_rank_kind": rank_kind,
        "value": value,
        "value_kind": kind,
        "status": status,
        "created_at": result.created_at,
        "resource": result.resource,
    }


def stored_loss(loss: float, rank_kind: int) -> float:
    return math.inf if rank_kind == LOSS_NON_FINITE else loss


def config_to_json(config: Any) -> dict[str, Any]:
    """The stored form of an ``ExperimentConfig`` (or an already-plain mapping)."""
    if hasattr(config, "model_dump"):
        dumped: dict[str, Any] = config.model_dump(mode="json")
        return dumped
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"cannot store a config of type {type(config).__name__}")


def config_from_json(data: dict[str, Any]) -> Any:
    from tuner.config import parse_config

    return parse_config(data)


@functools.lru_cache(maxsize=CONFIG_CACHE_SIZE)
def _parse_config(text: str) -> Any:
    """The ``ExperimentConfig`` stored as ``text`` (a frozen model, so safe to share)."""
    return config_from_json(json.loads(text))


def _config_text(value: Any) -> str:
    """The stored document as text (drivers hand JSON columns back as text or parsed)."""
    return value if isinstance(value, str) else json.dumps(value)


def experiment_of(v: Sequence[Any]) -> Experiment:
    """From the values of :data:`EXPERIMENT_COLUMNS`."""
    return Experiment(
        id=v[0],
        name=v[1],
        config=_parse_config(_config_text(v[2])),
        state=ExperimentState(v[3]),
        scheduler_state=dict(v[4]),
        n_trials=v[5],
        resource_used=v[6],
        created_at=v[7],
        ended_at=v[8],
    )


def trial_of(v: Sequence[Any]) -> Trial:
    """From the values of :data:`TRIAL_COLUMNS`."""
    return Trial(
        id=v[0],
        experiment_id=v[1],
        number=v[2],
        bracket=v[3],
        params=dict(v[4]),
        state=TrialState(v[5]),
        rung=v[6],
        resource=v[7],
        checkpoint=v[8],
        checkpoint_step=v[9],
        best_loss=join_value(v[10], v[11]),
        last_value=join_value(v[12], v[13]),
        retries=v[14],
        stop_requested=bool(v[15]),
        created_at=v[16],
        updated_at=v[17],
        ended_at=v[18],
        ranked_step=v[20],
        ranked_loss=ranked_loss_of(v[19], v[21]),
    )


def job_of(v: Sequence[Any]) -> Job:
    """From the values of :data:`JOB_COLUMNS`."""
    return Job(
        id=v[0],
        experiment_id=v[1],
        trial_id=v[2],
        trial_number=v[3],
        bracket=v[4],
        rung=v[5],
        from_resource=v[6],
        to_resource=v[7],
        checkpoint=v[8],
        state=JobState(v[9]),
        attempt=v[10],
        worker_id=v[11],
        lease_expires_at=v[12],
        created_at=v[13],
        token_hash=v[14],
    )


def trial_from_row(row: Any) -> Trial:
    """From a row with the trial's columns as attributes (ORM row or named Core row)."""
    return trial_of([getattr(row, c.name) for c in TRIAL_COLUMNS])


def job_from_row(row: Any) -> Job:
    """From a row with the job's columns as attributes (ORM row or named Core row)."""
    return job_of([getattr(row, c.name) for c in JOB_COLUMNS])


def report_value(value: float | None, kind: Any) -> float:
    joined = join_value(value, kind)
    return math.nan if joined is None else joined


def rung_result_of(row: Any) -> RungResult:
    return RungResult(
        bracket=row.bracket,
        rung=row.rung,
        trial_number=row.trial_number,
        trial_id=row.trial_id,
        loss=stored_loss(row.loss, row.loss_rank_kind),
        value=report_value(row.value, row.value_kind),
        promoted=row.status == RUNG_PROMOTED,
        closed=row.status == RUNG_CLOSED,
        created_at=row.created_at,
        resource=row.resource,
    )


#: Fields of :class:`tuner.domain.Trial` that ``SqlStore.update_trial`` may set.
_TRIAL_FIELDS = frozenset(
    {
        "state",
        "rung",
        "resource",
        "checkpoint",
        "checkpoint_step",
        "best_loss",
        "last_value",
        "retries",
        "stop_requested",
        "ended_at",
        "bracket",
        "params",
        "created_at",
    }
)


def trial_values(now: float, changes: dict[str, Any]) -> dict[str, Any]:
    """The columns ``SqlStore.update_trial`` sets for ``changes`` (with ``updated_at``)."""
    unknown = set(changes) - _TRIAL_FIELDS
    if unknown:
        raise TypeError(f"update_trial: unknown trial fields {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "best_loss":
            values["best_loss"], values["best_loss_kind"] = split_value(value)
        elif name == "last_value":
            values["last_value"], values["last_value_kind"] = split_value(value)
        elif name == "state":
            values["state"] = TrialState(value)
        else:
            values[name] = value
    values["updated_at"] = now
    return values


def bound(values: dict[str, Any]) -> dict[str, Any]:
    return {"v_" + name: value for name, value in values.items()}


def is_foreign_key_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return bool(sqlstate == "23503")
    return "FOREIGN KEY constraint failed" in str(orig)
