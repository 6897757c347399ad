"""How the end of a job is told to the service, and what the service's answer means for
the person watching: complete (the command exited 0), fail, release (the agent leaves),
each answered as an :class:`~tuner.agent.lines.Outcome`."""

from __future__ import annotations

import logging

from tuner.agent.lines import Outcome, decision_outcome, tail_lines
from tuner.client import Client
from tuner.client.job import value_fields
from tuner.domain import DecisionKind
from tuner.errors import ConflictError, NotFound, OutOfRange, TunerError
from tuner.wire import DecisionOut, JobOut

log = logging.getLogger(__name__)


def judged(client: Client, job: JobOut, answer: DecisionOut) -> Outcome:
    """The outcome the service's decision says: for a trial that had already stopped (the
    script heard ``stop`` itself), the decision that stopped it; for a completed trial (one
    per trial, so the read is rare), its final value."""
    outcome = decision_outcome(answer.decision, answer.reason, job)
    if outcome.kind != "completed" and answer.reason.get("rule") != "already_stopped":
        return outcome
    try:
        trial = client.get_trial(job.trial_id)
    except TunerError as exc:
        log.info("event=trial_read_failed trial_id=%d detail=%s", job.trial_id, exc)
        return outcome
    if outcome.kind == "completed":
        value = trial.last_value if trial.last_value_kind == "finite" else trial.last_value_kind
        if value is None:
            return outcome
        shown = f"{value:.6g}" if isinstance(value, float) else value
        return Outcome(outcome.kind, f"{outcome.text}, {job.metric or 'value'} {shown}")
    stops = [d for d in trial.decisions if d.kind == DecisionKind.STOP.value]
    return decision_outcome(stops[-1].kind, stops[-1].reason, job) if stops else outcome


def complete(client: Client, job: JobOut, tail: str) -> Outcome:
    """The command exited 0: complete the job unless the script already did."""
    try:
        out = client.job_call(job.job_id, "complete", {"lease_token": job.lease_token})
        return judged(client, job, out)
    except OutOfRange:
        pass  # no report at to_resource: use the last value reported, below
    except (ConflictError, NotFound) as exc:
        log.info("event=complete_refused job_id=%d detail=%s", job.job_id, exc.detail)
        return Outcome("lost", f"ended, but the service refused its completion: {exc.detail}")
    except TunerError as exc:
        log.warning("event=complete_failed job_id=%d detail=%s", job.job_id, exc)
        return Outcome("lost", f"ended, but its completion was not sent: {exc}")
    try:
        trial = client.get_trial(job.trial_id)
        reported = [r for r in trial.reports if r.job_id == job.job_id]
        if not reported:
            return fail(
                client,
                job,
                "the command exited 0 without reporting any value",
                "failed: the command exited 0 without reporting any value",
                tail_lines(tail),
            )
        last = reported[-1]
        value = last.value if last.value_kind == "finite" else float(last.value_kind)
        body = {"lease_token": job.lease_token, **value_fields(value)}
        return judged(client, job, client.job_call(job.job_id, "complete", body))
    except TunerError as exc:
        log.warning("event=complete_failed job_id=%d detail=%s", job.job_id, exc)
        return Outcome("lost", f"ended, but its completion was not accepted: {exc}")


def release(client: Client, job: JobOut) -> Outcome:
    """Shutting down: the job goes back to the queue without spending a retry."""
    outcome = Outcome("released", "released (the worker is leaving): queued again")
    try:
        client.release_job(job.job_id, job.lease_token)
    except (ConflictError, NotFound) as exc:
        log.info("event=release_refused job_id=%d detail=%s", job.job_id, exc.detail)
        return Outcome("released", f"ended as the worker left ({exc.detail})")
    except TunerError as exc:
        log.warning("event=release_failed job_id=%d detail=%s", job.job_id, exc)
        return Outcome("released", f"ended (the worker is leaving), release not sent: {exc}")
    return outcome


def fail(client: Client, job: JobOut, error: str, text: str, tail: str = "") -> Outcome:
    """Fail the job with ``error``; the outcome says ``text`` and what became of the trial."""
    try:
        out = client.fail_job(job.job_id, job.lease_token, error[-10_000:])
    except (ConflictError, NotFound) as exc:
        log.info("event=fail_refused job_id=%d detail=%s", job.job_id, exc.detail)
        refused = f"{text} (the service refused the failure: {exc.detail})"
        return Outcome("failed", refused, tail)
    except TunerError as exc:
        log.warning("event=fail_failed job_id=%d detail=%s", job.job_id, exc)
        return Outcome("failed", f"{text} (the failure was not sent: {exc})", tail)
    if out.trial_state == "failed":
        then = "the trial failed, no retry left"
    elif out.trial_state == "pending":
        then = f"queued again (retry {out.retries})"
    else:
        then = f"the trial is {out.trial_state}"
    return Outcome("failed", f"{text}; {then}", tail)


__all__ = ["complete", "fail", "judged", "release"]
