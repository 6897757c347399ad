"""Read-side answers: ``tuner.storage.queries`` results shaped into wire models.

Each function takes the caller's session (one read transaction per request). The only SQL
here is a lookup of stored experiment documents, which the queries module does not return
with its lists (the metric's direction is needed to turn losses back into values), a
trial's id by its number (the unique index on ``(experiment_id, number)``), and the latest
failed jobs of an experiment with their errors (:func:`failures`).
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api import shapes
from tuner.config import build_scheduler, parse_config
from tuner.domain import ExperimentState, JobState, TrialState
from tuner.errors import NotFound
from tuner.storage import queries
from tuner.storage.models import DecisionRow, ExperimentRow, JobRow, TrialRow
from tuner.wire import (
    CurveOut,
    CurvesOut,
    ExperimentOut,
    ExperimentPageOut,
    FailureOut,
    FailuresOut,
    RungOut,
    RungsOut,
    TrialDetailOut,
    TrialPageOut,
    WorkerPageOut,
)

TrialOrderIn = Literal["number", "value", "updated"]


def documents(session: Session, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Stored experiment documents by id."""
    if not ids:
        return {}
    rows = session.execute(
        select(ExperimentRow.id, ExperimentRow.config).where(ExperimentRow.id.in_(ids))
    )
    return {row.id: dict(row.config) for row in rows}


def document(session: Session, experiment_id: int) -> dict[str, Any]:
    found = documents(session, [experiment_id]).get(experiment_id)
    if found is None:
        raise NotFound(f"experiment {experiment_id} does not exist")
    return found


def experiment_page(
    session: Session, limit: int, offset: int, state: ExperimentState | None
) -> ExperimentPageOut:
    page = queries.list_experiments(session, limit=limit, offset=offset, state=state)
    docs = documents(session, [s.id for s in page.items])
    return ExperimentPageOut(
        items=[shapes.experiment_out(s, docs[s.id]) for s in page.items],
        total=page.total, limit=page.limit, offset=page.offset,
    )


def experiment(session: Session, experiment_id: int) -> ExperimentOut:
    return shapes.experiment_detail_out(queries.get_experiment_detail(session, experiment_id))


def trial_page(
    session: Session, experiment_id: int, state: TrialState | None, order_by: TrialOrderIn,
    limit: int, offset: int,
) -> TrialPageOut:
    sign = shapes.sign_of(document(session, experiment_id))
    order: queries.TrialOrder = "best" if order_by == "value" else order_by
    page = queries.list_trials(session, experiment_id, state, order, limit, offset)
    return TrialPageOut(
        items=[shapes.trial_out(t, sign) for t in page.items],
        total=page.total, limit=page.limit, offset=page.offset,
    )


def trial_id_of(session: Session, experiment_id: int, number: int) -> int:
    """The id of trial ``number`` of an experiment (what people see and type: ``EXP/NUM``).

    Raises:
        NotFound: the experiment does not exist, or has no trial ``number``.
    """
    found = session.scalar(
        select(TrialRow.id).where(
            TrialRow.experiment_id == experiment_id, TrialRow.number == number
        )
    )
    if found is None:
        document(session, experiment_id)  # an unknown experiment says so
        raise NotFound(f"experiment {experiment_id} has no trial {number}")
    return int(found)


def trial(session: Session, trial_id: int) -> TrialDetailOut:
    detail = queries.trial_detail(session, trial_id)
    sign = shapes.sign_of(document(session, detail.trial.experiment_id))
    return shapes.trial_detail_out(detail, sign)


