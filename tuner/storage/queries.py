"""The read side of the REST API and the dashboard, plus the small tables they own
(workers, tokens, trial output).

Every function takes the caller's :class:`~sqlalchemy.orm.Session` (the caller owns the
transaction; nothing here commits) and returns plain frozen dataclasses, never rows. Lists
are paginated (``limit``/``offset``) and served by indexes; a page's cost does not grow with
the number of trials except where noted (per-state counts of a listed experiment read its
``(experiment_id, state)`` index).

Trials are ranked as :mod:`tuner.ranking` says (the highest rung reached, then the value
there, then the number): ``order_by="best"`` and an experiment's best trial follow it.

Non-finite numbers: ``best_loss`` is ``inf`` for a trial whose best loss is not finite
(sorted last); report values are returned as floats (``nan``, ``inf`` possible) together
with their :class:`~tuner.domain.ValueKind`, so the API layer can render them as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuner.domain import (
    DecisionKind,
    DecisionRecord,
    ExperimentState,
    Job,
    JobState,
    RungResult,
    Trial,
    TrialState,
    ValueKind,
)
from tuner.errors import ConflictError, NotFound
from tuner.ranking import RANKED_FINITE
from tuner.storage.models import (
    DecisionRow,
    ExperimentRow,
    JobRow,
    ReportRow,
    RungResultRow,
    RungRow,
    SupersededReportRow,
    TokenRow,
    TrialRow,
    WorkerRow,
)
from tuner.storage.sql.ranking import ranking_order
from tuner.storage.sql.tables import (
    job_from_row,
    join_value,
    rung_result_of,
    stored_loss,
    trial_from_row,
)
from tuner.wire import WORKER_OFFLINE_AFTER_S

T = TypeVar("T")

#: Largest page any list function returns.
MAX_PAGE = 1000

#: Longest stored trial output tail (characters); longer text keeps its end.
MAX_OUTPUT_TAIL = 64 * 1024

TrialOrder = Literal["number", "best", "updated"]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: ``items`` and the ``total`` number of matching rows."""

    items: list[T]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class BestTrial:
    """The top of an experiment's ranking (:mod:`tuner.ranking`): its finite loss
    ``ranked_loss`` at resource ``ranked_step`` (the highest rung it reached), and its
    checkpoint with the step it was saved at (``checkpoint_step`` None without one)."""

    trial_id: int
    number: int
    ranked_step: int
    ranked_loss: float
    params: dict[str, Any]
    checkpoint: str | None = None
    checkpoint_step: int | None = None


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    """An experiment with its progress: trials per state and its best trial (the top of
    its ranking, among trials with a finite ranked value)."""

    id: int
    name: str
    state: ExperimentState
    n_trials: int
    resource_used: int
    created_at: float
    updated_at: float
    ended_at: float | None
    trials_by_state: dict[str, int]
    best: BestTrial | None
    state_reason: str | None = None  # why the service gave it its state (a breaker's pause)


@dataclass(frozen=True, slots=True)
class ExperimentDetail:
    summary: ExperimentSummary
    config: dict[str, Any]  # the stored experiment document (JSON form)
    scheduler_state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReportPoint:
    step: int
    value: float  # may be NaN or infinite
    value_kind: ValueKind
    metrics: dict[str, Any]
    job_id: int
    created_at: float
    #: The later job of the trial that reported the step again (a retry), if any.
    superseded_by_job_id: int | None = None


@dataclass(frozen=True, slots=True)
class TrialDetail:
    trial: Trial
    reports: list[ReportPoint]
    rung_results: list[RungResult]
    decisions: list[DecisionRecord]
    jobs: list[Job]
    output_tail: str | None
    jobs_ended_at: dict[int, float | None] = field(default_factory=dict)  # by job id


@dataclass(frozen=True, slots=True)
class Curve:
    """A trial's learning curve, downsampled: ``(step, value)`` with ``value`` maybe non-finite."""

    trial_id: int
    number: int
    state: TrialState
    points: list[tuple[int, float]]
    n_reports: int


