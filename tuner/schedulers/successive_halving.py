"""Synchronous successive halving and Hyperband (Li et al., JMLR 2018).

A *plan* is a list of brackets ``(s, n)``: ``n`` configurations start at rung ``s`` and each
rung keeps ``floor(n_i / η)`` of the previous one. A rung promotes only once it is full (every
trial that entered it has a result; failed and diverged trials count, ranked worst), and then
exactly its top ``floor(n_i / η)``. Hyperband's plan is every bracket ``s = 0 .. s_max`` with
``n = ceil((s_max + 1) / (s_max - s + 1) * η**(s_max - s))``, repeated ``iterations`` times:
for ``R = 81, r = 1, η = 3`` that is 81x1 -> 27x3 -> 9x9 -> 3x27 -> 1x81, 34x3 -> ... , 5x81.

Bracket ids stored on trials are positions in the plan; rung indices are global.
With ``parallel_brackets`` idle workers start the next bracket while a rung waits for
stragglers; without it, brackets run one after another.

When the budget stops new trials while a bracket is part-way started, that bracket goes on
as successive halving of the trials it has.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.domain import Decision, Reason, RungEntry
from tuner.errors import ConfigError
from tuner.schedulers.asha import judge_promotion_form
from tuner.schedulers.base import Action, Finished, Promote, Snapshot, StartTrial, Wait
from tuner.schedulers.rungs import hyperband_n, rung_levels, rung_sizes


@dataclass(frozen=True)
class SyncSuccessiveHalving:
    """Synchronous brackets run from a fixed plan of ``(s, n)`` pairs."""

    min_resource: int
    max_resource: int
    eta: int
    plan: tuple[tuple[int, int], ...]
    parallel_brackets: bool = True

    def __post_init__(self) -> None:
        levels = rung_levels(self.min_resource, self.max_resource, self.eta)
        top = len(levels) - 1
        if not self.plan:
            raise ConfigError("a successive-halving plan needs at least one bracket")
        for s, n in self.plan:
            if not 0 <= s <= top:
                raise ConfigError(f"bracket s={s} is outside 0..{top}")
            need = self.eta ** (top - s)
            if n < need:
                raise ConfigError(
                    f"n_configs is {n}, but bracket s={s} needs at least {need} "
                    f"(eta**{top - s}) configurations to reach max_resource"
                )

    @classmethod
    def hyperband(
        cls,
        min_resource: int,
        max_resource: int,
        eta: int,
        iterations: int = 1,
        parallel_brackets: bool = True,
    ) -> SyncSuccessiveHalving:
        top = len(rung_levels(min_resource, max_resource, eta)) - 1
        plan = tuple(
            (s, hyperband_n(s, top, eta)) for _ in range(iterations) for s in range(top + 1)
        )
        return cls(min_resource, max_resource, eta, plan, parallel_brackets)

    @property
    def levels(self) -> tuple[int, ...]:
        return rung_levels(self.min_resource, self.max_resource, self.eta)

    @property
    def is_stopping(self) -> bool:
        return False

    def rank_limit(self, n: int) -> int | None:
        return None  # no rank test: judged at completion only

    def brackets(self) -> tuple[int, ...]:
        return tuple(range(len(self.plan)))

    def bracket_bottom(self, bracket: int) -> int:
        return self.plan[bracket][0]

    def sizes(self, bracket: int, started: int, can_start: bool) -> tuple[int, ...]:
        """Rung sizes of a bracket; cut to the started trials once no trial may start."""
        s, n = self.plan[bracket]
        n_eff = n if can_start or started >= n else started
        if n_eff == 0:
            return ()
        return rung_sizes(n_eff, len(self.levels) - s, self.eta)

    def next_action(self, snap: Snapshot) -> Action:
        levels = self.levels
        open_brackets = 0
        for b, (s, n) in enumerate(self.plan):
            started = snap.n_in_bracket(b)
            sizes = self.sizes(b, started, snap.can_start)
            if not sizes:
                continue  # never started and never will be
            last = s + len(sizes) - 1
            if snap.rung_size(b, last) >= sizes[-1]:
                continue  # finished
            open_brackets += 1
            for i in reversed(range(len(sizes) - 1)):
                k = s + i
                n_k = snap.rung_size(b, k)
                if n_k < sizes[i]:
                    continue  # this rung still waits for stragglers
                entry = snap.best_unpromoted(b, k, sizes[i + 1])
                if entry is not None:
                    return Promote(
                        trial_number=entry.trial_number,
                        bracket=b,
                        from_rung=k,
                        rung=k + 1,
                        from_resource=levels[k],
                        resource=levels[k + 1],
                        reason=Reason(
                            "sha.promote",
                            bracket=b,
                            rung=k,
                            resource=levels[k],
                            rank=entry.rank,
                            n=n_k,
                            threshold=sizes[i + 1],
                        ),
                    )
            if started < n and snap.can_start:
                return StartTrial(
                    bracket=b,
                    rung=s,
                    resource=levels[s],
                    reason=Reason(
                        "sha.start", bracket=b, rung=s, n=n, note=f"{started + 1} of {n}"
                    ),
                )
            if not self.parallel_brackets:
                break
        if open_brackets == 0:
            return Finished(Reason("sha.done", note="every bracket finished"))
        if snap.n_active == 0:
            return Finished(Reason("sha.stalled", note="rungs incomplete and nothing active"))
        return Wait(Reason("sha.wait", note="rungs wait for stragglers"))

    def judge(self, snap: Snapshot, bracket: int, rung: int, entry: RungEntry) -> Decision:
        return judge_promotion_form(len(self.levels) - 1, rung, entry, bracket)
