"""The scheduler contract: a pure rule over a small read interface.

A scheduler never touches storage, the clock or a global random generator. The coordinator
builds a :class:`Snapshot` (backed by indexed queries in the database, or by sorted lists in
memory), asks the scheduler, and writes what it answers, all under the experiment's lock.

Rung indices are global: rung ``k`` has resource ``levels[k]`` in every bracket, and bracket
``s`` uses rungs ``s .. len(levels) - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tuner.domain import Decision, Reason, RungEntry


class Snapshot(Protocol):
    """What a scheduler may read about one experiment, at the moment it decides.

    Losses are direction-normalised (lower is better; non-finite results are ``inf``) and
    ties break on the trial number, so "the top m of a rung" is one well-defined set.
    """

    @property
    def n_trials(self) -> int:
        """Trials created so far (every bracket)."""

    @property
    def n_active(self) -> int:
        """Trials holding or waiting for a job."""

    @property
    def can_start(self) -> bool:
        """Whether the budget still admits a new trial."""

    @property
    def scheduler_state(self) -> dict[str, Any]:
        """Small persistent state a scheduler asked to keep (PASHA's unlocked rung)."""

    def n_in_bracket(self, bracket: int) -> int:
        """Trials started in ``bracket``."""

    def rung_size(self, bracket: int, rung: int) -> int:
        """Results recorded at ``rung`` of ``bracket``."""

    def best_unpromoted(self, bracket: int, rung: int, top: int) -> RungEntry | None:
        """The best entry among the ``top`` best of the rung that was never promoted from it.

        ``None`` when ``top`` is 0 or all of the top ``top`` were promoted already.
        """

    def count_better(self, bracket: int, rung: int, loss: float, limit: int) -> int:
        """How many results at the rung have a loss strictly below ``loss``, capped at ``limit``."""

    def rung_entries(self, bracket: int, rung: int) -> list[RungEntry]:
        """Every entry of a rung, best first. Only for small rungs (PASHA's top two)."""


@dataclass(frozen=True, slots=True)
class StartTrial:
    """Sample a new configuration and train it from 0 to ``resource``."""

    bracket: int
    rung: int
    resource: int
    reason: Reason
    scheduler_state: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Promote:
    """Train a paused trial from ``from_resource`` to ``resource`` (its checkpoint)."""

    trial_number: int
    bracket: int
    from_rung: int
    rung: int
    from_resource: int
    resource: int
    reason: Reason
    scheduler_state: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing can be handed out now; ask again later."""

    reason: Reason
    scheduler_state: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """Nothing will ever be handed out again."""

    reason: Reason
    scheduler_state: dict[str, Any] | None = None


Action = StartTrial | Promote | Wait | Finished


class Scheduler(Protocol):
    """A pure rule. Implementations are frozen dataclasses holding only configuration."""

    @property
    def levels(self) -> tuple[int, ...]:
        """Resource of every rung, ending at ``max_resource``."""

    @property
    def is_stopping(self) -> bool:
        """Whether trials run toward ``max_resource`` and are judged at each rung they pass."""

    def rank_limit(self, n: int) -> int | None:
        """The stopping test at a rung of ``n`` results (a new one included): it continues iff
        fewer than this many are better (None: this rule has no rank test)."""

    def brackets(self) -> tuple[int, ...]:
        """The brackets this rule may use (early-stopping rates, or sync bracket ids)."""

    def bracket_bottom(self, bracket: int) -> int:
        """The rung where trials of ``bracket`` start."""

    def next_action(self, snap: Snapshot) -> Action:
        """What to hand out to an idle worker.

        Args:
            snap: the experiment's rungs and counters, read under its lock.

        Returns:
            ``Promote`` (deepest promotion first), ``StartTrial``, ``Wait`` or ``Finished``.
        """

    def judge(self, snap: Snapshot, bracket: int, rung: int, entry: RungEntry) -> Decision:
        """Decide for a trial whose result at ``rung`` is already recorded in ``snap``.

        Promotion-form rules answer ``PAUSE`` (wait for a promotion) or ``COMPLETE`` at the
        top rung; the stopping form answers ``CONTINUE`` or ``STOP``.
        """
