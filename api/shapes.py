"""Domain values and read-side results turned into wire models (no I/O here).

Losses are direction-normalised in storage; the wire speaks the metric's own direction:
``value = sign * loss``. Non-finite numbers never reach JSON: they become null, with a
``value_kind`` beside them where it matters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from tuner.coordinator import Assignment
from tuner.domain import Decision, JobState, Trial, ValueKind
from tuner.storage.queries import ExperimentDetail, ExperimentSummary, TrialDetail, WorkerInfo
from tuner.wire import (
    BestTrialOut,
    DecisionOut,
    DecisionRecordOut,
    ExperimentOut,
    JobOut,
    JobSummaryOut,
    ProgressOut,
    ReportOut,
    RungValueOut,
    TrialDetailOut,
    TrialOut,
    WorkerOut,
)


def iso(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def iso_or_none(ts: float | None) -> datetime | None:
    return None if ts is None else iso(ts)


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def sign_of(config: dict[str, Any]) -> float:
    return -1.0 if config.get("mode") == "max" else 1.0


def clean(data: Any) -> Any:
    """A JSON-safe copy: non-finite floats become null (reasons, metrics)."""
    if isinstance(data, float):
        return finite(data)
    if isinstance(data, dict):
        return {str(k): clean(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [clean(v) for v in data]
    return data


def job_out(found: Assignment) -> JobOut:
    job, trial = found.job, found.trial
    return JobOut(
        job_id=job.id, lease_token=found.lease_token, experiment_id=job.experiment_id,
        trial_id=trial.id, trial_number=trial.number, metric=found.metric, mode=found.mode,
        params=trial.params,
        from_resource=job.from_resource, to_resource=job.to_resource, rung=job.rung,
        bracket=job.bracket, checkpoint=job.checkpoint,
        lease_expires_at=iso(job.lease_expires_at or 0.0),
    )


def decision_out(decision: Decision, next_job: JobOut | None = None) -> DecisionOut:
    reason = clean(decision.reason.as_dict())
    if decision.stop_rung is not None:
        reason.setdefault("rung", decision.stop_rung)
    return DecisionOut(decision=decision.kind.value, reason=reason, next=next_job)


def experiment_out(
    summary: ExperimentSummary, config: dict[str, Any]
) -> ExperimentOut:
    best = None
    if summary.best is not None:
        top = summary.best
        best = BestTrialOut(
            trial_id=top.trial_id, trial_number=top.number,
            value=_signed(top.ranked_loss, sign_of(config)), step=top.ranked_step,
            checkpoint=top.checkpoint, checkpoint_step=top.checkpoint_step,
        )
    return ExperimentOut(
        id=summary.id, name=summary.name, state=summary.state.value,
        state_reason=summary.state_reason, config=config,
        n_trials=summary.n_trials, resource_used=summary.resource_used,
        created_at=iso(summary.created_at), ended_at=iso_or_none(summary.ended_at),
        progress=ProgressOut(trials_by_state=summary.trials_by_state, best=best),
    )


def experiment_detail_out(detail: ExperimentDetail) -> ExperimentOut:
    return experiment_out(detail.summary, detail.config)


def _signed(loss: float | None, sign: float) -> float | None:
    """A finite loss in the metric's own direction; None for none or a non-finite one."""
    found = finite(loss)
    return None if found is None else sign * found


def _trial_fields(trial: Trial, sign: float) -> dict[str, Any]:
    last_kind = None if trial.last_value is None else ValueKind.of(trial.last_value).value
    return {
        "id": trial.id, "experiment_id": trial.experiment_id, "number": trial.number,
        "bracket": trial.bracket, "params": trial.params, "state": trial.state.value,
        "rung": trial.rung, "resource": trial.resource,
        "best_value": _signed(trial.best_loss, sign),
        "last_value": finite(trial.last_value), "last_value_kind": last_kind,
        "retries": trial.retries, "stop_requested": trial.stop_requested,
        "checkpoint": trial.checkpoint,
        "checkpoint_step": None if trial.checkpoint is None else trial.checkpoint_step,
        "ranked_step": trial.ranked_step, "ranked_value": _signed(trial.ranked_loss, sign),
        "created_at": iso(trial.created_at),
        "updated_at": iso(trial.updated_at), "ended_at": iso_or_none(trial.ended_at),
    }


