"""ASHA (Li et al., MLSys 2020), asynchronous Hyperband over several ASHA brackets, and PASHA.

Symbols: ``r = min_resource``, ``R = max_resource``, ``η = eta``, ``s`` = bracket (minimum
early-stopping rate: bracket ``s`` starts trials at rung ``s``).

**Promotion form** (Algorithm 2 of the paper): to hand out a job, scan the rungs from the top;
a trial in rung ``k`` is promotable iff it is among the top ``floor(|rung k| / η)`` of rung ``k``
and was never promoted from rung ``k``; the best promotable one trains from ``r_k`` to
``r_{k+1}``. If none is, a new trial enters its bracket's bottom rung.

**Stopping form**: a trial trains toward ``R``; at each rung it reaches it is ranked among all
values recorded at that rung, itself included, and continues iff its rank is within
``max(floor(n / η), 1)``; ties favour it. This is the rule of Optuna's
``SuccessiveHalvingPruner`` and of Determined's ASHA.

**Asynchronous Hyperband**: one ASHA ladder per bracket; a new trial's bracket is drawn from
the experiment seed (blake2b, never ``hash()``) in proportion to Hyperband's ``n_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuner.domain import Decision, DecisionKind, Reason, RungEntry
from tuner.errors import ConfigError
from tuner.rng import stable_uniform
from tuner.schedulers.base import Action, Finished, Promote, Snapshot, StartTrial, Wait
from tuner.schedulers.rungs import hyperband_n, rung_levels


def judge_promotion_form(top: int, rung: int, entry: RungEntry, bracket: int) -> Decision:
    """A job that reached its rung: wait there for a promotion, or complete at the top."""
    if not math.isfinite(entry.loss):
        return Decision(
            DecisionKind.STOP,
            Reason("non_finite", bracket=bracket, rung=rung, note="diverged: value not finite"),
            stop_rung=rung,
        )
    if rung >= top:
        return Decision(DecisionKind.COMPLETE, Reason("max_resource", bracket=bracket, rung=rung))
    return Decision(DecisionKind.PAUSE, Reason("await_promotion", bracket=bracket, rung=rung))


@dataclass(frozen=True)
class Asha:
    """ASHA in promotion or stopping form over one or several brackets."""

    min_resource: int
    max_resource: int
    eta: int = 3
    bracket_rates: tuple[int, ...] = (0,)
    stopping: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        levels = rung_levels(self.min_resource, self.max_resource, self.eta)  # validates
        if not self.bracket_rates:
            raise ConfigError("bracket_rates must not be empty")
        for s in self.bracket_rates:
            if not 0 <= s < len(levels):
                raise ConfigError(f"bracket {s} is outside 0..{len(levels) - 1}")

    @property
    def levels(self) -> tuple[int, ...]:
        return rung_levels(self.min_resource, self.max_resource, self.eta)

    @property
    def top(self) -> int:
        return len(self.levels) - 1

    @property
    def is_stopping(self) -> bool:
        return self.stopping

    def rank_limit(self, n: int) -> int | None:
        return self._stopping_limit(n) if self.stopping else None

    def _stopping_limit(self, n: int) -> int:
        """The stopping form's test: ``max(floor(n / η), 1)`` results better stop a new one."""
        return max(n // self.eta, 1)

    def brackets(self) -> tuple[int, ...]:
        return self.bracket_rates

    def bracket_bottom(self, bracket: int) -> int:
        return bracket

    def draw_bracket(self, trial_number: int) -> int:
        """The bracket of the ``trial_number``-th trial, in proportion to Hyperband's n_s."""
        if len(self.bracket_rates) == 1:
            return self.bracket_rates[0]
        weights = [hyperband_n(s, self.top, self.eta) for s in self.bracket_rates]
        u = stable_uniform(self.seed, "bracket", trial_number) * sum(weights)
        for s, weight in zip(self.bracket_rates, weights, strict=True):
            if u < weight:
                return s
            u -= weight
        return self.bracket_rates[-1]

    def best_promotion(self, snap: Snapshot, below: int | None = None) -> Promote | None:
        """Algorithm 2's scan: deepest rung first, the best promotable trial of its top 1/η."""
        highest = self.top if below is None else below
        for k in reversed(range(highest)):
            for s in self.bracket_rates:
                if s > k:
                    continue
                n = snap.rung_size(s, k)
                threshold = n // self.eta
                entry = snap.best_unpromoted(s, k, threshold)
                if entry is not None:
                    reason = Reason(
                        "asha.promote",
                        bracket=s,
                        rung=k,
                        resource=self.levels[k],
                        rank=entry.rank,
                        n=n,
                        threshold=threshold,
                    )
                    return Promote(
                        trial_number=entry.trial_number,
                        bracket=s,
                        from_rung=k,
                        rung=k + 1,
                        from_resource=self.levels[k],
                        resource=self.levels[k + 1],
                        reason=reason,
                    )
        return None

    def start_or_wait(self, snap: Snapshot) -> Action:
        if snap.can_start:
            s = self.draw_bracket(snap.n_trials)
            target = self.top if self.stopping else s
            return StartTrial(
                bracket=s,
                rung=target,
                resource=self.levels[target],
                reason=Reason("asha.start", bracket=s, rung=s, note="no promotable trial"),
            )
        if snap.n_active:
            return Wait(Reason("budget", note="budget spent; waiting for active trials"))
        return Finished(Reason("budget", note="budget spent and nothing active"))

    def next_action(self, snap: Snapshot) -> Action:
        if not self.stopping:
            promotion = self.best_promotion(snap)
            if promotion is not None:
                return promotion
        return self.start_or_wait(snap)

    def judge(self, snap: Snapshot, bracket: int, rung: int, entry: RungEntry) -> Decision:
        if not self.stopping or rung >= self.top or not math.isfinite(entry.loss):
            return judge_promotion_form(self.top, rung, entry, bracket)
        n = snap.rung_size(bracket, rung)
        threshold = self._stopping_limit(n)
        better = snap.count_better(bracket, rung, entry.loss, limit=threshold)
        reason = Reason(
            "asha.stopping",
            bracket=bracket,
            rung=rung,
            resource=self.levels[rung],
            rank=better,
            n=n,
            threshold=threshold,
        )
        if better < threshold:
            return Decision(DecisionKind.CONTINUE, reason)
        return Decision(DecisionKind.STOP, reason, stop_rung=rung)
