"""Background work of a server process: a daemon thread that calls a function every few
seconds until the app's lifespan ends (the reaper, table upkeep)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``fn(stop)`` every ``interval_s`` (none at all when it is 0) until stopped;
    ``stop`` is set once stopping begins, for work that loops. An exception is logged as
    ``event=<name>_failed`` and the next interval tries again (a process edge, such as the
    database restarting, must not end the thread)."""

    def __init__(
        self, name: str, interval_s: float, fn: Callable[[threading.Event], object]
    ) -> None:
        self.name, self._interval_s, self._fn = name, interval_s, fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"tuner-{name}", daemon=True)

    def start(self) -> None:
        if self._interval_s > 0:
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._fn(self._stop)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    log.exception("event=%s_failed", self.name)
                else:  # a dropped connection: expected, and the next pass takes a fresh one
                    log.warning("event=%s_failed detail=connection_lost", self.name)
            except Exception:
                log.exception("event=%s_failed", self.name)
