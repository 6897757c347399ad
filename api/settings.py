"""Deployment settings of the server, read once from ``TUNER_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server process needs to start.

    ``database_url``: SQLite file (one server process) or PostgreSQL (any number).
    ``admin_token``: the first admin token; when unset and no admin token exists, one is
    generated and logged once at WARNING. ``worker_token``: a worker-role token to store at
    start (docker-compose gives it to the workers, so they need no admin rights).
    ``reaper_interval_s``: how often expired leases are
    reaped (0 turns the reaper off). ``claim_recheck_s``: how often a long-polling claim looks
    at the database again for work that another replica made available.
    ``upkeep_interval_s``: PostgreSQL: how often the service's tables are looked at for a
    VACUUM (ANALYZE) of its own while they grow fast (``api.upkeep``; 0 turns it off and
    leaves them to autovacuum alone).
    ``write_concurrency``: how many write transactions of this process run at once on
    PostgreSQL (SQLite: always one), in worker threads and, separately, on the event loop
    (the job protocol's routes; also the size of that connection pool), where those of one
    experiment are committed in groups, at most ``api.writer.EXPERIMENT_SLOTS`` groups at once
    (``api.group_commit``). The rest wait their turn in memory.
    A few are enough to keep the database busy, and more only compete for the experiment's
    lock and the interpreter's GIL (docs/PERFORMANCE.md).
    """

    model_config = SettingsConfigDict(env_prefix="TUNER_", extra="ignore")

    database_url: str = "sqlite:///./tuner.db"
    admin_token: SecretStr | None = None
    worker_token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    reaper_interval_s: float = Field(2.0, ge=0)
    upkeep_interval_s: float = Field(5.0, ge=0)
    claim_recheck_s: float = Field(0.5, gt=0, le=60)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    log_level: str = "WARNING"
    access_log: bool = False
    threadpool_size: int = Field(256, ge=8, le=10_000)
    db_pool_size: int = Field(20, ge=1, le=1000)
    write_concurrency: int = Field(4, ge=1, le=1000)
    metrics_require_admin: bool = False
