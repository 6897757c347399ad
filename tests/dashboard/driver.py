"""Drive a real experiment through the HTTP API: workers in threads claim jobs, report a
synthetic learning curve step by step, post output and complete, so that the dashboard has
rungs, curves, promotions and stops to show."""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

import httpx

ADMIN = "test-admin-token"


def asha_document(name: str, *, form: str = "promotion", max_trials: int = 30) -> dict[str, Any]:
    return {
        "name": name,
        "metric": "val_loss",
        "mode": "min",
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "layers": {"type": "int", "low": 1, "high": 6},
            "optimizer": {"type": "categorical",
                          "choices": ["sgd", "adam", "<script>alert(2)</script>"]},
        },
        "scheduler": {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 27,
                      "form": form},
        "sampler": {"type": "random"},
        "budget": {"max_trials": max_trials, "max_concurrent": 6},
        "seed": 3,
        "lease_ttl_s": 3600,
    }


def objective(params: dict[str, Any], step: int, number: int) -> float:
    """A noisy, decreasing learning curve whose floor depends on the parameters."""
    lr = float(params["lr"])
    floor = 0.3 * (math.log10(lr) + 2.0) ** 2 + 0.05 * abs(int(params["layers"]) - 3)
    floor += {"sgd": 0.3, "adam": 0.0}.get(str(params["optimizer"]), 0.15)
    noise = random.Random(number * 1000 + step).gauss(0.0, 0.01)
    return round(floor + 1.0 / math.sqrt(step) + noise, 6)


def client(base_url: str, token: str = ADMIN) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                        timeout=30.0)


def create_experiment(base_url: str, document: dict[str, Any]) -> int:
    with client(base_url) as c:
        r = c.post("/api/v1/experiments", json=document)
        r.raise_for_status()
        return int(r.json()["id"])


def _work(base_url: str, experiment_id: int, worker_id: str, max_jobs: int,
          errors: list[BaseException]) -> None:
    try:
        with client(base_url) as c:
            c.post("/api/v1/workers", json={
                "worker_id": worker_id, "host": f"gpu-box-{worker_id[-1]}",
                "gpus": ["NVIDIA A100 80GB", "NVIDIA A100 80GB"], "cpus": 32, "slots": 2,
                "labels": {"zone": "test"},
            }).raise_for_status()
            jobs = idle = 0
            while jobs < max_jobs:
                r = c.post(f"/api/v1/experiments/{experiment_id}/claims",
                           json={"worker_id": worker_id, "wait_s": 0})
                if r.status_code == 410:
                    return
                if r.status_code == 204:
                    idle += 1
                    if idle > 100:
                        return
                    time.sleep(0.02)
                    continue
                r.raise_for_status()
                idle, jobs = 0, jobs + 1
                job = r.json()
                token, number = job["lease_token"], job["trial_number"]
                stopped = False
                for step in range(job["from_resource"] + 1, job["to_resource"] + 1):
                    value = objective(job["params"], step, number)
                    d = c.post(f"/api/v1/jobs/{job['job_id']}/reports", json={
                        "lease_token": token, "step": step, "value": value,
                        "metrics": {"accuracy": round(1 - value / 3, 4)},
                    })
                    d.raise_for_status()
                    if d.json()["decision"] == "stop":
                        stopped = True
                        break
                c.post(f"/api/v1/jobs/{job['job_id']}/output", json={
                    "lease_token": token,
                    "text": f"epoch {job['to_resource']}: <b>loss</b> & co\nworker {worker_id}\n",
                })
                if not stopped:
                    c.post(f"/api/v1/jobs/{job['job_id']}/complete", json={
                        "lease_token": token, "checkpoint": f"s3://ckpt/trial-{number}",
                    }).raise_for_status()
    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
        errors.append(exc)


def run_workers(base_url: str, experiment_id: int, n_workers: int = 3,
                jobs_each: int = 1000) -> None:
    """Run ``n_workers`` threads until the experiment is over or each did ``jobs_each``."""
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_work, args=(base_url, experiment_id, f"worker-{i}", jobs_each,
                                             errors))
        for i in range(n_workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]


def hold_one_job(base_url: str, experiment_id: int, worker_id: str = "worker-0") -> dict[str, Any]:
    """Lease a job and report once without completing it: a running trial."""
    with client(base_url) as c:
        r = c.post(f"/api/v1/experiments/{experiment_id}/claims",
                   json={"worker_id": worker_id, "wait_s": 0})
        r.raise_for_status()
        job: dict[str, Any] = r.json()
        c.post(f"/api/v1/jobs/{job['job_id']}/reports", json={
            "lease_token": job["lease_token"], "step": job["from_resource"] + 1,
            "value": objective(job["params"], job["from_resource"] + 1, job["trial_number"]),
        }).raise_for_status()
        return job
