"""Group commit: the write transactions of one experiment that queue up run as one.

The transactions of one experiment serialise on its lock (``tuner.coordinator``). On
PostgreSQL, :meth:`api.writer.Writer.write_async` hands those that name their experiment to
:class:`GroupCommit`: the ones that arrive while that experiment's transactions run wait
here, and the next transaction runs all of them (up to ``max_group``), one after another in
the order they came, each over its own :class:`~tuner.storage.sql.store.SqlStore` as if alone,
between one BEGIN and one COMMIT. The group takes the lock once and flushes the log once,
where each member paid for both before (docs/PERFORMANCE.md). Every member is answered after
the commit, so an acknowledged write is as durable as before.

A group decides exactly what its members would decide one after another in that order:
each sees what the ones before it wrote. When a member raises (a stale lease, a conflicting
report), the group rolls back and every member runs again in a transaction of its own (the
runner's part, :data:`RunGroup`): no answer depends on a member that failed.

At most ``slots`` groups of one experiment run at once: one holds the lock and the next
waits at it inside PostgreSQL, so the hand-over needs no round trip to this process. The
others wait here, in memory, where they hold no connection that another experiment could
use.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tuner.storage.sql import SqlStore

T = TypeVar("T")


@dataclass(eq=False)
class Member:
    """One transaction's work, waiting for its group: ``fn`` runs over the group's
    connection; ``future`` gets its result (or exception) after the group ended."""

    operation: str
    fn: Callable[[SqlStore], Any]
    future: asyncio.Future[Any]

    def settle(self, result: Any) -> None:
        if not self.future.done():  # done: the caller left (its request was cancelled)
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if self.future.done():
            return
        if isinstance(exc, asyncio.CancelledError):  # the drain itself was cancelled
            self.future.cancel()
        else:
            self.future.set_exception(exc)


#: Runs one group and settles every member of it (the runtime's retries, slots and metrics).
RunGroup = Callable[[list[Member]], Awaitable[None]]


@dataclass
class _Queue:
    waiting: deque[Member] = field(default_factory=deque)
    running: int = 0  # groups of this experiment in flight


class GroupCommit:
    """Per-experiment queues of write transactions, drained in groups (module docstring).

    Made on the event loop that runs it (its futures belong to that loop)."""

    def __init__(self, run: RunGroup, *, slots: int, max_group: int) -> None:
        self._run = run
        self.slots = slots
        self.max_group = max_group
        self._queues: dict[int, _Queue] = {}
        self._drains: set[asyncio.Task[None]] = set()  # strong references while they run

    async def submit(self, experiment_id: int, operation: str, fn: Callable[[SqlStore], T]) -> T:
        """Run ``fn`` in a transaction of this experiment's next group; its result once the
        group committed."""
        member = Member(operation, fn, asyncio.get_running_loop().create_future())
        queue = self._queues.get(experiment_id)
        if queue is None:
            queue = self._queues[experiment_id] = _Queue()
        queue.waiting.append(member)
        if queue.running < self.slots:
            queue.running += 1
            drain = asyncio.create_task(self._drain(experiment_id, queue))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        result: T = await member.future
        return result

    async def _drain(self, experiment_id: int, queue: _Queue) -> None:
        """Run the waiting members of one experiment, a group at a time, until none wait."""
        try:
            while queue.waiting:
                n = min(self.max_group, len(queue.waiting))
                group = [queue.waiting.popleft() for _ in range(n)]
                group = [m for m in group if not m.future.done()]  # callers that left
                if not group:
                    continue
                try:
                    await self._run(group)
                except BaseException as exc:  # the runner settles members; never leave one
                    for member in group:
                        member.fail(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            queue.running -= 1
            idle = queue.running == 0 and not queue.waiting
            if idle and self._queues.get(experiment_id) is queue:
                del self._queues[experiment_id]