def rungs(session: Session, experiment_id: int) -> RungsOut:
    """Per bracket and rung: counts, and the value a result must reach to be in the top
    ``floor(n / eta)`` now (position ``floor(n / eta) - 1`` of the rung's order). The top
    rung (``R``) promotes nothing: its top k is 0 and it has no value to beat."""
    config = parse_config(document(session, experiment_id))
    levels = build_scheduler(config).levels
    eta = config.scheduler.eta
    items = []
    for r in queries.rung_table(session, experiment_id):
        top_k = r.n_results // eta if r.rung < len(levels) - 1 else 0
        value = None
        if top_k:
            loss = queries.nth_loss(session, experiment_id, r.bracket, r.rung, top_k - 1)
            value = shapes.finite(loss)
        items.append(
            RungOut(
                bracket=r.bracket, rung=r.rung,
                resource=levels[r.rung] if r.rung < len(levels) else levels[-1],
                n_results=r.n_results, n_promoted=r.n_promoted, n_stopped=r.n_closed,
                top_k=top_k, promotable_value=None if value is None else config.sign * value,
            )
        )
    return RungsOut(experiment_id=experiment_id, eta=eta, mode=config.mode, items=items)


#: The job endings listed as failures, and how :class:`FailureOut` names them.
FAILURE_OUTCOMES: dict[JobState, Literal["failed", "lost"]] = {
    JobState.FAILED: "failed", JobState.EXPIRED: "lost",
}


def failures(session: Session, experiment_id: int, limit: int) -> FailuresOut:
    """The experiment's latest ``limit`` failed or lost jobs, newest first, each with the
    note of the decision that ended it (the error's end, or why the lease ran out).

    Reads the ``(experiment_id, state, id)`` index of jobs, then the decisions of those
    jobs' trials written when they ended (``decisions.trial_id``): the cost follows
    ``limit`` and the number of failures, not the number of trials.
    """
    document(session, experiment_id)  # 404 for an unknown experiment
    where = (JobRow.experiment_id == experiment_id, JobRow.state.in_(list(FAILURE_OUTCOMES)))
    total = session.scalar(select(func.count()).select_from(JobRow).where(*where)) or 0
    jobs = session.execute(
        select(
            JobRow.id, JobRow.trial_id, JobRow.trial_number, JobRow.attempt, JobRow.rung,
            JobRow.state, JobRow.worker_id, JobRow.ended_at,
        ).where(*where).order_by(JobRow.id.desc()).limit(limit)
    ).all()
    ended = {job.ended_at for job in jobs if job.ended_at is not None}
    decisions = session.execute(
        select(DecisionRow.trial_id, DecisionRow.created_at, DecisionRow.reason).where(
            DecisionRow.trial_id.in_({job.trial_id for job in jobs}),
            DecisionRow.created_at.in_(ended),
        )
    ).all() if ended else []
    errors = shapes.job_errors(
        ((job.id, job.trial_id, JobState(job.state), job.ended_at) for job in jobs),
        ((d.trial_id, d.created_at, d.reason) for d in decisions),
    )
    return FailuresOut(
        experiment_id=experiment_id,
        total=int(total),
        items=[
            FailureOut(
                experiment_id=experiment_id, trial_id=job.trial_id, trial_number=job.trial_number,
                job_id=job.id, attempt=job.attempt, rung=job.rung,
                outcome=FAILURE_OUTCOMES[JobState(job.state)], worker_id=job.worker_id,
                ended_at=shapes.iso_or_none(job.ended_at),
                error=errors.get(job.id, ""),
            )
            for job in jobs
        ],
    )


def curves(session: Session, experiment_id: int, max_points: int, max_trials: int) -> CurvesOut:
    document(session, experiment_id)  # 404 for an unknown experiment
    found = queries.learning_curves(
        session, experiment_id, max_points=max_points, max_trials=max_trials
    )
    return CurvesOut(
        experiment_id=experiment_id,
        curves=[
            CurveOut(
                trial_id=c.trial_id, trial_number=c.number, state=c.state.value,
                steps=[step for step, _ in c.points],
                values=[shapes.finite(v) for _, v in c.points],
            )
            for c in found
        ],
    )


def worker_page(session: Session, limit: int, offset: int, now: float) -> WorkerPageOut:
    page = queries.list_workers(session, limit=limit, offset=offset)
    return WorkerPageOut(
        items=[shapes.worker_out(w, now) for w in page.items],
        total=page.total, limit=page.limit, offset=page.offset,
    )
