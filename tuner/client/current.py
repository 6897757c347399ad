"""The job of a script started by the worker agent: ``tuner.current_job()``.

The agent passes the job in ``TUNER_*`` environment variables and heartbeats it itself, so
the :class:`Job` built here does not start its own heartbeat. The script reports and
completes; if it exits 0 without completing, the agent completes with the value stored at
``to_resource`` (or the last value reported).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal

from tuner.client.client import Client
from tuner.client.job import Decision, Job
from tuner.domain import DecisionKind
from tuner.errors import ConfigError
from tuner.wire import JobOut

#: The variables the agent sets for the script (CUDA_VISIBLE_DEVICES besides).
JOB_ENV = (
    "TUNER_URL",
    "TUNER_TOKEN",
    "TUNER_JOB_ID",
    "TUNER_LEASE_TOKEN",
    "TUNER_PARAMS",
    "TUNER_FROM_RESOURCE",
    "TUNER_TO_RESOURCE",
    "TUNER_CHECKPOINT_DIR",
    "TUNER_CHECKPOINT",
    "TUNER_EXPERIMENT_ID",
    "TUNER_TRIAL_ID",
    "TUNER_TRIAL_NUMBER",
    "TUNER_METRIC",
    "TUNER_MODE",
)

_current: Job | None = None


class AgentJob(Job):
    """A job whose heartbeat is the agent's; it stops when the agent is gone."""

    def __init__(
        self, client: Client, out: JobOut, *, checkpoint_dir: str | None, agent_pid: int | None
    ) -> None:
        super().__init__(client, out, heartbeat=False, checkpoint_dir=checkpoint_dir)
        self._agent_pid = agent_pid

    def report(
        self,
        step: int,
        value: float,
        checkpoint: str | None = None,
        *,
        metric: str | None = None,
        **metrics: object,
    ) -> Decision:
        if not self._agent_alive():
            # The agent died (or was killed): its lease is about to expire and the job will
            # be handed to another worker. Stop rather than keep the lease alive by reports.
            self.should_stop = True
            self.close()
            return Decision(DecisionKind.STOP, {"rule": "agent_gone"})
        return super().report(step, value, checkpoint, metric=metric, **metrics)

    def _agent_alive(self) -> bool:
        if self._agent_pid is None:
            return True
        if os.getppid() == self._agent_pid:
            return True
        try:
            os.kill(self._agent_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name, "")
    if raw == "" and default is not None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} is {raw!r}, but must be an integer") from None


def _mode(env: Mapping[str, str]) -> Literal["min", "max"]:
    raw = env.get("TUNER_MODE") or "min"
    if raw == "max":
        return "max"
    if raw == "min":
        return "min"
    raise ConfigError(f"TUNER_MODE is {raw!r}, but must be min or max")


def job_from_env(env: Mapping[str, str]) -> Job | None:
    """Build the job described by ``env``; None when ``TUNER_JOB_ID`` is unset."""
    if not env.get("TUNER_JOB_ID"):
        return None
    try:
        params = json.loads(env.get("TUNER_PARAMS") or "{}")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TUNER_PARAMS is not valid JSON: {exc}") from None
    out = JobOut(
        job_id=_int(env, "TUNER_JOB_ID"),
        lease_token=env.get("TUNER_LEASE_TOKEN", ""),
        experiment_id=_int(env, "TUNER_EXPERIMENT_ID", 0),
        trial_id=_int(env, "TUNER_TRIAL_ID", 0),
        trial_number=_int(env, "TUNER_TRIAL_NUMBER", 0),
        # Unset (an environment not made by the agent): job.metric and job.mode are None.
        metric=env.get("TUNER_METRIC", ""),
        mode=_mode(env),
        params=params,
        from_resource=_int(env, "TUNER_FROM_RESOURCE", 0),
        to_resource=_int(env, "TUNER_TO_RESOURCE"),
        rung=_int(env, "TUNER_RUNG", 0),
        bracket=_int(env, "TUNER_BRACKET", 0),
        checkpoint=env.get("TUNER_CHECKPOINT") or None,
        lease_expires_at=datetime.now(UTC) + timedelta(seconds=60),
    )
    client = Client(env.get("TUNER_URL"), env.get("TUNER_TOKEN"))
    agent_pid = _int(env, "TUNER_AGENT_PID", 0) or None
    return AgentJob(
        client, out, checkpoint_dir=env.get("TUNER_CHECKPOINT_DIR") or None, agent_pid=agent_pid
    )


def current_job() -> Job | None:
    """The job of this process when a worker agent started it; None otherwise.

    Built once from the environment (``TUNER_JOB_ID``, ``TUNER_LEASE_TOKEN``,
    ``TUNER_PARAMS``...) and returned again on later calls.
    """
    global _current
    if _current is None:
        _current = job_from_env(os.environ)
    return _current
