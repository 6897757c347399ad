"""An experiment's trials as one table: JSON for programs and the dashboard's trials table,
CSV for spreadsheets (``GET /api/v1/experiments/{id}/export``).

One row per trial, in ranking order (the highest rung reached, then the value there, then
the trial number: ``ranking_order``, the order of ``list_trials(order_by="best")``). A
row's trial fields come from :func:`api.shapes.trial_fields` (what ``trial_out`` returns),
so a trial reads the same here as in the trials list; ``metrics`` holds the extra metrics
of the trial's latest report (the one with the highest step). One statement reads it all
through indexes; no model object is built per trial (10,000 trials: see
docs/PERFORMANCE.md).
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, func, select
from sqlalchemy.orm import Session

from api import shapes, views
from tuner.domain import Trial
from tuner.storage.sql.ranking import ranking_order
from tuner.storage.sql.tables import REPORTS, TRIAL, TRIAL_COLUMNS, TRIALS, trial_of

_NON_FINITE = re.compile(r"NaN|Infinity")

#: The trial fields of a row, in CSV column order (then ``param.*``, then ``metric.*``).
FIELDS = (
    "number", "state", "bracket", "rung", "resource", "ranked_step", "ranked_value",
    "best_value", "last_value", "retries", "checkpoint", "checkpoint_step", "created_at",
    "ended_at",
)
#: A JSON row's keys from the trial's fields (then "metrics").
ROW_KEYS = (*FIELDS, "params")


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC, as the API's JSON writes it (``...Z``)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _decode_all(texts: list[str | None]) -> list[Any]:
    """JSON texts decoded in one call (a call per text costs more than the parsing).
    Python's JSON writes non-finite floats as NaN/Infinity, which it reads back."""
    return list(json.loads("[" + ",".join(t if t else "null" for t in texts) + "]"))


def _rows(
    session: Session, experiment_id: int, limit: int | None, offset: int
) -> list[tuple[Trial, Any]]:
    """Every trial in ranking order with the metrics of its latest report, in one statement:
    the trials through the ranking's index, each one's latest report through the
    ``(trial_id, step)`` index. Parameters and metrics come as JSON text, decoded at once."""
    rc = REPORTS.c
    latest = (
        select(cast(rc.metrics, Text)).where(rc.trial_id == TRIAL.id)
        .order_by(rc.step.desc()).limit(1).correlate(TRIALS).scalar_subquery()
    )
    params_at = TRIAL_COLUMNS.index(TRIAL.params)
    columns: list[ColumnElement[Any]] = [*TRIAL_COLUMNS]
    columns[params_at] = cast(TRIAL.params, Text)
    found = session.connection().execute(
        select(*columns, latest).where(TRIAL.experiment_id == experiment_id)
        .order_by(*ranking_order()).limit(limit).offset(offset)
    ).all()
    params = _decode_all([row[params_at] for row in found])
    texts = [row[-1] for row in found]
    metrics = _decode_all(texts)
    out = []
    for row, p, m, text in zip(found, params, metrics, texts, strict=True):
        values = list(row[:-1])
        values[params_at] = p
        if text and _NON_FINITE.search(text):  # NaN, Infinity: null in JSON
            m = shapes.clean(m)
        out.append((trial_of(values), m or {}))
    return out


def export(
    session: Session, experiment_id: int, limit: int | None = None, offset: int = 0
) -> dict[str, Any]:
    """The JSON form: ``experiment_id``, ``metric``, ``mode``, ``params`` and ``metrics``
    (column names), ``total`` (trials in all), ``offset`` and ``trials`` (rows, best
    first: all of them, or ``limit`` from position ``offset`` of the ranking). Raises
    NotFound for an unknown experiment."""
    document = views.document(session, experiment_id)
    total = session.scalar(
        select(func.count()).select_from(TRIALS).where(TRIAL.experiment_id == experiment_id)
    )
    sign = shapes.sign_of(document)
    params = [name for name in document.get("space", {})]
    names: dict[str, None] = {}
    rows = []
    known = set(params)
    for trial, metrics in _rows(session, experiment_id, limit, offset):
        fields = shapes.trial_fields(trial, sign)
        fields["created_at"] = _iso(fields["created_at"])
        fields["ended_at"] = _iso(fields["ended_at"])
        row: dict[str, Any] = {name: fields[name] for name in ROW_KEYS}
        row["metrics"] = metrics
        names.update(dict.fromkeys(metrics))
        if not known.issuperset(trial.params):  # a parameter the document does not name
            params.extend(name for name in trial.params if name not in known)
            known.update(trial.params)
        rows.append(row)
    return {
        "experiment_id": experiment_id, "metric": document.get("metric"),
        "mode": document.get("mode", "min"), "params": params, "metrics": sorted(names),
        "total": int(total or 0), "offset": offset, "trials": rows,
    }


#: A text cell starting with one of these is a formula to a spreadsheet (OWASP's "CSV
#: injection"): such a cell gets a leading ``'``, which spreadsheets show as text.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A CSV cell: numbers as Python writes them, text defused (:data:`FORMULA_START`);
    parameters, checkpoints and text metrics are typed by users and workers."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return "'" + text if text.startswith(FORMULA_START) else text


def to_json(table: dict[str, Any]) -> bytes:
    """The JSON form's bytes, as compact as the API's other answers (non-finite numbers
    never get here: they are null)."""
    return json.dumps(table, ensure_ascii=False, allow_nan=False, check_circular=False,
                      separators=(",", ":")).encode()


def to_csv(table: dict[str, Any]) -> str:
    """The CSV form of :func:`export`'s answer: a header row, then one row per trial."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*FIELDS, *(f"param.{p}" for p in table["params"]),
                     *(f"metric.{m}" for m in table["metrics"])])
    params, metrics = table["params"], table["metrics"]
    for row in table["trials"]:
        values = [_cell(row[name]) for name in FIELDS]
        p, m = row["params"], row["metrics"]
        values.extend(_cell(p.get(name)) for name in params)
        values.extend(_cell(m.get(name)) for name in metrics)
        writer.writerow(values)
    return buffer.getvalue()
