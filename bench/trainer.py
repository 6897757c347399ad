"""A synthetic training worker process for ``bench/faults.py`` and ``bench/soak.py``.

One process runs one or more workers (asyncio tasks, one ``httpx.AsyncClient`` each). A
worker claims a job from any running experiment, "trains" it step by step (a sleep), reports
every step (with a checkpoint every ``checkpoint_every`` steps), heartbeats, and completes
it; a retried job resumes at its ``from_resource`` (the trial's last checkpoint) and
reports the steps after it again. Client-side faults are injected at random, seeded per
worker: a report sent twice (``dup``), two steps sent in the wrong order or an old step
sent again later (``reorder``), and an answer dropped (``drop``: the request is written to a
raw socket that is closed without reading the answer, then sent again).

Every call is written, as one JSON line flushed at once, to the process's log: what was
sent, when (``time.time()`` before sending and after the answer, the clock the server's
leases use), and what came back (status -1: an answer dropped on purpose, 0: none came).
``bench/invariants.py`` checks the service against these logs, so a line is written after
its answer arrives and before anything else happens: a worker killed with SIGKILL loses at
most the record of its last call. A completion, the one call that ends a job here, is also
written before it is sent (status -2), so that a completion in flight when its worker was
killed is known to have perhaps ended the job.

Usage (started by ``bench/fleet.py``)::

    python bench/trainer.py '{"urls": [...], "token": "...", "names": ["w0"], "log": "..."}'
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

#: Answers after which a call is not sent again: the service decided.
FINAL_STATUSES = frozenset({200, 201, 204, 400, 401, 403, 404, 410, 413, 422})


@dataclass
class Options:
    """What the orchestrator passes, as JSON on the command line."""

    urls: list[str]
    token: str
    names: list[str]
    log: str
    stop_file: str
    seed: int = 0
    step_s: float = 0.25
    checkpoint_every: int = 2
    heartbeat_s: float = 1.0
    lease_ttl_s: float = 4.0
    p_dup: float = 0.0
    p_reorder: float = 0.0
    p_drop: float = 0.0
    per_job_values: bool = True
    claim_wait_s: float = 1.0
    timeout_s: float = 30.0


def base_value(params: dict[str, Any], step: int) -> float:
    """A learning curve: better near lr = 1e-2, improving with the step."""
    lr = float(params.get("lr", 0.01))
    return (math.log10(lr) + 2.0) ** 2 + 1.0 / step


def value_at(params: dict[str, Any], step: int, job_id: int, per_job: bool) -> float:
    """The value a job reports at ``step``. ``per_job``: a retried job trains the step again
    and gets a slightly different value (training is rarely bit-reproducible), so a retry's
    report of a step the lost job reported differs from it."""
    value = base_value(params, step)
    if per_job:
        value += ((job_id * 2654435761) % 1000) * 1e-6
    return round(value, 9)


def epoch_of(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def checkpoint_name(trial_id: int, step: int) -> str:
    return f"ckpt/{trial_id}/{step}"


class Log:
    """One JSON object per line, flushed per line (a SIGKILL loses at most a partial line)."""

    def __init__(self, path: str) -> None:
        self.file = Path(path).open("a", buffering=1)  # noqa: SIM115 - lives with the process

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")


@dataclass
class Answer:
    status: int  # 0: no answer (connection refused or reset, timeout)
    body: Any
    t_send: float
    t_recv: float
    error: str = ""

    @property
    def code(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("error", ""))
        return self.error


@dataclass
class Job:
    data: dict[str, Any]
    renewed_at: float  # t_recv of the latest accepted call (an upper bound on its renewal)
    lost: bool = False  # refused (409): another worker may hold the trial now
    stop: bool = False
    last_checkpoint: int = 0
    acked: list[int] = field(default_factory=list)

    @property
    def id(self) -> int:
        return int(self.data["job_id"])


class Worker:
    """One synthetic training worker: claim, train, report, heartbeat, complete."""

    def __init__(self, opts: Options, name: str, log: Log, index: int) -> None:
        self.opts, self.name, self.log = opts, name, log
        self.rng = random.Random(f"{opts.seed}:{name}")
        self.url_index = index % len(opts.urls)
        self.headers = {"Authorization": f"Bearer {opts.token}"}
        self.http = httpx.AsyncClient(timeout=opts.timeout_s, headers=self.headers)

    @property
    def url(self) -> str:
        return self.opts.urls[self.url_index]

    async def post(self, path: str, body: dict[str, Any]) -> Answer:
        t_send = time.time()
        try:
            r = await self.http.post(self.url + path, json=body)
        except httpx.HTTPError as exc:
            # A replica that is down: the next call goes to the next one (a load balancer's
            # failover, in effect).
            self.url_index = (self.url_index + 1) % len(self.opts.urls)
            return Answer(0, None, t_send, time.time(), type(exc).__name__)
        try:
            data = r.json() if r.content else None
        except ValueError:
            data = None
        return Answer(r.status_code, data, t_send, time.time())

    async def drop(self, kind: str, job: Job, path: str, body: dict[str, Any],
                   **extra: Any) -> None:
        """Send a request and close the connection without reading the answer (logged with
        status -1: the server may or may not have handled it)."""
        t_send = time.time()
        await self.send_and_close(path, body)
        self.record(kind, job, Answer(-1, None, t_send, time.time(), "dropped"), **extra)

    async def send_and_close(self, path: str, body: dict[str, Any]) -> None:
        parts = urlsplit(self.url)
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {self.opts.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            _, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(head + payload)
            await writer.drain()
            writer.close()
        except OSError:
            pass

    def record(self, kind: str, job: Job | None, ans: Answer, **extra: Any) -> None:
        data = job.data if job else {}
        decision = ans.body.get("decision") if isinstance(ans.body, dict) else None
        self.log.write(
            ev="call", w=self.name, kind=kind, job=data.get("job_id"), trial=data.get("trial_id"),
            exp=data.get("experiment_id"), status=ans.status, code=ans.code,
            decision=decision, ts=ans.t_send, tr=ans.t_recv, **extra,
        )

    async def call(self, kind: str, job: Job, path: str, body: dict[str, Any],
                   **extra: Any) -> Answer:
        """Send until the service decides (an answer in FINAL_STATUSES, or a 409 other than
        'send it again'), or until the lease has surely run out and the job is given up."""
        delay = 0.05
        while True:
            ans = await self.post(path, body)
            self.record(kind, job, ans, **extra)
            if ans.status == 200:
                job.renewed_at = max(job.renewed_at, ans.t_recv)
                return ans
            if ans.status in FINAL_STATUSES or (ans.status == 409 and ans.code != "conflict"):
                return ans
            if time.time() > job.renewed_at + 3 * self.opts.lease_ttl_s:
                return ans  # the server is gone for longer than a lease: give the job up
            await asyncio.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 1.0)

    async def report(self, job: Job, step: int, fault: str = "") -> Answer:
        data = job.data
        body: dict[str, Any] = {
            "lease_token": data["lease_token"], "step": step,
            "value": value_at(data["params"], step, job.id, self.opts.per_job_values),
        }
        if step % self.opts.checkpoint_every == 0:
            body["checkpoint"] = checkpoint_name(data["trial_id"], step)
        path = f"/api/v1/jobs/{job.id}/reports"
        extra = {"step": step, "value": body["value"],
                 "ckpt": step if "checkpoint" in body else None}
        if fault == "drop":
            await self.drop("report", job, path, body, fault="dropped", **extra)
        ans = await self.call("report", job, path, body, fault=fault, **extra)
        if fault == "dup" and ans.status == 200:
            again = await self.call("report", job, path, body, step=step, value=body["value"],
                                    ckpt=None, fault="dup2", first=ans.body.get("decision"))
            if again.status != 200:
                ans = again
        self.settle(job, ans, step, "checkpoint" in body)
        return ans

    def settle(self, job: Job, ans: Answer, step: int, checkpointed: bool) -> None:
        if ans.status == 200:
            job.acked.append(step)
            if checkpointed:
                job.last_checkpoint = max(job.last_checkpoint, step)
            if ans.body.get("decision") == "stop":
                job.stop = True
        else:  # refused (bench/invariants.py fails the run on a retry's duplicate_report)
            job.lost = True

    async def heartbeats(self, job: Job) -> None:
        path = f"/api/v1/jobs/{job.id}/heartbeat"
        while not (job.lost or job.stop):
            await asyncio.sleep(self.opts.heartbeat_s * (0.8 + 0.4 * self.rng.random()))
            if job.lost or job.stop:
                return
            ans = await self.post(path, {"lease_token": job.data["lease_token"]})
            self.record("heartbeat", job, ans)
            if ans.status == 200:
                job.renewed_at = max(job.renewed_at, ans.t_recv)
                if ans.body.get("decision") != "continue":
                    job.stop = True  # stopped, or (a zombie's) job already settled
            elif ans.status == 409:
                job.lost = True

    async def train(self, job: Job) -> None:
        data, opts = job.data, self.opts
        start, end = data["from_resource"], data["to_resource"]
        steps = list(range(start + 1, end + 1))
        beat = asyncio.create_task(self.heartbeats(job))
        try:
            i = 0
            while i < len(steps) and not (job.lost or job.stop):
                await asyncio.sleep(opts.step_s * (0.5 + self.rng.random()))
                u = self.rng.random()
                if u < opts.p_reorder and i + 1 < len(steps):
                    # The later step overtakes the earlier one.
                    await self.report(job, steps[i + 1], "reorder")
                    if not (job.lost or job.stop):
                        await self.report(job, steps[i], "reorder")
                    i += 2
                    continue
                u -= opts.p_reorder
                fault = ""
                if u < opts.p_dup:
                    fault = "dup"
                elif u < opts.p_dup + opts.p_drop:
                    fault = "drop"
                await self.report(job, steps[i], fault)
                if (not fault and job.acked and self.rng.random() < opts.p_reorder
                        and not (job.lost or job.stop)):
                    # A late retransmission of an older step.
                    await self.report(job, self.rng.choice(job.acked), "late")
                i += 1
            if job.lost or job.stop:
                return
            body = {"lease_token": data["lease_token"], "checkpoint": checkpoint_name(
                data["trial_id"], end)}
            path = f"/api/v1/jobs/{job.id}/complete"
            fault = ""
            u = self.rng.random()
            if u < opts.p_drop:
                fault = "drop"
                await self.drop("complete", job, path, body, step=end, fault="dropped")
            elif u < opts.p_drop + opts.p_dup:
                fault = "dup"
            # Written before the call: a worker killed while its completion is in flight
            # leaves this line, so the checks know the job may have ended then.
            now = time.time()
            self.record("complete", job, Answer(-2, None, now, now, "sending"), step=end)
            ans = await self.call("complete", job, path, body, step=end, fault=fault)
            if fault == "dup" and ans.status == 200:
                await self.call("complete", job, path, body, step=end, fault="dup2",
                                first=ans.body.get("decision"))
        finally:
            job.stop = job.stop or not job.lost
            beat.cancel()

    async def run(self) -> None:
        stop_file = Path(self.opts.stop_file)
        delay = 0.1
        while not stop_file.exists():
            ans = await self.post("/api/v1/claims",
                                  {"worker_id": self.name, "wait_s": self.opts.claim_wait_s})
            if ans.status != 200:
                if ans.status not in (204, 410):
                    self.record("claim", None, ans)
                    await asyncio.sleep(delay * (0.5 + self.rng.random()))
                    delay = min(delay * 2, 1.0)
                continue
            delay = 0.1
            data = ans.body
            ckpt = data.get("checkpoint")
            self.log.write(
                ev="lease", w=self.name, job=data["job_id"], trial=data["trial_id"],
                exp=data["experiment_id"], rung=data["rung"], frm=data["from_resource"],
                to=data["to_resource"], ckpt=ckpt, ts=ans.t_send, tr=ans.t_recv,
                until=epoch_of(data["lease_expires_at"]),
            )
            await self.train(Job(data, renewed_at=ans.t_recv))
        await self.http.aclose()


async def main(opts: Options) -> None:
    log = Log(opts.log)
    log.write(ev="start", pid=os.getpid(), names=opts.names, t=time.time())
    await asyncio.gather(*(Worker(opts, n, log, i).run() for i, n in enumerate(opts.names)))


if __name__ == "__main__":
    asyncio.run(main(Options(**json.loads(sys.argv[1]))))
