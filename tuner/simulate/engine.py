"""The discrete-event loop: virtual workers drive the real coordinator over a MemoryStore.

Each worker does what the worker agent does, on a virtual clock: ``claim`` a job; train it,
calling ``report`` (at every integer step, or only at the rungs a stopping-form job passes),
``heartbeat`` when a gap between calls would approach the lease's time to live, and
``complete`` at the end (or stop when a report answers ``stop``). Every call is one
coordinator transaction at one virtual instant, so the simulator predicts what the service
decides: it never reimplements a scheduling rule.

Events sit in a heap ordered by ``(time, seq)``; ``seq`` is a counter, so simultaneous events
run in the order they were scheduled and a run is deterministic. A worker whose claim is
answered "nothing now" waits, without polling, until a job ends or a lease is reaped: only
those events can make new work. A claim does not depend on who asks, so once one worker is
told "nothing now", the others are not asked again until the next such event.

A dropped job's worker vanishes for that job at a random moment (its reports stop and it
takes new work at once, as a restarted agent would); the job's lease expires
``lease_ttl_s`` after its last renewal and the reaper (``reap``, run at that instant)
re-queues it from its last checkpoint.
"""

from __future__ import annotations

import gc
import heapq
import math
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, cast

from tuner import coordinator
from tuner.config import ExperimentConfig, build_scheduler, parse_config
from tuner.domain import DecisionKind
from tuner.errors import ConfigError, LeaseExpired
from tuner.rng import derive_rng
from tuner.simulate.jobs import COMPLETE, HEARTBEAT, REPORT, JobRun, plan_calls, report_steps
from tuner.simulate.objectives import BoundObjective, Objective, get_objective
from tuner.simulate.result import RungSummary, SimulationResult
from tuner.simulate.timing import TimeModel
from tuner.storage.memory import MemoryStore

Progress = Callable[[int, int | None, float], None]
"""Called with (trials started, max_trials or None, virtual time) now and then."""

_CALL, _DROP = 0, 1
_REAPER = -1
_PROGRESS_EVERY = 1024
_RUNNING_FOREVER = ("asha", "async_hyperband", "pasha")


