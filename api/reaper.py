"""The reaper: a thread in every server process that expires leases not renewed in time.

Each pass is one transaction of its own (never a request's session). With several
replicas, every reaper may see the same expired job; the coordinator ends it by a
compare-and-set under the experiment's lock, so exactly one of them re-queues it.
"""

from __future__ import annotations

import logging
import threading

from api.deps import Runtime
from tuner import coordinator
from tuner.domain import Job
from tuner.storage import queries
from tuner.storage.sql import SqlStore

log = logging.getLogger(__name__)


def reap_once(runtime: Runtime, limit: int = 100) -> list[Job]:
    """One pass: expire what is due, count it, and wake claims waiting for work."""

    def run(store: SqlStore) -> list[Job]:
        reaped = coordinator.reap(store, runtime.now(), limit=limit)
        for job in reaped:
            if job.worker_id:
                queries.add_lost_lease(store.session, job.worker_id)
        return reaped

    reaped = runtime.writer.write("reap", run)
    for job in reaped:
        runtime.metrics.lease_expiries.inc()
        runtime.wakeups.notify(job.experiment_id)
        log.info(
            "event=lease_expired experiment_id=%s trial_id=%s job_id=%s worker_id=%s",
            job.experiment_id, job.trial_id, job.id, job.worker_id,
        )
    return reaped


def reap_backlog(runtime: Runtime, stop: threading.Event) -> None:
    """Reap until a pass finds less than a full batch (a backlog goes on without waiting
    for the next interval), or until ``stop`` is set: the reaper's periodic work
    (:class:`api.periodic.Periodic`)."""
    while len(reap_once(runtime)) >= 100 and not stop.is_set():
        pass
