"""What one transaction's SQL store remembers between its statements (:class:`TransactionCache`).

Each entry is either true for the whole transaction (what the store itself read or wrote,
while it holds the rows) or only until the next statement runs (what a statement returned
beside its own answer, for the call that follows it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuner.domain import Experiment, Job

#: A rung's first open result by rank: (loss_rank_kind, loss, trial_number), or None.
Head = tuple[int, float, int] | None
#: An experiment's counters: by (bracket, rung) its (n_results, n_left, first open result),
#: and by bracket its number of trials.
Counters = tuple[dict[tuple[int, int], tuple[int, int, Head]], dict[int, int]]


@dataclass
class TransactionCache:
    """The per-transaction caches of a :class:`tuner.storage.sql.store.SqlStore`."""

    #: Jobs and experiments as this transaction last read or wrote them (``known_job``).
    jobs: dict[int, Job] = field(default_factory=dict)
    experiments: dict[int, Experiment] = field(default_factory=dict)
    #: Counters read by ``next_queued_job``, for the next snapshot of that experiment.
    prefetched: dict[int, Counters] = field(default_factory=dict)
    #: Rung sizes that this transaction read under the experiment's lock or that its own
    #: rung inserts returned (PostgreSQL), exact while it holds the lock: a snapshot needs
    #: no counter read for them.
    rung_sizes: dict[tuple[int, int, int], int] = field(default_factory=dict)
    #: The stopping test's count that a judging report read with its writes, by rung: (its
    #: loss, the limit counted up to, how many finite results are better, up to that limit).
    ranks: dict[tuple[int, int, int], tuple[float, int, int]] = field(default_factory=dict)
    #: The rung that a judging report read with its writes (PostgreSQL), its size then, and
    #: the report's trial: that trial's insert there may go with the next statement.
    judged: tuple[tuple[int, int, int], int, int] | None = None
    #: Until the next statement: the experiment that the statement just run locked and read
    #: (``get_experiment(lock=True)`` answers from it) ...
    locked: Experiment | None = None
    #: ... and (experiment id, counters, oldest queued job id) that it read for a claim.
    claim_read: tuple[int, Counters, int | None] | None = None

    def statement_runs(self) -> None:
        """Forget what is true only until the next statement."""
        self.locked = self.claim_read = None

    def counters_changed(self, experiment_id: int) -> None:
        """This transaction changed the experiment's rung or bracket counters."""
        self.prefetched.pop(experiment_id, None)
        self.rung_sizes.clear()
        self.ranks.clear()
        self.judged = None

    def seen(self, job: Job) -> Job:
        self.jobs[job.id] = job
        return job
