"""An experiment's trials as one table: JSON for programs and the dashboard's trials table,
CSV for spreadsheets (``GET /api/v1/experiments/{id}/export``).

One row per trial, in ranking order (``queries.list_trials`` with ``order_by="best"``: the
highest rung reached, then the value there, then the trial number). A row's trial fields
come from :func:`api.shapes.trial_out`, so a trial reads the same here as in the trials
list; ``metrics`` holds the extra metrics of the trial's latest report (the one with the
highest step), read for every trial in one query through the ``(trial_id, step)`` index.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api import shapes, views
from tuner.storage import queries
from tuner.storage.models import ReportRow, TrialRow

#: The trial fields of a row, in CSV column order (then ``param.*``, then ``metric.*``).
FIELDS = (
    "number", "state", "bracket", "rung", "resource", "ranked_step", "ranked_value",
    "best_value", "last_value", "retries", "checkpoint", "checkpoint_step", "created_at",
    "ended_at",
)


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC, as the API's JSON writes it (``...Z``)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def last_metrics(session: Session, experiment_id: int) -> dict[int, dict[str, Any]]:
    """trial id -> the extra metrics of its latest report (trials without one are absent).

    One statement: for each of the experiment's trials, the report with the highest step,
    found by one descent of the ``(trial_id, step)`` unique index."""
    tc, rc = TrialRow.__table__.c, ReportRow.__table__.c
    latest = (
        select(rc.metrics).where(rc.trial_id == tc.id).order_by(rc.step.desc()).limit(1)
        .correlate(TrialRow.__table__).scalar_subquery()
    )
    out: dict[int, dict[str, Any]] = {}
    for trial_id, metrics in session.connection().execute(
        select(tc.id, latest).where(tc.experiment_id == experiment_id)
    ):
        if metrics:
            loaded = json.loads(metrics) if isinstance(metrics, str) else metrics
            if loaded:
                out[trial_id] = shapes.clean(dict(loaded))
    return out


def _ranked_trials(session: Session, experiment_id: int) -> list[Any]:
    """Every trial, best first (pages of ``queries.MAX_PAGE``)."""
    trials: list[Any] = []
    while True:
        page = queries.list_trials(
            session, experiment_id, None, "best", queries.MAX_PAGE, len(trials)
        )
        trials.extend(page.items)
        if not page.items or len(trials) >= page.total:
            return trials


def export(session: Session, experiment_id: int) -> dict[str, Any]:
    """The JSON form: ``experiment_id``, ``metric``, ``mode``, ``params`` and ``metrics``
    (column names) and ``trials`` (rows, best first). Raises NotFound for an unknown
    experiment."""
    document = views.document(session, experiment_id)
    sign = shapes.sign_of(document)
    metrics = last_metrics(session, experiment_id)
    params = [name for name in document.get("space", {})]
    names: dict[str, None] = {}
    rows = []
    for trial in _ranked_trials(session, experiment_id):
        out = shapes.trial_out(trial, sign)
        row: dict[str, Any] = {name: getattr(out, name, None) for name in FIELDS}
        row["created_at"], row["ended_at"] = _iso(out.created_at), _iso(out.ended_at)
        row["params"] = out.params
        row["metrics"] = metrics.get(trial.id, {})
        for name in row["metrics"]:
            names.setdefault(name)
        for name in out.params:
            if name not in params:
                params.append(name)
        rows.append(row)
    return {
        "experiment_id": experiment_id, "metric": document.get("metric"),
        "mode": document.get("mode", "min"), "params": params, "metrics": sorted(names),
        "trials": rows,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str | int):
        return str(value)
    return json.dumps(value, sort_keys=True)


def to_csv(table: dict[str, Any]) -> str:
    """The CSV form of :func:`export`'s answer: a header row, then one row per trial."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*FIELDS, *(f"param.{p}" for p in table["params"]),
                     *(f"metric.{m}" for m in table["metrics"])])
    for row in table["trials"]:
        writer.writerow([
            *(_cell(row[name]) for name in FIELDS),
            *(_cell(row["params"].get(p)) for p in table["params"]),
            *(_cell(row["metrics"].get(m)) for m in table["metrics"]),
        ])
    return buffer.getvalue()
