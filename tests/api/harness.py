"""Worker threads that drive a real server over HTTP, and the checks of what they saw.

Each worker loops: claim (long poll) -> report every step -> complete, until the experiment
is over (410). Everything a worker was told is logged with client-side times, so the test
can check that no two workers held the same trial at once and that every acknowledged
report is in the database.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import text

from tuner.storage.database import make_engine

FINAL_STATES = {"completed", "stopped", "failed", "cancelled"}


def objective(params: dict[str, Any], step: int) -> float:
    """A deterministic learning curve: better with lr near 0.01, improving with steps."""
    lr = float(params["lr"])
    return abs(math.log10(lr) + 2.0) + 1.0 / step + 0.001 * int(params["width"]) / 512


@dataclass
class Lease:
    job_id: int
    trial_id: int
    worker: int
    claimed_at: float  # when the claim's answer arrived
    released_at: float | None = None  # when the completion was sent (or the stop received)


@dataclass
class Log:
    lock: threading.Lock = field(default_factory=threading.Lock)
    leases: list[Lease] = field(default_factory=list)
    acknowledged: dict[tuple[int, int], float] = field(default_factory=dict)
    conflicting_acks: list[tuple[int, int, float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def ack(self, trial_id: int, step: int, value: float) -> None:
        with self.lock:
            old = self.acknowledged.setdefault((trial_id, step), value)
            if old != value:
                self.conflicting_acks.append((trial_id, step, old, value))


class Worker(threading.Thread):
    """One worker agent. Retries calls that failed on the network (server restarts)."""

    def __init__(
        self, index: int, urls: list[str], token: str, experiment_id: int, log: Log,
        deadline: float, wait_s: float = 2.0,
    ) -> None:
        super().__init__(name=f"worker-{index}", daemon=True)
        self.index, self.urls, self.log = index, urls, log
        self.experiment_id, self.deadline, self.wait_s = experiment_id, deadline, wait_s
        self.headers = {"Authorization": f"Bearer {token}"}
        self.rng = random.Random(index)
        self.clients = [httpx.Client(base_url=u, headers=self.headers, timeout=30.0) for u in urls]

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response | None:
        """POST to a random server; None after network errors until the deadline."""
        while time.monotonic() < self.deadline:
            client = self.rng.choice(self.clients)
            try:
                answer = client.post(f"/api/v1{path}", json=body)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            with self.log.lock:
                self.log.statuses[answer.status_code] += 1
            if answer.status_code >= 500:
                self.log.errors.append(f"{path}: {answer.status_code} {answer.text[:200]}")
                time.sleep(0.2)
                continue
            return answer
        return None

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # a test harness edge: record, the test fails on it
            self.log.errors.append(f"worker {self.index}: {exc!r}")
        finally:
            for client in self.clients:
                client.close()

    def _loop(self) -> None:
        job: dict[str, Any] | None = None
        while time.monotonic() < self.deadline:
            if job is None:
                answer = self._post(
                    f"/experiments/{self.experiment_id}/claims",
                    {"worker_id": f"w{self.index}", "wait_s": self.wait_s},
                )
                if answer is None or answer.status_code == 410:
                    return
                if answer.status_code == 204:
                    continue
                if answer.status_code != 200:
                    self.log.errors.append(f"claim: {answer.status_code} {answer.text[:200]}")
                    return
                job = answer.json()
            lease = Lease(job["job_id"], job["trial_id"], self.index, time.monotonic())
            with self.log.lock:
                self.log.leases.append(lease)
            job = self._train(job, lease)

    def _train(self, job: dict[str, Any], lease: Lease) -> dict[str, Any] | None:
        """Train the job; the next job when the answer that ended it brought one (odd
        workers ask for it: half the workers use each way of getting work)."""
        token = job["lease_token"]
        ask = {"next": {"worker_id": f"w{self.index}"}} if self.index % 2 else {}
        for step in range(job["from_resource"] + 1, job["to_resource"] + 1):
            value = objective(job["params"], step)
            answer = self._post(
                f"/jobs/{job['job_id']}/reports",
                {"lease_token": token, "step": step, "value": value, **ask},
            )
            if answer is None or answer.status_code == 409:
                lease.released_at = time.monotonic()
                return None  # lease lost: stop training, like a zombie must
            if answer.status_code != 200:
                self.log.errors.append(f"report: {answer.status_code} {answer.text[:200]}")
                return None
            self.log.ack(job["trial_id"], step, value)
            if answer.json()["decision"] == "stop":
                lease.released_at = time.monotonic()
                following: dict[str, Any] | None = answer.json()["next"]
                return following
        lease.released_at = time.monotonic()
        answer = self._post(f"/jobs/{job['job_id']}/complete", {"lease_token": token, **ask})
        if answer is not None and answer.status_code not in (200, 409):
            self.log.errors.append(f"complete: {answer.status_code} {answer.text[:200]}")
        if answer is None or answer.status_code != 200:
            return None
        following = answer.json()["next"]
        return following


def run_workers(
    urls: list[str], token: str, experiment_id: int, n_workers: int, timeout_s: float,
    log: Log | None = None,
) -> tuple[Log, list[Worker]]:
    log = log or Log()
    deadline = time.monotonic() + timeout_s
    workers = [
        Worker(i, urls, token, experiment_id, log, deadline) for i in range(n_workers)
    ]
    for worker in workers:
        worker.start()
    return log, workers


def join(workers: list[Worker], timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    for worker in workers:
        worker.join(max(0.0, end - time.monotonic()))


# ---- checks ----------------------------------------------------------------------------------
def check_no_job_twice(log: Log) -> None:
    """No job id was handed out twice, and no trial was held by two workers at once."""
    job_ids = [lease.job_id for lease in log.leases]
    assert len(job_ids) == len(set(job_ids)), "a job was handed out twice"
    by_trial: dict[int, list[Lease]] = defaultdict(list)
    for lease in log.leases:
        by_trial[lease.trial_id].append(lease)
    for trial_id, leases in by_trial.items():
        leases.sort(key=lambda lease: lease.claimed_at)
        for before, after in zip(leases, leases[1:], strict=False):
            assert before.released_at is not None, f"trial {trial_id}: lease never released"
            assert after.claimed_at >= before.released_at, (
                f"trial {trial_id}: job {after.job_id} was claimed while job "
                f"{before.job_id} was still held"
            )


def check_database(db_url: str, experiment_id: int, log: Log, eta: int) -> dict[str, int]:
    """Acknowledged reports stored; promotion rule held at every promotion; all trials final."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = {
                (row.trial_id, row.step): row.value
                for row in conn.execute(
                    text(
                        "SELECT r.trial_id, r.step, r.value FROM reports r "
                        "JOIN trials t ON t.id = r.trial_id WHERE t.experiment_id = :e"
                    ),
                    {"e": experiment_id},
                )
            }
            lost = [key for key, value in log.acknowledged.items() if stored.get(key) != value]
            assert not lost, f"acknowledged reports lost or changed: {lost[:5]}"
            assert not log.conflicting_acks, log.conflicting_acks[:5]
            states = dict(conn.execute(
                text("SELECT state, count(*) FROM trials WHERE experiment_id = :e GROUP BY state"),
                {"e": experiment_id},
            ).all())
            assert set(states) <= FINAL_STATES, f"trials not final: {states}"
            experiment_state = conn.execute(
                text("SELECT state FROM experiments WHERE id = :e"), {"e": experiment_id}
            ).scalar_one()
            assert experiment_state == "completed"
            leased = conn.execute(
                text("SELECT count(*) FROM jobs WHERE experiment_id = :e AND state = 'leased'"),
                {"e": experiment_id},
            ).scalar_one()
            assert leased == 0
            n_promotions = check_promotions(conn, experiment_id, eta)
            n_judged = check_stopping(conn, experiment_id, eta)
    finally:
        engine.dispose()
    return {"reports": len(stored), "promotions": n_promotions, "judged": n_judged, **states}


