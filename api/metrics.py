"""Prometheus metrics of one server process (a registry per app, so tests may build many)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from tuner.coordinator import Assignment, ClaimResult, ExperimentOver

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class Metrics:
    """Counters of the job protocol and latency histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.claims = Counter(
            "tuner_claims", "Claims answered, by outcome (job, nothing, over)", ["outcome"],
            registry=r,
        )
        self.reports = Counter("tuner_reports", "Reports stored or repeated", registry=r)
        self.decisions = Counter(
            "tuner_decisions", "Decisions answered to workers, by kind", ["kind"], registry=r
        )
        self.promotions = Counter("tuner_promotions", "Promotions handed out", registry=r)
        self.stops = Counter("tuner_stops", "Trials told to stop", registry=r)
        self.lease_expiries = Counter(
            "tuner_lease_expiries", "Leases that expired and were reaped", registry=r
        )
        self.requests = Histogram(
            "tuner_http_request_duration_seconds", "Request latency by route",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.db_retries = Counter(
            "tuner_db_retries",
            "Transactions run again after a transient database error (deadlock, "
            "serialization failure, lost connection, SQLite busy), by operation; a plain "
            "report that met a database error on the fast path (and took the full path) "
            "counts as report_fast",
            ["operation"], registry=r,
        )
        self.write_groups = Histogram(
            "tuner_write_group_size",
            "Transactions of one experiment committed together (groups of two or more)",
            buckets=(2, 3, 4, 6, 8, 12, 16, 24, 32), registry=r,
        )
        self.db = Histogram(
            "tuner_db_transaction_duration_seconds",
            "Database transaction latency by operation (a group's, for each of its members)",
            ["operation"], buckets=_LATENCY_BUCKETS, registry=r,
        )

    def count_claim(self, result: ClaimResult) -> None:
        if isinstance(result, Assignment):
            self.claims.labels("job").inc()
            if result.job.attempt == 0 and result.job.from_resource > 0:
                self.promotions.inc()
        elif isinstance(result, ExperimentOver):
            self.claims.labels("over").inc()
        else:
            self.claims.labels("nothing").inc()

    def count_decision(self, kind: str) -> None:
        self.decisions.labels(kind).inc()
        if kind == "stop":
            self.stops.inc()


class LatencyMiddleware:
    """Times every request and labels it with its route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status[0])).observe(
                time.perf_counter() - start
            )
