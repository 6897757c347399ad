"""The only place where storage meets the scheduler and the sampler.

Each function is one operation of the job protocol and runs inside one transaction that its
caller owns: the service opens one per request, the simulator one per event.
"""

from tuner.coordinator.actions import change_state, create_experiment, stop_trial
from tuner.coordinator.claim import Assignment, ClaimResult, ExperimentOver, NothingNow, claim
from tuner.coordinator.jobs import complete, fail, heartbeat, reap, release
from tuner.coordinator.lease import held_job
from tuner.coordinator.report import report
from tuner.protocol import hash_token

__all__ = [
    "Assignment",
    "ClaimResult",
    "ExperimentOver",
    "NothingNow",
    "change_state",
    "claim",
    "complete",
    "create_experiment",
    "fail",
    "hash_token",
    "heartbeat",
    "held_job",
    "reap",
    "release",
    "report",
    "stop_trial",
]