@dataclass(frozen=True, slots=True)
class RungSummary:
    """Counts of one rung of one bracket (the caller knows its resource and ``eta``)."""

    bracket: int
    rung: int
    n_results: int
    n_promoted: int
    n_closed: int

    @property
    def n_open(self) -> int:
        return self.n_results - self.n_promoted - self.n_closed


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    host: str
    gpus: list[Any]
    cpus: int | None
    slots: int
    labels: dict[str, Any]
    created_at: float
    last_seen_at: float
    lost_leases: int
    leased_jobs: list[int] = field(default_factory=list)  # ids of the jobs it holds
    gpu_stats: list[dict[str, Any]] | None = None  # at its last registration; None: unknown
    jobs_done: int = 0  # the jobs it ended, as it last said
    exited: bool = False  # its last registration said it was leaving

    def state(self, now: float) -> str:
        return worker_state(self.last_seen_at, self.exited, len(self.leased_jobs), now)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    role: str
    token_hash: str
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _page_bounds(limit: int, offset: int) -> tuple[int, int]:
    return max(0, min(limit, MAX_PAGE)), max(0, offset)


# ---- experiments ---------------------------------------------------------------------------
def _best_trial(session: Session, experiment_id: int) -> BestTrial | None:
    """The top of the ranking if it has a finite value (one step of the ranking's index)."""
    t = TrialRow
    row = session.execute(
        select(t.id, t.number, t.ranked_step, t.ranked_loss, t.params, t.checkpoint,
               t.checkpoint_step)
        .where(t.experiment_id == experiment_id, t.ranked_kind == RANKED_FINITE)
        .order_by(*ranking_order())
        .limit(1)
    ).first()
    if row is None or row.ranked_step is None:
        return None
    saved_at = None if row.checkpoint is None else row.checkpoint_step
    return BestTrial(
        row.id, row.number, row.ranked_step, row.ranked_loss, dict(row.params),
        row.checkpoint, saved_at,
    )


def _summaries(session: Session, rows: list[ExperimentRow]) -> list[ExperimentSummary]:
    ids = [row.id for row in rows]
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    if ids:
        for experiment_id, state, count in session.execute(
            select(TrialRow.experiment_id, TrialRow.state, func.count())
            .where(TrialRow.experiment_id.in_(ids))
            .group_by(TrialRow.experiment_id, TrialRow.state)
        ):
            counts[experiment_id][TrialState(state).value] = int(count)
    return [
        ExperimentSummary(
            id=row.id,
            name=row.name,
            state=ExperimentState(row.state),
            n_trials=row.n_trials,
            resource_used=row.resource_used,
            created_at=row.created_at,
            updated_at=row.updated_at,
            ended_at=row.ended_at,
            trials_by_state=counts[row.id],
            best=_best_trial(session, row.id),
            state_reason=row.state_reason,
        )
        for row in rows
    ]


