"""PASHA (Bohdal et al., "PASHA: Efficient HPO and NAS with Progressive Resource Allocation",
ICLR 2023): ASHA in promotion form whose maximum resource starts at the second rung and grows
by one rung whenever the ranking of the top two unlocked rungs is not yet stable.

Stability is judged with soft ranking: the trials of the top unlocked rung ``t``, sorted by
their value there, must keep their place within a group of "equivalent" trials in rung
``t - 1`` (values within ``epsilon`` of each other). ``epsilon`` is estimated automatically
from the noise already seen: the 90th percentile of the value gaps of pairs of configurations
whose order flipped between the two rungs below (``t - 2`` and ``t - 1``); 0 (strict ranking)
while there is no such history. Estimating it from the top pair itself would excuse every
flip it measures.

Cost: the test reads the top rungs in full, so a PASHA decision costs O(size of rung t - 1),
unlike ASHA's O(log n); PASHA keeps those rungs small by design.

The unlocked rung is the scheduler's only state; it is returned with every action and
persisted by the coordinator under the experiment's lock, so every replica agrees on it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.domain import Decision, Reason, RungEntry
from tuner.schedulers.asha import Asha, judge_promotion_form
from tuner.schedulers.base import Action, Promote, Snapshot, StartTrial, Wait

EPSILON_PERCENTILE = 90.0


#: Pairs are compared among at most this many trials (the best of the lower rung).
MAX_COMPARED = 1000


def estimate_epsilon(previous: dict[int, float], top: dict[int, float]) -> float:
    """90th percentile of |gap| in ``previous`` over pairs whose order flips in ``top``."""
    common = [
        n for n in previous if n in top and math.isfinite(previous[n]) and math.isfinite(top[n])
    ]
    if len(common) < 2:
        return 0.0
    common.sort(key=lambda n: (previous[n], n))
    common = common[:MAX_COMPARED]
    before = np.array([previous[n] for n in common])
    after = np.array([top[n] for n in common])
    d_before = before[:, None] - before[None, :]
    d_after = after[:, None] - after[None, :]
    flipped = np.triu(d_before * d_after < 0, k=1)
    gaps = np.abs(d_before[flipped])
    if gaps.size == 0:
        return 0.0
    return float(np.percentile(gaps, EPSILON_PERCENTILE))


def ranking_is_stable(previous: list[RungEntry], top: list[RungEntry], eps: float) -> bool:
    """Soft-ranking test of the paper: each top-rung trial stays in its previous-rung group.

    ``previous`` and ``top`` are sorted best first. The group of position i is every trial
    whose previous-rung value lies within ``eps`` of the i-th best one: a contiguous range of
    the sorted values, found by bisection, so the test costs O(m log m).
    """
    top = [e for e in top if math.isfinite(e.loss)]  # diverged trials never rank
    top_numbers = {e.trial_number for e in top}
    prev = [e for e in previous if e.trial_number in top_numbers and math.isfinite(e.loss)]
    if len(top) < 2 or len(prev) < 2:
        return True
    losses = [e.loss for e in prev]
    index_of = {e.trial_number: i for i, e in enumerate(prev)}
    for position, entry in enumerate(top[: len(prev)]):
        anchor = losses[position]
        low = bisect.bisect_left(losses, anchor - eps)
        high = bisect.bisect_right(losses, anchor + eps)
        if not low <= index_of.get(entry.trial_number, -1) < high:
            return False
    return True


@dataclass(frozen=True)
class Pasha:
    """ASHA (promotion form, bracket 0) with a progressively unlocked top rung."""

    min_resource: int
    max_resource: int
    eta: int = 3

    @property
    def asha(self) -> Asha:
        return Asha(self.min_resource, self.max_resource, self.eta)

    @property
    def levels(self) -> tuple[int, ...]:
        return self.asha.levels

    @property
    def is_stopping(self) -> bool:
        return False

    def rank_limit(self, n: int) -> int | None:
        return None  # no rank test: judged at completion only

    def brackets(self) -> tuple[int, ...]:
        return (0,)

    def bracket_bottom(self, bracket: int) -> int:
        return 0

    def unlocked(self, snap: Snapshot) -> tuple[int, dict[str, Any] | None]:
        """The top unlocked rung, and the state to persist when it just grew."""
        top = len(self.levels) - 1
        t = int(snap.scheduler_state.get("top_rung", min(1, top)))
        if t >= top:
            return t, None
        previous, current = snap.rung_entries(0, t - 1), snap.rung_entries(0, t)
        eps = 0.0
        if t >= 2:
            older = {e.trial_number: e.loss for e in snap.rung_entries(0, t - 2)}
            eps = estimate_epsilon(older, {e.trial_number: e.loss for e in previous})
        if ranking_is_stable(previous, current, eps):
            return t, None
        return t + 1, {"top_rung": t + 1, "epsilon": eps}

    def next_action(self, snap: Snapshot) -> Action:
        t, state = self.unlocked(snap)
        promotion = self.asha.best_promotion(snap, below=t)
        action: Action
        if promotion is not None:
            action = Promote(
                trial_number=promotion.trial_number,
                bracket=0,
                from_rung=promotion.from_rung,
                rung=promotion.rung,
                from_resource=promotion.from_resource,
                resource=promotion.resource,
                reason=Reason(
                    "pasha.promote",
                    bracket=0,
                    rung=promotion.from_rung,
                    resource=promotion.from_resource,
                    rank=promotion.reason.rank,
                    n=promotion.reason.n,
                    threshold=promotion.reason.threshold,
                    note=f"unlocked up to rung {t}",
                ),
                scheduler_state=state,
            )
            return action
        base = self.asha.start_or_wait(snap)
        if isinstance(base, StartTrial):
            return StartTrial(
                bracket=0,
                rung=0,
                resource=self.levels[0],
                reason=base.reason,
                scheduler_state=state,
            )
        if isinstance(base, Wait):
            return Wait(base.reason, scheduler_state=state)
        return base

    def judge(self, snap: Snapshot, bracket: int, rung: int, entry: RungEntry) -> Decision:
        return judge_promotion_form(len(self.levels) - 1, rung, entry, bracket)
