"""What routes share: the runtime of one app (settings, the writer, reads, clock, metrics,
wake-ups). Every write goes through :class:`api.writer.Writer`; reads run
:meth:`Runtime.read` in worker threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Query, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.metrics import Metrics
from api.settings import Settings
from api.writer import Writer
from tuner.storage.database import read_once_more_if_dead

T = TypeVar("T")


class Wakeups:
    """Long-polling claims sleep here; writes that may make work appear wake them.

    One condition with a generation counter per experiment and one for any experiment.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._by_experiment: dict[int, int] = {}
        self._any = 0

    def seen(self, experiment_id: int | None) -> int:
        with self._cond:
            return self._any if experiment_id is None else self._by_experiment.get(experiment_id, 0)

    def notify(self, experiment_id: int) -> None:
        with self._cond:
            self._by_experiment[experiment_id] = self._by_experiment.get(experiment_id, 0) + 1
            self._any += 1
            self._cond.notify_all()

    def wait(self, experiment_id: int | None, seen: int, timeout_s: float) -> bool:
        """Sleep until ``experiment_id`` (None: any) changes from ``seen``, or the timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.seen(experiment_id) != seen, timeout_s)


@dataclass
class Runtime:
    """The process-wide objects of one app, on ``app.state.runtime``."""

    settings: Settings
    engine: Engine
    writer: Writer
    read_factory: sessionmaker[Session]
    clock: Callable[[], float]
    metrics: Metrics = field(default_factory=Metrics)
    wakeups: Wakeups = field(default_factory=Wakeups)
    round_robin: int = 0
    _worker_seen: dict[str, float] = field(default_factory=dict)

    def should_touch_worker(self, worker_id: str, now: float, every_s: float = 5.0) -> bool:
        """Whether to write a worker's ``last_seen_at`` now: at most every ``every_s`` per
        worker and process, so a busy worker does not add a write to every claim."""
        last = self._worker_seen.get(worker_id)
        if last is not None and now - last < every_s:
            return False
        if len(self._worker_seen) > 100_000:
            self._worker_seen.clear()
        self._worker_seen[worker_id] = now
        return True

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def now(self) -> float:
        return self.clock()

    @contextmanager
    def timed(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.metrics.db.labels(operation).observe(time.perf_counter() - start)

    def read(self, operation: str, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one read-only transaction (SQLite: a WAL snapshot, no write lock);
        once more on a fresh connection if the pooled one turned out dead."""
        with self.timed(operation):
            return read_once_more_if_dead(
                self.read_factory, fn, self.metrics.db_retries.labels(operation).inc
            )


async def get_runtime(request: Request) -> Runtime:
    """Async, like every dependency that does no I/O: FastAPI runs a plain ``def``
    dependency in a worker thread, a hand-off per request for nothing."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

#: A path id: non-negative and within a 32-bit column (larger ones are unknown ids anyway).
Id = Annotated[int, Path(ge=0, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10**9)]
