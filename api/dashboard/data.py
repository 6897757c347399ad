"""The dashboard's own reads: what the charts and tables need that ``/api/v1`` does not serve.

Every function takes the caller's read-only :class:`~sqlalchemy.orm.Session` (one per
request, opened by ``Runtime.read``), returns plain JSON-ready dicts, and reads through
indexes: the rung table costs one counter read per rung plus ``floor(n/eta)`` index steps,
the curves read the reports of at most ``max_trials`` trials, the parallel coordinates and
the importances read one row per trial (capped at :data:`MAX_POINTS`).

Non-finite numbers never reach JSON: they become ``null`` (and a ``*_kind`` names them where
the difference matters).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestRegressor  # type: ignore[import-untyped]
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api import shapes
from tuner.config import ExperimentConfig, build_scheduler, parse_config
from tuner.errors import NotFound
from tuner.space.keys import scalar_key
from tuner.space.params import Categorical, Fixed, Float, Int
from tuner.storage import queries
from tuner.storage.models import (
    ExperimentRow,
    JobRow,
    ReportRow,
    RungResultRow,
    RungRow,
    TrialRow,
    WorkerRow,
)
from tuner.storage.sql.ranking import ranking_order
from tuner.storage.sql.tables import trial_from_row

#: Most trials drawn in the parallel coordinates (an even spread over trial ids beyond).
MAX_PARCOORDS = 1000
#: Most trials fed to the importance model (an even spread beyond).
MAX_FIT = 2000
#: Fewest results at one rung before importances are computed.
MIN_IMPORTANCE_TRIALS = 8
#: Trees of the importance forest.
N_TREES = 64
IMPORTANCE_METHOD = (
    "Impurity-based importances (mean decrease in impurity, normalised to sum to 1) of a "
    f"scikit-learn RandomForestRegressor ({N_TREES} trees, random_state=0) fit on the "
    "parameters encoded to [0, 1] (categoricals as their choice index, log-scale parameters "
    "on a log axis, inactive ones as -1) against the value at the highest rung that has at "
    f"least {MIN_IMPORTANCE_TRIALS} results, so that every trial is compared at the same "
    "resource."
)


def finite(value: float | None) -> float | None:
    """``value`` if it is a finite number, else None (JSON has no NaN or infinity)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


# ---- experiment documents (immutable: parsed once) ------------------------------------------
_configs: OrderedDict[int, ExperimentConfig] = OrderedDict()
_configs_lock = threading.Lock()


def experiment_config(session: Session, experiment_id: int) -> ExperimentConfig:
    """The experiment's validated document (cached: a document never changes)."""
    with _configs_lock:
        cached = _configs.get(experiment_id)
    if cached is not None:
        return cached
    raw = session.scalar(select(ExperimentRow.config).where(ExperimentRow.id == experiment_id))
    if raw is None:
        raise NotFound(f"experiment {experiment_id} does not exist")
    config = parse_config(dict(raw))
    with _configs_lock:
        _configs[experiment_id] = config
        while len(_configs) > 256:
            _configs.popitem(last=False)
    return config


def version(session: Session, experiment_id: int) -> str:
    """A cheap fingerprint of what the charts show (four index reads): the newest report
    anywhere, the experiment's most recent trial change, its trial count and its number of
    rung results. Equal fingerprints mean equal chart data."""
    newest_report = session.scalar(select(func.max(ReportRow.id)))
    changed, n_trials = session.execute(
        select(func.max(TrialRow.updated_at), func.count())
        .where(TrialRow.experiment_id == experiment_id)
    ).one()
    n_results = session.scalar(
        select(func.coalesce(func.sum(RungRow.n_results), 0))
        .where(RungRow.experiment_id == experiment_id)
    )
    return f"{experiment_id}.{newest_report}.{changed!r}.{n_trials}.{n_results}"


def _levels(config: ExperimentConfig) -> tuple[int, ...]:
    """Resource of each rung index (as the scheduler sees them)."""
    return tuple(build_scheduler(config).levels)


