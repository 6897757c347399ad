"""The exception tree of tuner. Every class has a stable ``code`` used in HTTP error bodies.

::

    TunerError
    ├── ConfigError            an experiment document, search space or setting is invalid
    │   ├── SpaceExhausted     the sampler has no unseen configuration left
    │   └── MetricMismatch     a report names another metric than its experiment's
    ├── NotFound               an id names nothing (or nothing the caller may see)
    ├── ConflictError          the request contradicts stored state
    │   ├── InvalidTransition  e.g. resume a cancelled experiment
    │   ├── DuplicateReport    another value for a (trial, step) already stored
    │   └── LeaseExpired       the lease token is stale: another worker owns the job now
    ├── OutOfRange             a value is well-formed but outside what the job allows
    ├── AuthError              no or wrong token
    │   └── Forbidden          the token's role may not do this
    ├── StorageError           the database refused or is unreachable
    └── ClientError            the SDK could not talk to the server
"""

from __future__ import annotations


class TunerError(Exception):
    """Base class of every error tuner raises on purpose."""

    code = "tuner_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigError(TunerError):
    code = "invalid_config"


class SpaceExhausted(ConfigError):
    code = "space_exhausted"


class MetricMismatch(ConfigError):
    code = "metric_mismatch"


class NotFound(TunerError):
    code = "not_found"


class ConflictError(TunerError):
    code = "conflict"


class ParamsSeen(ConflictError):
    """A new trial's configuration was proposed before in its experiment."""

    code = "params_seen"


class InvalidTransition(ConflictError):
    code = "invalid_transition"


class DuplicateReport(ConflictError):
    code = "duplicate_report"


class LeaseExpired(ConflictError):
    code = "lease_expired"


class OutOfRange(TunerError):
    code = "out_of_range"


class AuthError(TunerError):
    code = "unauthorized"


class Forbidden(AuthError):
    code = "forbidden"


class StorageError(TunerError):
    code = "storage_error"


class ClientError(TunerError):
    code = "client_error"