def list_experiments(
    session: Session, limit: int = 50, offset: int = 0, state: ExperimentState | None = None
) -> Page[ExperimentSummary]:
    """Experiments, newest first, with their progress."""
    limit, offset = _page_bounds(limit, offset)
    where = [] if state is None else [ExperimentRow.state == state]
    total = session.scalar(select(func.count()).select_from(ExperimentRow).where(*where)) or 0
    rows = list(
        session.scalars(
            select(ExperimentRow)
            .where(*where)
            .order_by(ExperimentRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )
    return Page(_summaries(session, rows), int(total), limit, offset)


def get_experiment_detail(session: Session, experiment_id: int) -> ExperimentDetail:
    row = session.get(ExperimentRow, experiment_id, populate_existing=True)
    if row is None:
        raise NotFound(f"experiment {experiment_id} does not exist")
    (summary,) = _summaries(session, [row])
    return ExperimentDetail(summary, dict(row.config), dict(row.scheduler_state))


# ---- trials --------------------------------------------------------------------------------
def list_trials(
    session: Session,
    experiment_id: int,
    state: TrialState | None = None,
    order_by: TrialOrder = "number",
    limit: int = 50,
    offset: int = 0,
) -> Page[Trial]:
    """Trials of an experiment; ``order_by``: ``number`` (ascending), ``best`` (the ranking
    of :mod:`tuner.ranking`: best first, trials without a rung result last), ``updated``
    (most recently changed first)."""
    limit, offset = _page_bounds(limit, offset)
    where = [TrialRow.experiment_id == experiment_id]
    if state is not None:
        where.append(TrialRow.state == state)
    order: list[Any]
    if order_by == "number":
        order = [TrialRow.number]
    elif order_by == "best":
        order = ranking_order()
    elif order_by == "updated":
        order = [TrialRow.updated_at.desc(), TrialRow.id.desc()]
    else:
        raise ValueError(f"order_by is {order_by!r}, but must be number, best or updated")
    total = session.scalar(select(func.count()).select_from(TrialRow).where(*where)) or 0
    rows = session.scalars(
        select(TrialRow).where(*where).order_by(*order).limit(limit).offset(offset)
    )
    return Page([trial_from_row(row) for row in rows], int(total), limit, offset)


def trial_detail(session: Session, trial_id: int, max_reports: int = 10_000) -> TrialDetail:
    """One trial with its reports (the first ``max_reports`` by step, superseded ones
    included), rung results, decisions and jobs."""
    row = session.get(TrialRow, trial_id, populate_existing=True)
    if row is None:
        raise NotFound(f"trial {trial_id} does not exist")
    reports = [
        _point(r)
        for r in session.scalars(
            select(ReportRow)
            .where(ReportRow.trial_id == trial_id)
            .order_by(ReportRow.step)
            .limit(max(0, max_reports))
        )
    ]
    superseded = [
        _point(r)
        for r in session.scalars(
            select(SupersededReportRow)
            .where(SupersededReportRow.trial_id == trial_id)
            .order_by(SupersededReportRow.step, SupersededReportRow.id)
            .limit(max(0, max_reports))
        )
    ]
    if superseded:  # each before the report that replaced it (a stable sort keeps that)
        reports = sorted(superseded + reports, key=lambda point: point.step)[:max_reports]
    rung_results = [
        rung_result_of(r)
        for r in session.scalars(
            select(RungResultRow)
            .where(RungResultRow.trial_id == trial_id)
            .order_by(RungResultRow.rung)
        )
    ]
    decisions = [
        DecisionRecord(d.trial_id, DecisionKind(d.kind), dict(d.reason), d.step, d.created_at)
        for d in session.scalars(
            select(DecisionRow).where(DecisionRow.trial_id == trial_id).order_by(DecisionRow.id)
        )
    ]
    job_rows = list(
        session.scalars(select(JobRow).where(JobRow.trial_id == trial_id).order_by(JobRow.id))
    )
    return TrialDetail(
        trial_from_row(row), reports, rung_results, decisions,
        [job_from_row(j) for j in job_rows], row.output_tail,
        {j.id: j.ended_at for j in job_rows},
    )


def _point(row: ReportRow | SupersededReportRow) -> ReportPoint:
    value = join_value(row.value, row.value_kind)
    return ReportPoint(
        step=row.step,
        value=math.nan if value is None else value,
        value_kind=ValueKind(row.value_kind),
        metrics=dict(row.metrics),
        job_id=row.job_id,
        created_at=row.created_at,
        superseded_by_job_id=getattr(row, "superseded_by_job_id", None),
    )


def learning_curves(
    session: Session,
    experiment_id: int,
    max_points: int = 200,
    max_trials: int = 100,
    trial_ids: list[int] | None = None,
) -> list[Curve]:
    """Curves of the ``max_trials`` best trials by the ranking (or of ``trial_ids``), each
    downsampled in SQL to about ``max_points`` points: every k-th report by step, plus the
    last one."""
    max_points = max(1, max_points)
    if trial_ids is None:
        trial_rows = session.execute(
            select(TrialRow.id, TrialRow.number, TrialRow.state)
            .where(TrialRow.experiment_id == experiment_id)
            .order_by(*ranking_order())
            .limit(max(0, min(max_trials, MAX_PAGE)))
        ).all()
    else:
        trial_rows = session.execute(
            select(TrialRow.id, TrialRow.number, TrialRow.state)
            .where(TrialRow.experiment_id == experiment_id, TrialRow.id.in_(trial_ids[:MAX_PAGE]))
            .order_by(TrialRow.number)
        ).all()
    if not trial_rows:
        return []
    ids = [r.id for r in trial_rows]
    rn = func.row_number().over(partition_by=ReportRow.trial_id, order_by=ReportRow.step)
    cnt = func.count().over(partition_by=ReportRow.trial_id)
    numbered = (
        select(
            ReportRow.trial_id,
            ReportRow.step,
            ReportRow.value,
            ReportRow.value_kind,
            rn.label("rn"),
            cnt.label("cnt"),
        )
        .where(ReportRow.trial_id.in_(ids))
        .subquery()
    )
    stride = (numbered.c.cnt + (max_points - 1)) / max_points  # integer division
    sampled = session.execute(
        select(
            numbered.c.trial_id,
            numbered.c.step,
            numbered.c.value,
            numbered.c.value_kind,
            numbered.c.cnt,
        )
        .where(((numbered.c.rn - 1) % stride == 0) | (numbered.c.rn == numbered.c.cnt))
        .order_by(numbered.c.trial_id, numbered.c.step)
    ).all()
    points: dict[int, list[tuple[int, float]]] = {i: [] for i in ids}
    counts: dict[int, int] = dict.fromkeys(ids, 0)
    for trial_id, step, value, kind, n in sampled:
        v = join_value(value, kind)
        points[trial_id].append((step, math.nan if v is None else v))
        counts[trial_id] = int(n)
    return [
        Curve(r.id, r.number, TrialState(r.state), points[r.id], counts[r.id]) for r in trial_rows
    ]


# ---- rungs ---------------------------------------------------------------------------------
def rung_table(session: Session, experiment_id: int) -> list[RungSummary]:
    """Every rung that has results, by bracket then rung (from the ``rungs`` counters)."""
    rows = session.scalars(
        select(RungRow)
        .where(RungRow.experiment_id == experiment_id)
        .order_by(RungRow.bracket, RungRow.rung)
        .execution_options(populate_existing=True)
    )
    return [
        RungSummary(r.bracket, r.rung, r.n_results, r.n_promoted, r.n_left - r.n_promoted)
        for r in rows
    ]


def nth_loss(
    session: Session, experiment_id: int, bracket: int, rung: int, position: int
) -> float | None:
    """The loss at 0-based ``position`` of the rung's order (``inf`` for a non-finite one),
    or None when the rung has fewer results. E.g. the loss to beat for promotion is
    ``nth_loss(..., n // eta - 1)``. Costs ``position`` index steps."""
    if position < 0:
        return None
    row = session.execute(
        select(RungResultRow.loss, RungResultRow.loss_rank_kind)
        .where(
            RungResultRow.experiment_id == experiment_id,
            RungResultRow.bracket == bracket,
            RungResultRow.rung == rung,
        )
        .order_by(RungResultRow.loss_rank_kind, RungResultRow.loss, RungResultRow.trial_number)
        .offset(position)
        .limit(1)
    ).first()
    return None if row is None else stored_loss(row.loss, row.loss_rank_kind)


# ---- workers -------------------------------------------------------------------------------
#: The label under which a worker's row keeps what its agent last said about itself
#: (``gpu_stats``, ``jobs_done``, ``exiting``): readings, not facts the service decides on,
#: so they ride in the ``labels`` JSON, whose ``tuner.`` keys the API refuses from users.
AGENT_LABEL = "tuner.agent"


def worker_state(last_seen_at: float, exited: bool, n_jobs: int, now: float) -> str:
    """``offline`` (it said it was leaving, or was not seen for ``WORKER_OFFLINE_AFTER_S``),
    else ``busy`` (it holds a job) or ``idle``."""
    if exited or now - last_seen_at > WORKER_OFFLINE_AFTER_S:
        return "offline"
    return "busy" if n_jobs else "idle"


def split_worker_labels(labels: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's labels, and what the agent last said (``AGENT_LABEL``'s value)."""
    own = {k: v for k, v in labels.items() if k != AGENT_LABEL}
    said = labels.get(AGENT_LABEL)
    return own, said if isinstance(said, dict) else {}


def _worker(row: WorkerRow, jobs: list[int] | None = None) -> WorkerInfo:
    labels, said = split_worker_labels(dict(row.labels))
    return WorkerInfo(
        id=row.id,
        host=row.host,
        gpus=list(row.gpus),
        cpus=row.cpus,
        slots=row.slots,
        labels=labels,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        lost_leases=row.lost_leases,
        leased_jobs=list(jobs or []),
        gpu_stats=said.get("gpu_stats"),
        jobs_done=int(said.get("jobs_done") or 0),
        exited=bool(said.get("exiting")),
    )


def upsert_worker(
    session: Session,
    worker_id: str,
    host: str,
    now: float,
    gpus: list[Any] | None = None,
    cpus: int | None = None,
    slots: int = 1,
    labels: dict[str, Any] | None = None,
    *,
    gpu_stats: list[dict[str, Any]] | None = None,
    jobs_done: int | None = None,
    exiting: bool = False,
) -> WorkerInfo:
    """Register a worker, or refresh its description, readings and ``last_seen_at``.

    ``gpu_stats`` replaces the stored readings (None: unknown now); ``jobs_done`` None keeps
    the stored count; ``exiting`` marks it offline until it registers again."""
    row = session.get(WorkerRow, worker_id, populate_existing=True)
    if row is None:
        row = WorkerRow(
            id=worker_id,
            host=host,
            gpus=list(gpus or []),
            cpus=cpus,
            slots=slots,
            labels=dict(labels or {}),
            created_at=now,
            last_seen_at=now,
            lost_leases=0,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # registered concurrently: update that row instead
            row = session.get(WorkerRow, worker_id, populate_existing=True)
            if row is None:
                raise
    _, said = split_worker_labels(dict(row.labels))
    said = {
        "gpu_stats": gpu_stats,
        "jobs_done": said.get("jobs_done", 0) if jobs_done is None else jobs_done,
        "exiting": exiting,
    }
    row.host, row.gpus, row.cpus, row.slots = host, list(gpus or []), cpus, slots
    row.labels, row.last_seen_at = {**dict(labels or {}), AGENT_LABEL: said}, now
    session.flush()
    return _worker(row, _held_jobs(session, [worker_id])[worker_id])


def touch_worker(session: Session, worker_id: str, now: float) -> bool:
    """Record that the worker was seen; False if it never registered."""
    result = session.execute(
        update(WorkerRow).where(WorkerRow.id == worker_id).values(last_seen_at=now),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def add_lost_lease(session: Session, worker_id: str) -> None:
    """Count a lease the worker let expire (unknown workers are ignored)."""
    session.execute(
        update(WorkerRow)
        .where(WorkerRow.id == worker_id)
        .values(lost_leases=WorkerRow.lost_leases + 1),
        execution_options={"synchronize_session": False},
    )


def list_workers(session: Session, limit: int = 100, offset: int = 0) -> Page[WorkerInfo]:
    """Workers, most recently seen first, each with the ids of the jobs it holds."""
    limit, offset = _page_bounds(limit, offset)
    total = session.scalar(select(func.count()).select_from(WorkerRow)) or 0
    rows = list(
        session.scalars(
            select(WorkerRow)
            .order_by(WorkerRow.last_seen_at.desc(), WorkerRow.id)
            .limit(limit)
            .offset(offset)
            .execution_options(populate_existing=True)
        )
    )
    held = _held_jobs(session, [row.id for row in rows])
    return Page([_worker(row, held[row.id]) for row in rows], int(total), limit, offset)


def _held_jobs(session: Session, worker_ids: list[str]) -> dict[str, list[int]]:
    """The ids of the jobs each worker holds now (the leased jobs: few, by their index)."""
    held: dict[str, list[int]] = {worker_id: [] for worker_id in worker_ids}
    if worker_ids:
        for job_id, worker_id in session.execute(
            select(JobRow.id, JobRow.worker_id)
            .where(JobRow.state == JobState.LEASED, JobRow.worker_id.in_(worker_ids))
            .order_by(JobRow.id)
        ):
            if worker_id is not None:
                held[worker_id].append(job_id)
    return held


# ---- tokens --------------------------------------------------------------------------------
def _token(row: TokenRow) -> TokenInfo:
    return TokenInfo(row.id, row.name, row.role, row.token_hash, row.created_at, row.revoked_at)


def create_token(session: Session, name: str, role: str, token_hash: str, now: float) -> TokenInfo:
    """Store a token's hash; ConflictError if the hash exists."""
    row = TokenRow(name=name, role=role, token_hash=token_hash, created_at=now, revoked_at=None)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise ConflictError("a token with this hash exists") from None
    return _token(row)


def token_by_hash(session: Session, token_hash: str) -> TokenInfo | None:
    """The token with this hash, revoked or not (check :attr:`TokenInfo.active`)."""
    row = session.scalars(select(TokenRow).where(TokenRow.token_hash == token_hash)).first()
    return _token(row) if row is not None else None


def list_tokens(session: Session, include_revoked: bool = False) -> list[TokenInfo]:
    stmt = select(TokenRow).order_by(TokenRow.id)
    if not include_revoked:
        stmt = stmt.where(TokenRow.revoked_at.is_(None))
    return [_token(row) for row in session.scalars(stmt)]


def revoke_token(session: Session, token_id: int, now: float) -> bool:
    """Revoke a token; False if it does not exist or was revoked already."""
    result = session.execute(
        update(TokenRow)
        .where(TokenRow.id == token_id, TokenRow.revoked_at.is_(None))
        .values(revoked_at=now),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


# ---- trial output --------------------------------------------------------------------------
def set_output_tail(session: Session, trial_id: int, text: str) -> None:
    """Store the end of a trial's output (the last :data:`MAX_OUTPUT_TAIL` characters)."""
    result = session.execute(
        update(TrialRow).where(TrialRow.id == trial_id).values(output_tail=text[-MAX_OUTPUT_TAIL:]),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound(f"trial {trial_id} does not exist")


def get_output_tail(session: Session, trial_id: int) -> str | None:
    row = session.execute(select(TrialRow.output_tail).where(TrialRow.id == trial_id)).first()
    if row is None:
        raise NotFound(f"trial {trial_id} does not exist")
    tail: str | None = row.output_tail
    return tail


__all__ = [
    "MAX_OUTPUT_TAIL",
    "MAX_PAGE",
    "BestTrial",
    "Curve",
    "ExperimentDetail",
    "ExperimentSummary",
    "Page",
    "ReportPoint",
    "RungSummary",
    "TokenInfo",
    "TrialDetail",
    "WorkerInfo",
    "add_lost_lease",
    "create_token",
    "get_experiment_detail",
    "get_output_tail",
    "learning_curves",
    "list_experiments",
    "list_tokens",
    "list_trials",
    "list_workers",
    "nth_loss",
    "rung_table",
    "revoke_token",
    "set_output_tail",
    "token_by_hash",
    "touch_worker",
    "upsert_worker",
    "worker_state",
]