class Simulator:
    """One simulated experiment. Build it, call :meth:`run` once; ``store`` stays readable."""

    def __init__(
        self,
        config: ExperimentConfig | dict[str, Any],
        workers: int,
        seed: int | None = None,
        objective: str | Objective = "curves",
        time_model: str | TimeModel = "constant",
        straggler_sigma: float = 0.0,
        drop_prob: float = 0.0,
        report_every_step: bool = False,
        horizon_s: float | None = None,
        progress: Progress | None = None,
    ) -> None:
        config = parse_config(config)
        if seed is not None:
            config = config.model_copy(update={"seed": seed})
        _check_settings(config, workers, straggler_sigma, drop_prob, horizon_s)
        self.config = config
        self.workers = workers
        self.seed = config.seed
        self.objective = objective if isinstance(objective, Objective) else get_objective(objective)
        self.bound = BoundObjective(self.objective, config.space)
        self.time_model = TimeModel.parse(time_model)
        self.timing = self.time_model.bind(config.space)
        self.straggler_sigma, self.drop_prob = straggler_sigma, drop_prob
        self.report_every_step, self.horizon_s = report_every_step, horizon_s
        self.progress = progress

        scheduler = build_scheduler(config)
        self.levels = scheduler.levels
        self.stopping = scheduler.is_stopping
        self.max_resource = self.levels[-1]
        self.sign = config.sign  # built-in objectives are minimised: report sign * f
        self.ttl = config.lease_ttl_s
        self.heartbeat_s = config.lease_ttl_s / 2

        self.store = MemoryStore()
        self.experiment_id = coordinator.create_experiment(self.store, config, 0.0).id
        self._heap: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self._runs: list[JobRun | None] = [None] * workers
        self._idle: deque[int] = deque()
        self._curves: dict[int, Callable[[float], float]] = {}
        self._unit_s: dict[int, float] = {}
        self._stragglers = derive_rng(config.seed, "simulate", "stragglers")
        self._drops = derive_rng(config.seed, "simulate", "drops")

        self.now = 0.0
        self._n_busy = 0
        self._busy_area = 0.0  # integral of the number of busy workers over time
        self._area_at_last_start = 0.0
        self.last_trial_started_at = 0.0
        self._max_times: list[float] = []  # when each trial completed at max_resource
        self.n_jobs = self.n_claims = self.n_events = 0
        self.n_dropped = self.n_reaped = 0
        self.resource_used = self.resource_wasted = 0
        self.over = self.stalled = self.truncated = False
        self._ran = False

    # ---- the loop ----------------------------------------------------------------------
    def run(self) -> SimulationResult:
        """Run until the experiment is over and every worker is idle (or the horizon)."""
        if self._ran:
            raise RuntimeError("a Simulator runs once; build another")
        self._ran = True
        paused = gc.isenabled()
        if paused:  # see _drain_events
            gc.disable()
        try:
            return self._run()
        finally:
            if paused:
                gc.enable()

    def _run(self) -> SimulationResult:
        for worker in range(self.workers):
            if self.over or not self._claim(worker):
                self._idle.extend(range(worker, self.workers))
                break
        while self._drain_events() and not self.over:
            self._wake_idle()  # nothing in flight: ask once more
            if not self._heap:
                self.stalled = not self.over
                break
        if self.progress is not None:
            self._report_progress()
        return self._result()

    def _drain_events(self) -> bool:
        """Process events in order; False when the horizon cut the run.

        The cyclic garbage collector is paused meanwhile: the store only grows, its values
        hold no reference cycles, and each full collection would walk all of it again (about
        15-20% of a large run's time).
        """
        heap, horizon = self._heap, self.horizon_s
        while heap:
            time, _, worker, action = heap[0]
            if horizon is not None and time > horizon:
                self.truncated = True
                self._advance(horizon)
                return False
            heapq.heappop(heap)
            self._advance(time)
            self.n_events += 1
            if worker == _REAPER:
                self._reap()
            elif action == _DROP:
                self._drop(worker)
            else:
                self._call(worker)
            if self.progress is not None and self.n_events % _PROGRESS_EVERY == 0:
                self._report_progress()
        return True

    def _advance(self, time: float) -> None:
        self._busy_area += self._n_busy * (time - self.now)
        self.now = time

    def _push(self, time: float, worker: int, action: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, worker, action))

    def _report_progress(self) -> None:
        if self.progress is None:
            return
        n_trials = self.store.get_experiment(self.experiment_id).n_trials
        self.progress(n_trials, self.config.budget.max_trials, self.now)

    # ---- claims ------------------------------------------------------------------------
    def _claim(self, worker: int) -> bool:
        """Ask for a job for ``worker`` now; start it and return True if there is one."""
        self.n_claims += 1
        found = coordinator.claim(self.store, self.experiment_id, f"w{worker}", self.now)
        if isinstance(found, coordinator.Assignment):
            self._start(worker, found)
            return True
        if isinstance(found, coordinator.ExperimentOver):
            self.over = True
        return False

    def _wake_idle(self) -> bool:
        """Hand out work to waiting workers until the answer is "nothing now"."""
        idle = self._idle
        while idle and not self.over:
            if not self._claim(idle[0]):
                return False
            idle.popleft()
        return True

    def _free(self, worker: int) -> None:
        """``worker`` ended its job: it claims at once; then the waiting ones may."""
        self._runs[worker] = None
        if self.over:
            self._idle.append(worker)
        elif self._claim(worker):
            self._wake_idle()
        else:
            self._idle.append(worker)

    # ---- a job -------------------------------------------------------------------------
    def _start(self, worker: int, assignment: coordinator.Assignment) -> None:
        job, trial, now = assignment.job, assignment.trial, self.now
        self.n_jobs += 1
        if job.from_resource == 0 and job.attempt == 0:
            self._area_at_last_start, self.last_trial_started_at = self._busy_area, now
        curve = self._curves.get(trial.id)
        if curve is None:
            curve = self._curves[trial.id] = self.bound.curve(trial.params)
            self._unit_s[trial.id] = self.timing.seconds_per_unit(trial.params)
        unit_s = self._unit_s[trial.id]
        if self.straggler_sigma > 0:  # a mean-one lognormal slow-down of this job
            sigma = self.straggler_sigma
            unit_s *= math.exp(sigma * float(self._stragglers.standard_normal()) - sigma**2 / 2)
        steps = report_steps(
            job.from_resource, job.to_resource, self.levels, self.stopping, self.report_every_step
        )
        calls = plan_calls(now, job.from_resource, job.to_resource, unit_s, steps, self.heartbeat_s)
        drop_at = None
        if self.drop_prob > 0 and float(self._drops.random()) < self.drop_prob:
            duration = (job.to_resource - job.from_resource) * unit_s
            drop_at = now + float(self._drops.random()) * duration
        run = JobRun(assignment, now, unit_s, calls, drop_at, curve)
        self._runs[worker] = run
        self._n_busy += 1
        self._schedule_next(worker, run)

    def _schedule_next(self, worker: int, run: JobRun) -> None:
        time = run.calls[run.next_call][0]
        if run.drop_at is not None and run.drop_at <= time:
            self._push(run.drop_at, worker, _DROP)
        else:
            self._push(time, worker, _CALL)

    def _call(self, worker: int) -> None:
        run = cast(JobRun, self._runs[worker])  # a call event belongs to a running job
        _, kind, step = run.calls[run.next_call]
        run.next_call += 1
        store, now = self.store, self.now
        try:
            if kind == HEARTBEAT:
                decision = coordinator.heartbeat(store, run.job_id, run.token, now)
                step = run.checkpoint_step
            elif kind == REPORT:
                value = self.sign * run.curve(step / self.max_resource)
                decision = coordinator.report(
                    store, run.job_id, run.token, step, value, now, checkpoint=run.checkpoint(step)
                )
                run.checkpoint_step = step
            else:
                value = self.sign * run.curve(step / self.max_resource)
                decision = coordinator.complete(
                    store, run.job_id, run.token, now, value=value, checkpoint=run.checkpoint(step)
                )
                if decision.kind is DecisionKind.COMPLETE:
                    self._max_times.append(now)
        except LeaseExpired:  # cannot happen while calls are spaced under the ttl
            self._end(worker, run, run.checkpoint_step)
            return
        if kind == COMPLETE or decision.kind is not DecisionKind.CONTINUE:
            self._end(worker, run, step)
        else:
            self._schedule_next(worker, run)

    def _end(self, worker: int, run: JobRun, step: int) -> None:
        self.resource_used += step - run.from_resource
        self._n_busy -= 1
        self._free(worker)

    def _drop(self, worker: int) -> None:
        """The worker vanishes for this job: no more calls; the lease runs out later."""
        run = cast(JobRun, self._runs[worker])
        drop_at = cast(float, run.drop_at)  # a drop event belongs to a job that drops
        self.n_dropped += 1
        trained = min(
            math.floor((drop_at - run.started_at) / run.unit_s + 1e-9),
            run.to_resource - run.from_resource,
        )
        self.resource_used += trained
        self.resource_wasted += trained - (run.checkpoint_step - run.from_resource)
        expires = self.store.get_job(run.job_id).lease_expires_at
        if expires is not None:
            self._push(math.nextafter(expires, math.inf), _REAPER, _CALL)
        self._n_busy -= 1
        self._free(worker)

    def _reap(self) -> None:
        reaped = coordinator.reap(self.store, self.now)
        self.n_reaped += len(reaped)
        if len(reaped) == 100:  # reap's default batch: more may be due at this instant
            self._push(self.now, _REAPER, _CALL)
        if reaped:
            self._wake_idle()

    # ---- the answer --------------------------------------------------------------------
    def _result(self) -> SimulationResult:
        store, eid = self.store, self.experiment_id
        experiment = store.get_experiment(eid)
        trials = store.trials(eid)
        states = Counter(str(t.state) for t in trials)
        top = len(self.levels) - 1
        best_key: tuple[int, float, int] | None = None
        best = None
        for result in store.rung_results(eid):
            if not math.isfinite(result.loss):
                continue  # diverged, failed or cancelled: recorded as worst
            key = (0 if result.rung == top else 1, result.loss, result.trial_number)
            if best_key is None or key < best_key:
                best_key, best = key, result
        rungs = [
            RungSummary(b, k, self.levels[k], n, promoted)
            for (b, k), (n, promoted) in sorted(store.rung_counts(eid).items())
        ]
        wall = self.now
        capacity = self.workers * wall
        window = self.workers * self.last_trial_started_at
        return SimulationResult(
            n_trials=experiment.n_trials,
            n_jobs=self.n_jobs,
            n_claims=self.n_claims,
            n_events=self.n_events,
            wall_time=wall,
            utilization=self._busy_area / capacity if capacity > 0 else 0.0,
            utilization_while_starting=(
                self._area_at_last_start / window if window > 0 else math.nan
            ),
            last_trial_started_at=self.last_trial_started_at,
            time_to_first_max_resource=self._max_times[0] if self._max_times else None,
            n_completed_at_max=len(self._max_times),
            n_completed_at_max_while_starting=sum(
                1 for t in self._max_times if t <= self.last_trial_started_at
            ),
            best_value=best.value if best is not None else None,
            best_trial=best.trial_number if best is not None else None,
            best_params=dict(trials[best.trial_number].params) if best is not None else None,
            best_resource=self.levels[best.rung] if best is not None else None,
            resource_used=self.resource_used,
            resource_charged=experiment.resource_used,
            resource_wasted=self.resource_wasted,
            worker_hours=self._busy_area / 3600.0,
            n_dropped=self.n_dropped,
            n_reaped=self.n_reaped,
            experiment_state=str(experiment.state),
            stalled=self.stalled,
            truncated=self.truncated,
            trial_states=dict(sorted(states.items())),
            rungs=rungs,
            settings={
                "workers": self.workers,
                "seed": self.seed,
                "objective": self.objective.name,
                "objective_params": "by name" if self.bound.by_name else "unit-cube mapping",
                "time_model": self.time_model.describe(),
                "straggler_sigma": self.straggler_sigma,
                "drop_prob": self.drop_prob,
                "report_every_step": self.report_every_step,
                "horizon_s": self.horizon_s,
            },
            config=self.config.model_dump(mode="json"),
        )