# ---- learning curves ------------------------------------------------------------------------
def _curve_trial_ids(
    session: Session, experiment_id: int, max_trials: int
) -> tuple[list[int], int]:
    """The best third of ``max_trials`` by the ranking (tuner.ranking), plus the rest spread
    evenly over trial numbers (every k-th) so that stopped and failed trials show too.
    Returns (ids, total)."""
    tc = TrialRow.__table__.c
    conn = session.connection()
    mine = tc.experiment_id == experiment_id
    total = int(conn.execute(
        select(func.count()).select_from(TrialRow.__table__).where(mine)
    ).scalar_one())
    if total <= max_trials:
        return [r[0] for r in conn.execute(select(tc.id).where(mine))], total
    n_best = max_trials // 3
    chosen = {r[0] for r in conn.execute(
        select(tc.id).where(mine, tc.ranked_step.is_not(None))
        .order_by(*ranking_order()).limit(n_best)
    )}
    stride = max(1, -(-total // (max_trials - len(chosen))))
    for (trial_id,) in conn.execute(
        select(tc.id).where(mine, tc.number % stride == 0).order_by(tc.number)
        .limit(max_trials - len(chosen))
    ):
        chosen.add(trial_id)
    return sorted(chosen), total


def curves(
    session: Session, experiment_id: int, max_trials: int = 200, max_points: int = 40
) -> dict[str, Any]:
    """Learning curves as Plotly-ready groups: one ``x``/``y`` pair per trial state, each
    trial's points followed by a ``null`` so that one trace draws many lines. The best
    trial is drawn again on its own (``best``). Large experiments are downsampled: at most
    ``max_trials`` trials, ``max_points`` points each (every k-th report plus the last)."""
    config = experiment_config(session, experiment_id)
    ids, total = _curve_trial_ids(session, experiment_id, max_trials)
    best = queries._best_trial(session, experiment_id)
    if best is not None and best.trial_id not in ids:
        ids.append(best.trial_id)
    found = queries.learning_curves(
        session, experiment_id, max_points=max_points, trial_ids=ids
    ) if ids else []
    groups: dict[str, dict[str, Any]] = {}
    best_curve = None
    n_points = 0
    for c in found:
        if not c.points:
            continue
        xs = [step for step, _ in c.points]
        ys = [finite(v) for _, v in c.points]
        n_points += len(xs)
        g = groups.setdefault(
            c.state.value,
            {"state": c.state.value, "n": 0, "x": [], "y": [], "number": [], "trial_id": []},
        )
        g["n"] += 1
        g["x"].extend([*xs, None])
        g["y"].extend([*ys, None])
        g["number"].extend([c.number] * len(xs) + [None])
        g["trial_id"].extend([c.trial_id] * len(xs) + [None])
        if best is not None and c.trial_id == best.trial_id:
            best_curve = {"trial_id": c.trial_id, "number": c.number, "x": xs, "y": ys}
    return {
        "experiment_id": experiment_id, "metric": config.metric, "mode": config.mode,
        "levels": list(_levels(config)), "total_trials": total,
        "shown_trials": sum(g["n"] for g in groups.values()), "n_points": n_points,
        "max_points": max_points, "groups": sorted(groups.values(), key=lambda g: g["state"]),
        "best": best_curve,
    }


# ---- best so far ----------------------------------------------------------------------------
def best_so_far(session: Session, experiment_id: int) -> dict[str, Any]:
    """The best value at a rung so far, over wall time and over resource spent: one point
    per improvement (the rung results read in the order they were recorded, through the
    experiment's index). Resource spent counts the training each result stands for (its
    rung's resource minus the trial's previous rung's): the work up to rungs, not the work
    of trials stopped between two of them."""
    config = experiment_config(session, experiment_id)
    levels = _levels(config)
    rr = RungResultRow.__table__.c
    created = session.scalar(
        select(ExperimentRow.created_at).where(ExperimentRow.id == experiment_id))
    reached: dict[int, int] = {}
    spent = 0
    best: float | None = None
    out: dict[str, list[Any]] = {k: [] for k in ("time", "resource", "value", "number", "rung")}
    n = 0
    last_time = created
    for trial_id, number, rung, loss, kind, at in session.connection().execute(
        select(rr.trial_id, rr.trial_number, rr.rung, rr.loss, rr.value_kind, rr.created_at)
        .where(rr.experiment_id == experiment_id).order_by(rr.created_at, rr.id)
    ):
        n += 1
        level = levels[min(rung, len(levels) - 1)]
        spent += max(0, level - reached.get(trial_id, 0))
        reached[trial_id] = level
        last_time = at
        if kind != "finite" or loss is None or (best is not None and loss >= best):
            continue
        best = float(loss)
        for key, value in (("time", at), ("resource", spent), ("value", config.sign * best),
                           ("number", number), ("rung", rung)):
            out[key].append(value)
    return {
        "experiment_id": experiment_id, "metric": config.metric, "mode": config.mode,
        "started_at": created, "last_time": last_time, "resource_spent": spent,
        "n_results": n, **out,
    }


def trial_address(session: Session, trial_id: int) -> tuple[int, int] | None:
    """(experiment id, number) of a trial id, or None when there is no such trial."""
    found = session.execute(
        select(TrialRow.experiment_id, TrialRow.number).where(TrialRow.id == trial_id)
    ).first()
    return None if found is None else (int(found[0]), int(found[1]))


# ---- comparing a few trials ---------------------------------------------------------------
#: Most trials compared side by side.
MAX_COMPARE = 8


def compare(
    session: Session, experiment_id: int, numbers: list[int], max_points: int = 200
) -> dict[str, Any]:
    """A few trials by number, side by side: their fields (as the trials list gives them),
    their learning curves (downsampled to about ``max_points`` points) and rung values."""
    config = experiment_config(session, experiment_id)
    wanted = list(dict.fromkeys(numbers))[:MAX_COMPARE]
    rows = {row.number: row for row in session.scalars(
        select(TrialRow).where(TrialRow.experiment_id == experiment_id,
                               TrialRow.number.in_(wanted)))}
    for number in wanted:
        if number not in rows:
            raise NotFound(f"experiment {experiment_id} has no trial {number}")
    trials = {number: trial_from_row(row) for number, row in rows.items()}
    curves = {c.trial_id: c for c in queries.learning_curves(
        session, experiment_id, max_points=max_points,
        trial_ids=[t.id for t in trials.values()])}
    rr = RungResultRow.__table__.c
    rung_values: dict[int, dict[str, float | None]] = {t.id: {} for t in trials.values()}
    for trial_id, rung, value, kind in session.connection().execute(
        select(rr.trial_id, rr.rung, rr.value, rr.value_kind)
        .where(rr.trial_id.in_(list(rung_values))).order_by(rr.rung)
    ):
        rung_values[trial_id][str(rung)] = finite(value) if kind == "finite" else None
    items = []
    for number in wanted:
        trial = trials[number]
        fields = shapes.trial_out(trial, config.sign).model_dump(mode="json")
        curve = curves.get(trial.id)
        points = curve.points if curve is not None else []
        fields.update(x=[step for step, _ in points], y=[finite(v) for _, v in points],
                      rung_values=rung_values[trial.id])
        items.append(fields)
    return {"experiment_id": experiment_id, "metric": config.metric, "mode": config.mode,
            "levels": list(_levels(config)), "params": list(config.space.root),
            "trials": items}


# ---- values at each trial's highest rung ---------------------------------------------------
def _top_values(session: Session, experiment_id: int) -> dict[int, tuple[int, float | None]]:
    """trial id -> (its highest rung, the value there; None when not finite)."""
    rr = RungResultRow.__table__.c
    out: dict[int, tuple[int, float | None]] = {}
    for trial_id, rung, value, kind in session.connection().execute(
        select(rr.trial_id, rr.rung, rr.value, rr.value_kind)
        .where(rr.experiment_id == experiment_id)
    ):
        if trial_id not in out or rung > out[trial_id][0]:
            out[trial_id] = (rung, finite(value) if kind == "finite" else None)
    return out


def _params_of(session: Session, trial_ids: list[int]) -> dict[int, tuple[int, dict[str, Any]]]:
    tc = TrialRow.__table__.c
    out: dict[int, tuple[int, dict[str, Any]]] = {}
    for chunk in range(0, len(trial_ids), 900):
        for trial_id, number, params in session.connection().execute(
            select(tc.id, tc.number, tc.params).where(tc.id.in_(trial_ids[chunk:chunk + 900]))
        ):
            out[trial_id] = (number, dict(params))
    return out


def _spread(items: list[int], limit: int) -> list[int]:
    if len(items) <= limit:
        return items
    stride = len(items) / limit
    return [items[int(i * stride)] for i in range(limit)]


def _log_ticks(low: float, high: float) -> list[float]:
    """Round values between ``low`` and ``high`` for a log axis: the powers of ten, and 2x
    and 5x them too when fewer than three powers of ten fall in the range."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    decades = [10.0 ** k for k in range(first, last + 1)]

    def within(steps: tuple[float, ...]) -> list[float]:
        return [d * m for d in decades for m in steps
                if low <= d * m * (1 + 1e-9) and d * m <= high * (1 + 1e-9)]

    ticks = within((1.0,))
    if len(ticks) < 3:
        ticks = within((1.0, 2.0, 5.0))
    return ticks if len(ticks) >= 2 else [low, high]


def _tick_text(value: float, integer: bool) -> str:
    return str(round(value)) if integer else f"{value:g}"


def parcoords(session: Session, experiment_id: int) -> dict[str, Any]:
    """Parameters against the value at each trial's highest rung, as Plotly ``parcoords``
    dimensions. Categoricals are mapped to their choice index with the choices as tick
    labels; log-scale numbers are drawn on a log10 axis whose ticks name round values
    of the parameter (0.001, not -3); inactive values are left out of
    their axis' range (drawn at -1 on categoricals, at the axis minimum otherwise)."""
    config = experiment_config(session, experiment_id)
    top = _top_values(session, experiment_id)
    ids = _spread(sorted(t for t, (_, v) in top.items() if v is not None), MAX_PARCOORDS)
    params = _params_of(session, ids)
    ids = [t for t in ids if t in params]
    levels = _levels(config)
    dims: list[dict[str, Any]] = []
    for name, param in config.space.root.items():
        if isinstance(param, Fixed):
            continue
        raw = [params[t][1].get(name) for t in ids]
        if isinstance(param, Categorical):
            labels = [str(c) for c in param.choices]
            index = {scalar_key(c): float(i) for i, c in enumerate(param.choices)}
            values: list[float | None] = [
                -1.0 if v is None else index.get(scalar_key(v), -1.0) for v in raw
            ]
            has_missing = any(v == -1.0 for v in values)
            tickvals = ([-1.0] if has_missing else []) + [float(i) for i in range(len(labels))]
            ticktext = (["(inactive)"] if has_missing else []) + labels
            dims.append({
                "label": name, "values": values, "tickvals": tickvals, "ticktext": ticktext,
                "range": [tickvals[0], tickvals[-1]] if len(tickvals) > 1 else [-1.0, 1.0],
            })
            continue
        assert isinstance(param, Float | Int)
        log = param.log
        low = math.log10(param.low) if log else float(param.low)
        high = math.log10(param.high) if log else float(param.high)
        nums: list[float | None] = []
        for v in raw:
            if isinstance(v, int | float) and not isinstance(v, bool) and (not log or v > 0):
                nums.append(math.log10(v) if log else float(v))
            else:
                nums.append(low)
        dim: dict[str, Any] = {"label": f"{name} (log)" if log else name, "values": nums,
                               "range": [low, high]}
        if log:  # the axis is log10 of the value: its ticks name the values themselves
            ticks = _log_ticks(float(param.low), float(param.high))
            dim["tickvals"] = [math.log10(v) for v in ticks]
            dim["ticktext"] = [_tick_text(v, isinstance(param, Int)) for v in ticks]
        dims.append(dim)
    rung_vals = [float(top[t][0]) for t in ids]
    dims.append({
        "label": "rung reached", "values": rung_vals,
        "tickvals": [float(i) for i in range(len(levels))],
        "ticktext": [f"{i} (r={lv})" for i, lv in enumerate(levels)],
        "range": [0.0, float(max(len(levels) - 1, 1))],
    })
    color = [top[t][1] for t in ids]
    dims.append({"label": config.metric, "values": color})
    return {
        "experiment_id": experiment_id, "metric": config.metric, "mode": config.mode,
        "n": len(ids), "total": len(top), "dimensions": dims, "color": color,
        "numbers": [params[t][0] for t in ids],
    }


# ---- parameter importance -------------------------------------------------------------------
class _ImportanceCache:
    """A few answers keyed by (experiment, number of rung results): a new result anywhere in
    the experiment changes the key, so nothing stale is served."""

    def __init__(self, size: int = 32) -> None:
        self._items: OrderedDict[tuple[int, int], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size

    def get(self, key: tuple[int, int]) -> dict[str, Any] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[int, int], value: dict[str, Any]) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


importance_cache = _ImportanceCache()


def importance(session: Session, experiment_id: int) -> dict[str, Any]:
    """Parameter importances (see :data:`IMPORTANCE_METHOD`), cached per (experiment, number
    of rung results). ``items`` is empty and ``reason`` says why when there is too little."""
    config = experiment_config(session, experiment_id)
    n_results = session.scalar(
        select(func.coalesce(func.sum(RungRow.n_results), 0))
        .where(RungRow.experiment_id == experiment_id)
    ) or 0
    key = (experiment_id, int(n_results))
    cached = importance_cache.get(key)
    if cached is not None:
        return {**cached, "cached": True}
    answer = _compute_importance(session, experiment_id, config)
    answer["n_rung_results"] = int(n_results)
    importance_cache.put(key, answer)
    return {**answer, "cached": False}


def _compute_importance(
    session: Session, experiment_id: int, config: ExperimentConfig
) -> dict[str, Any]:
    levels = _levels(config)
    base: dict[str, Any] = {
        "experiment_id": experiment_id, "method": IMPORTANCE_METHOD, "items": [],
        "rung": None, "resource": None, "n_trials": 0, "reason": None,
    }
    counts = session.execute(
        select(RungResultRow.rung, func.count())
        .where(RungResultRow.experiment_id == experiment_id,
               RungResultRow.value_kind == "finite")
        .group_by(RungResultRow.rung)
    ).all()
    enough = [rung for rung, n in counts if n >= MIN_IMPORTANCE_TRIALS]
    tunable = [(name, p) for name, p in config.space.root.items() if not isinstance(p, Fixed)]
    if not tunable:
        return {**base, "reason": "the search space has no tuned parameter"}
    if not enough:
        most = max((n for _, n in counts), default=0)
        return {**base, "reason": (
            f"needs at least {MIN_IMPORTANCE_TRIALS} finished results at one rung; the "
            f"fullest rung has {most}"
        )}
    rung = max(enough)
    rows = session.execute(
        select(RungResultRow.trial_id, RungResultRow.value)
        .where(RungResultRow.experiment_id == experiment_id, RungResultRow.rung == rung,
               RungResultRow.value_kind == "finite")
        .order_by(RungResultRow.trial_id)
    ).all()
    values = {trial_id: float(v) for trial_id, v in rows if v is not None and math.isfinite(v)}
    ids = _spread(sorted(values), MAX_FIT)
    params = _params_of(session, ids)
    ids = [t for t in ids if t in params]
    x = np.full((len(ids), len(tunable)), -1.0)
    space = config.space
    names = space.names
    columns = [names.index(name) for name, _ in tunable]
    for i, t in enumerate(ids):
        try:
            encoded = space.encode(params[t][1])
        except ValueError:
            continue
        row = encoded[columns]
        x[i] = np.where(np.isnan(row), -1.0, row)
    y = np.array([values[t] for t in ids])
    base.update(rung=rung, resource=levels[rung] if rung < len(levels) else None,
                n_trials=len(ids))
    if len(ids) < MIN_IMPORTANCE_TRIALS:
        return {**base, "reason": f"needs at least {MIN_IMPORTANCE_TRIALS} trials"}
    if float(np.ptp(y)) == 0.0:
        return {**base, "reason": "every trial has the same value at this rung"}
    model = RandomForestRegressor(
        n_estimators=N_TREES, random_state=0, min_samples_leaf=2, max_features=1.0, n_jobs=1,
    )
    model.fit(x, y)
    scores = [float(s) for s in model.feature_importances_]
    ranked = sorted(zip(scores, (name for name, _ in tunable), strict=True), key=lambda p: -p[0])
    return {**base, "items": [{"param": name, "importance": score} for score, name in ranked]}


# ---- workers --------------------------------------------------------------------------------
def _worker_dict(
    row: WorkerRow, jobs: list[dict[str, Any]], now: float | None = None
) -> dict[str, Any]:
    """A worker as the API's WorkerOut has it; ``state`` is None when ``now`` is not given."""
    labels, said = queries.split_worker_labels(dict(row.labels))
    exited = bool(said.get("exiting"))
    return {
        "worker_id": row.id, "host": row.host, "gpus": list(row.gpus), "cpus": row.cpus,
        "slots": row.slots, "labels": labels, "created_at": row.created_at,
        "last_seen_at": row.last_seen_at, "lost_leases": row.lost_leases, "current_jobs": jobs,
        "state": None if now is None
        else queries.worker_state(row.last_seen_at, exited, len(jobs), now),
        "gpu_stats": said.get("gpu_stats"), "jobs_done": int(said.get("jobs_done") or 0),
    }


def _leased_jobs(session: Session, worker_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    held: dict[str, list[dict[str, Any]]] = {w: [] for w in worker_ids}
    if not worker_ids:
        return held
    for job in session.scalars(
        select(JobRow).where(JobRow.state == "leased", JobRow.worker_id.in_(worker_ids))
        .order_by(JobRow.id)
    ):
        assert job.worker_id is not None
        held[job.worker_id].append({
            "job_id": job.id, "experiment_id": job.experiment_id, "trial_id": job.trial_id,
            "trial_number": job.trial_number, "rung": job.rung,
            "from_resource": job.from_resource, "to_resource": job.to_resource,
            "lease_expires_at": job.lease_expires_at,
        })
    return held


def workers(session: Session, now: float, limit: int = 200, offset: int = 0) -> dict[str, Any]:
    """Workers, most recently seen first, with their leased jobs, lost leases, state (busy,
    idle, offline), GPU readings (None: unknown) and jobs done."""
    limit, offset = max(0, min(limit, queries.MAX_PAGE)), max(0, offset)
    total = session.scalar(select(func.count()).select_from(WorkerRow)) or 0
    rows = list(session.scalars(
        select(WorkerRow).order_by(WorkerRow.last_seen_at.desc(), WorkerRow.id)
        .limit(limit).offset(offset)
    ))
    held = _leased_jobs(session, [r.id for r in rows])
    return {
        "now": now, "total": int(total), "limit": limit, "offset": offset,
        "items": [_worker_dict(r, held[r.id], now) for r in rows],
    }


def trial_workers(session: Session, trial_id: int) -> dict[str, Any]:
    """The workers that ran (or run) the trial's jobs."""
    if session.get(TrialRow, trial_id) is None:
        raise NotFound(f"trial {trial_id} does not exist")
    ids = sorted({w for w in session.scalars(
        select(JobRow.worker_id).where(JobRow.trial_id == trial_id, JobRow.worker_id.is_not(None))
    ) if w is not None})
    rows = list(session.scalars(select(WorkerRow).where(WorkerRow.id.in_(ids)))) if ids else []
    held = _leased_jobs(session, [r.id for r in rows])
    return {"trial_id": trial_id, "items": [_worker_dict(r, held[r.id]) for r in rows]}