def trial_fields(trial: Trial, sign: float) -> dict[str, Any]:
    """The fields of :func:`trial_out` as a plain dict (for many trials at once: the export
    builds no model per trial)."""
    return _trial_fields(trial, sign)


def trial_out(trial: Trial, sign: float) -> TrialOut:
    return TrialOut(**_trial_fields(trial, sign))


#: The job endings that carry an error: a failure's text, or why the lease ran out.
ERROR_ENDINGS = frozenset({JobState.FAILED, JobState.EXPIRED})


def job_errors(
    jobs: Iterable[tuple[int, int, JobState, float | None]],
    decisions: Iterable[tuple[int, float, Mapping[str, Any] | None]],
) -> dict[int, str]:
    """The error of each failed or lost job, by job id: the note of the decision that the
    transaction ending it wrote (the same trial, the same time). ``jobs``: (id, trial id,
    state, ended at); ``decisions``: (trial id, created at, reason)."""
    notes = {
        (trial_id, at): str(reason["note"])
        for trial_id, at, reason in decisions
        if reason and reason.get("note")
    }
    return {
        job_id: notes.get((trial_id, ended_at), "")
        for job_id, trial_id, state, ended_at in jobs
        if JobState(state) in ERROR_ENDINGS and ended_at is not None
    }


def trial_detail_out(detail: TrialDetail, sign: float) -> TrialDetailOut:
    errors = job_errors(
        ((j.id, j.trial_id, j.state, detail.jobs_ended_at.get(j.id)) for j in detail.jobs),
        ((d.trial_id, d.created_at, d.reason) for d in detail.decisions),
    )
    return TrialDetailOut(
        **_trial_fields(detail.trial, sign),
        reports=[
            ReportOut(
                step=r.step, value=finite(r.value), value_kind=r.value_kind.value,
                metrics=clean(r.metrics), job_id=r.job_id, created_at=iso(r.created_at),
                superseded_by_job_id=r.superseded_by_job_id,
            )
            for r in detail.reports
        ],
        rung_values=[
            RungValueOut(
                bracket=r.bracket, rung=r.rung, value=finite(r.value),
                value_kind=ValueKind.of(r.value).value,
                status="promoted" if r.promoted else "closed" if r.closed else "open",
                created_at=iso(r.created_at),
            )
            for r in detail.rung_results
        ],
        decisions=[
            DecisionRecordOut(
                kind=d.kind.value, reason=clean(d.reason), step=d.step,
                created_at=iso(d.created_at),
            )
            for d in detail.decisions
        ],
        jobs=[
            JobSummaryOut(
                id=j.id, rung=j.rung, from_resource=j.from_resource, to_resource=j.to_resource,
                state=j.state.value, attempt=j.attempt, worker_id=j.worker_id,
                lease_expires_at=iso_or_none(j.lease_expires_at), created_at=iso(j.created_at),
                ended_at=iso_or_none(detail.jobs_ended_at.get(j.id)), error=errors.get(j.id),
            )
            for j in detail.jobs
        ],
        output_tail=detail.output_tail,
    )


def worker_out(info: WorkerInfo, now: float) -> WorkerOut:
    return WorkerOut(
        worker_id=info.id, host=info.host, gpus=info.gpus, cpus=info.cpus, slots=info.slots,
        labels=info.labels, created_at=iso(info.created_at), last_seen_at=iso(info.last_seen_at),
        lost_leases=info.lost_leases, current_jobs=info.leased_jobs, state=info.state(now),
        gpu_stats=info.gpu_stats, jobs_done=info.jobs_done,
    )