def _check_settings(
    config: ExperimentConfig,
    workers: int,
    sigma: float,
    drop_prob: float,
    horizon_s: float | None,
) -> None:
    if workers < 1:
        raise ConfigError(f"workers is {workers}, but must be >= 1")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"straggler_sigma is {sigma}, but must be >= 0")
    if not 0 <= drop_prob < 1:
        raise ConfigError(f"drop_prob is {drop_prob}, but must be in [0, 1)")
    if horizon_s is not None and not horizon_s > 0:
        raise ConfigError(f"horizon_s is {horizon_s}, but must be > 0")
    budget = config.budget
    endless = (
        config.scheduler.type in _RUNNING_FOREVER
        and budget.max_trials is None
        and budget.max_resource_units is None
        and budget.time_limit_s is None
    )
    if endless and horizon_s is None:
        raise ConfigError(
            f"budget: a {config.scheduler.type} experiment without max_trials, "
            "max_resource_units or time_limit_s never ends; set one, or give a horizon"
        )


def simulate(
    config: ExperimentConfig | dict[str, Any],
    workers: int,
    seed: int | None = None,
    objective: str | Objective = "curves",
    time_model: str | TimeModel = "constant",
    straggler_sigma: float = 0.0,
    drop_prob: float = 0.0,
    progress: Progress | None = None,
    *,
    report_every_step: bool = False,
    horizon_s: float | None = None,
) -> SimulationResult:
    """Simulate one experiment on ``workers`` virtual workers and measure it.

    Args:
        config: the experiment document (validated here; raises ConfigError naming the field).
        workers: virtual workers, each training one job at a time.
        seed: replaces the document's seed (sampling, brackets) and seeds the straggler and
            drop noise; ``None`` keeps the document's seed, i.e. predicts that experiment.
        objective: a built-in objective name (``curves``, ``branin``, ``hartmann6``) or an
            :class:`Objective`.
        time_model: ``"constant"``, ``"constant:SECONDS"``, ``"param:NAME"`` or a
            :class:`TimeModel`: virtual seconds per resource unit.
        straggler_sigma: each job's duration is multiplied by a mean-one lognormal with this
            sigma (0: none).
        drop_prob: probability that a job's worker vanishes part-way (the lease expires and
            the reaper re-queues the job).
        progress: called now and then with (trials started, max_trials, virtual time).
        report_every_step: report at every integer step (default: only where the scheduler
            decides, i.e. a promotion-form job calls only ``complete``).
        horizon_s: stop at this virtual time (``truncated`` in the result).

    Returns:
        The :class:`SimulationResult`.

    Raises:
        ConfigError: an invalid document or setting.
    """
    return Simulator(
        config,
        workers,
        seed,
        objective,
        time_model,
        straggler_sigma,
        drop_prob,
        report_every_step,
        horizon_s,
        progress,
    ).run()