def _rungs(conn: Any, experiment_id: int) -> dict[tuple[int, int], list[tuple[int, float, int]]]:
    """Each rung's results in the order they were written: (rank kind, loss, trial number)."""
    results: dict[tuple[int, int], list[tuple[int, float, int]]] = defaultdict(list)
    for row in conn.execute(
        text(
            "SELECT bracket, rung, trial_number, loss_rank_kind, loss FROM rung_results "
            "WHERE experiment_id = :e ORDER BY id"
        ),
        {"e": experiment_id},
    ):
        results[(row.bracket, row.rung)].append((row.loss_rank_kind, row.loss, row.trial_number))
    return results


def _decisions(conn: Any, experiment_id: int, rule: str) -> list[tuple[str, dict[str, Any], int]]:
    found = []
    for kind, reason, number in conn.execute(
        text(
            "SELECT d.kind, d.reason, t.number FROM decisions d "
            "JOIN trials t ON t.id = d.trial_id WHERE t.experiment_id = :e"
        ),
        {"e": experiment_id},
    ):
        reason = json.loads(reason) if isinstance(reason, str) else reason
        if reason.get("rule") == rule:
            found.append((kind, reason, number))
    return found


def check_stopping(conn: Any, experiment_id: int, eta: int) -> int:
    """Recompute every stopping-form judgement: the trial was among the first ``n`` results
    of its rung (written under the experiment's lock), and it continued exactly when fewer
    than ``max(1, n // eta)`` of those ranked before it."""
    results = _rungs(conn, experiment_id)
    judged = _decisions(conn, experiment_id, "asha.stopping")
    for kind, reason, number in judged:
        n, threshold = reason["n"], reason["threshold"]
        assert threshold == max(1, n // eta), reason
        seen = results[(reason["bracket"], reason["rung"])][:n]
        assert len(seen) == n, reason
        mine = next(entry for entry in seen if entry[2] == number)
        better = sum(1 for entry in seen if entry < mine)
        expected = "continue" if better < threshold else "stop"
        assert kind == expected, f"trial {number}: {kind}, but {better} ranked before it: {reason}"
    return len(judged)


def check_promotions(conn: Any, experiment_id: int, eta: int) -> int:
    """Recompute every promotion: rung results are written under the experiment's lock, so
    the first ``n`` of a rung by id are exactly what the decider saw; the promoted trial must
    rank within their top ``n // eta``."""
    results: dict[tuple[int, int], list[tuple[int, int, float, int]]] = defaultdict(list)
    for row in conn.execute(
        text(
            "SELECT id, bracket, rung, trial_number, loss_rank_kind, loss FROM rung_results "
            "WHERE experiment_id = :e ORDER BY id"
        ),
        {"e": experiment_id},
    ):
        results[(row.bracket, row.rung)].append(
            (row.loss_rank_kind, row.trial_number, row.loss, row.id)
        )
    promotions = conn.execute(
        text(
            "SELECT d.reason, t.number FROM decisions d JOIN trials t ON t.id = d.trial_id "
            "WHERE t.experiment_id = :e"
        ),
        {"e": experiment_id},
    ).all()
    count = 0
    for reason, number in promotions:
        if isinstance(reason, str):
            reason = json.loads(reason)
        if reason.get("rule") != "asha.promote":
            continue
        count += 1
        n, threshold, rank = reason["n"], reason["threshold"], reason["rank"]
        assert threshold == n // eta and 0 <= rank < threshold, reason
        seen = results[(reason["bracket"], reason["rung"])][:n]
        assert len(seen) == n, reason
        order = sorted((kind, loss, num) for kind, num, loss, _ in seen)
        top = {num for _, _, num in order[:threshold]}
        assert number in top, f"trial {number} promoted from outside the top {threshold}: {reason}"
    promoted = conn.execute(
        text("SELECT count(*) FROM rung_results WHERE experiment_id = :e AND status = 1"),
        {"e": experiment_id},
    ).scalar_one()
    assert promoted == count, f"{promoted} promoted results but {count} promotion decisions"
    return count
