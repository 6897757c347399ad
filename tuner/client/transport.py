"""HTTP under the SDK: one request with retries for idempotent calls, and error bodies turned
into the exception classes of :mod:`tuner.errors`.

Retries (jittered exponential backoff) happen only for calls that are safe to repeat: reads,
reports (stored once per trial and step), heartbeats and completions. Claims and experiment
creation are never repeated behind the caller's back: a lost answer could lease a second job
or create a second experiment.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tuner import errors
from tuner.errors import ClientError, TunerError

log = logging.getLogger(__name__)

#: Error codes of the API that are not a class's ``code`` in :mod:`tuner.errors`.
_EXTRA_CODES: dict[str, type[TunerError]] = {
    "invalid_request": errors.ConfigError,
    "payload_too_large": errors.OutOfRange,
    "method_not_allowed": errors.NotFound,
    "internal_error": errors.StorageError,
    "unavailable": errors.StorageError,
}

#: When the body names no known code, the status decides.
_BY_STATUS: dict[int, type[TunerError]] = {
    401: errors.AuthError,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.ConflictError,
    410: errors.InvalidTransition,
    413: errors.OutOfRange,
    422: errors.ConfigError,
}

_RETRY_STATUSES = frozenset({500, 502, 503, 504})


def _all_codes() -> dict[str, type[TunerError]]:
    found: dict[str, type[TunerError]] = {}
    stack: list[type[TunerError]] = [TunerError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


_CODES = {**_all_codes(), **_EXTRA_CODES}


def error_from_response(response: httpx.Response) -> TunerError:
    """The exception for an error answer ``{"error": code, "detail": sentence}``."""
    code, detail = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        code = str(body.get("error", ""))
        detail = str(body.get("detail", ""))
    if not detail:
        detail = f"HTTP {response.status_code} from {response.request.method} {response.url}"
    cls = _CODES.get(code) or _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = errors.StorageError if response.status_code >= 500 else ClientError
    return cls(detail)


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls are repeated: ``attempts`` in all, sleeping a random time in
    ``[d/2, d]`` with ``d = min(max_delay_s, base_delay_s * 2**n)`` before the n-th
    repetition. The defaults wait out about 9 to 18 seconds in all: a server restart."""

    attempts: int = 8
    base_delay_s: float = 0.25
    max_delay_s: float = 5.0

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        delay = min(self.max_delay_s, self.base_delay_s * 2**attempt)
        return rng.uniform(delay / 2, delay)


def route_hint(base_url: str, error: TunerError) -> TunerError:
    """``error`` with what to do when the server has no such route because ``base_url``
    carries a path the API is not under (``TUNER_URL=http://host:8000/ui``)."""
    url = httpx.URL(base_url)
    path = url.path.rstrip("/")
    if not path or not error.detail.startswith(("no route ", "method ")):
        return error
    root = str(url.copy_with(path="/", query=None, fragment=None)).rstrip("/")
    drop = "drop '/ui'" if path == "/ui" else f"drop {path!r}"
    return type(error)(
        f"{error.detail}: the server URL {base_url} has a path the API is not under "
        f"(it is at {root}/api/v1); {drop} from --server / TUNER_URL: {root}"
    )


def unreachable_message(base_url: str, exc: Exception) -> str:
    if "://" not in base_url:  # 127.0.0.1:8000: httpx cannot tell the protocol
        return (
            f"the server URL {base_url!r} has no scheme: write it as http://{base_url} "
            "(or https://) in --server / TUNER_URL"
        )
    return (
        f"cannot reach the tuner server at {base_url} ({type(exc).__name__}: {exc}); "
        "is the server running at that URL? start it with `tuner server`, or point "
        "--server / TUNER_URL at it"
    )


class Transport:
    """Sends requests to one server with one token; see the module docstring."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout_s: float,
        http: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = random.Random()
        self._owns_http = http is None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if http is None:
            http = httpx.Client(base_url=self.base_url, timeout=timeout_s)
        self._http = http
        self._headers = headers

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool,
        timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send one request; answer the response of a 2xx or 3xx status (204 and 410 of a
        claim included: the caller reads them), raise the matching error otherwise.

        Raises:
            ClientError: the server could not be reached (after the retries, if any).
            TunerError: the subclass named by the error body.
        """
        url = self.base_url + path
        policy = retry or self.retry
        attempts = policy.attempts if idempotent else 1
        timeout = httpx.Timeout(timeout_s if timeout_s is not None else self.timeout_s)
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._http.request(
                    method,
                    url,
                    json=json,
                    params=clean_params or None,
                    headers=self._headers,
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                if last or isinstance(exc, httpx.UnsupportedProtocol):  # no retry mends a URL
                    raise ClientError(unreachable_message(self.base_url, exc)) from None
                log.debug("event=retry method=%s path=%s error=%r", method, path, exc)
            else:
                if response.status_code < 400 or response.status_code == 410:
                    return response
                if response.status_code not in _RETRY_STATUSES or last:
                    error = error_from_response(response)
                    if response.status_code in (404, 405):
                        error = route_hint(self.base_url, error)
                    raise error
                log.debug(
                    "event=retry method=%s path=%s status=%d",
                    method,
                    path,
                    response.status_code,
                )
            self._sleep(policy.delay_s(attempt, self._rng))
        raise ClientError(f"{method} {path}: no attempt was made")  # pragma: no cover
