"""The experiment document: the single input of ``tuner simulate``, the create route and the SDK.

Written as YAML or JSON, validated by pydantic, stored as JSON and immutable once created.
Invalid documents are refused with the field path and the reason (:func:`load_config`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.errors import ConfigError
from tuner.samplers.base import SamplerConfig
from tuner.space import SearchSpace
from tuner.wire import MAX_STEP

if TYPE_CHECKING:
    from tuner.schedulers.base import Scheduler

SCHEMA_VERSION: Literal[1] = 1

_STRICT = ConfigDict(extra="forbid", frozen=True)

#: The most resource units an experiment may be given as its budget (an integer every JSON
#: client reads exactly; the experiment's counter is a 64-bit column).
MAX_RESOURCE_UNITS = 2**53
#: The default of ``pause_after_failures``.
PAUSE_AFTER_FAILURES = 10


class SchedulerConfig(BaseModel):
    """Which rule decides promotions. Paper symbols: r = min_resource, R = max_resource.

    - ``sha``: synchronous successive halving of ``n_configs`` configurations in bracket
      ``bracket``.
    - ``hyperband``: synchronous Hyperband (Li et al., JMLR 2018), ``iterations`` times over all
      brackets; ``parallel_brackets`` lets idle workers start the next bracket while a rung
      waits for stragglers.
    - ``asha``: asynchronous successive halving (Li et al., MLSys 2020) in bracket ``bracket``,
      ``form`` promotion (Algorithm 2) or stopping.
    - ``async_hyperband``: ASHA over several brackets (``brackets``, default all), a new trial's
      bracket drawn in proportion to Hyperband's n_s.
    - ``pasha``: ASHA whose maximum resource grows while the ranking is unstable (Bohdal et
      al., ICLR 2023).
    """

    model_config = _STRICT

    type: Literal["sha", "hyperband", "asha", "async_hyperband", "pasha"] = "asha"
    eta: int = Field(3, ge=2, le=100, description="reduction factor")
    min_resource: int = Field(1, ge=1, description="r: resource of the bottom rung")
    max_resource: int = Field(..., ge=2, le=MAX_STEP, description="R: resource of the top rung")
    form: Literal["promotion", "stopping"] = "promotion"
    bracket: int = Field(0, ge=0, description="early-stopping rate s (sha, asha)")
    brackets: list[int] | None = Field(None, description="async_hyperband: the rates s to use")
    n_configs: int | None = Field(None, ge=1, le=10**6, description="sha: configurations")
    iterations: int = Field(1, ge=1, le=1000, description="hyperband: rounds over all brackets")
    parallel_brackets: bool = True

    @model_validator(mode="after")
    def _check(self) -> SchedulerConfig:
        if self.min_resource >= self.max_resource:
            raise ValueError(
                f"min_resource is {self.min_resource}, but must be < max_resource "
                f"({self.max_resource})"
            )
        from tuner.schedulers.rungs import s_max

        top = s_max(self.min_resource, self.max_resource, self.eta)
        if self.bracket > top:
            raise ValueError(f"bracket is {self.bracket}, but the largest rate s is {top}")
        if self.brackets is not None:
            if not self.brackets:
                raise ValueError("brackets must not be empty")
            bad = [s for s in self.brackets if not 0 <= s <= top]
            if bad:
                raise ValueError(f"brackets {bad} are outside 0..{top}")
            if len(set(self.brackets)) != len(self.brackets):
                raise ValueError("brackets must not repeat")
        if self.form == "stopping" and self.type not in ("asha", "async_hyperband"):
            raise ValueError(
                f"form 'stopping' applies to asha and async_hyperband, not {self.type}"
            )
        if self.type == "sha" and self.n_configs is None:
            raise ValueError("sha needs n_configs")
        return self


class BudgetConfig(BaseModel):
    """When no new trial starts. Once nothing is active after that, the experiment ends.

    ``max_trials``: no new trial; promotions of started trials continue. ``max_resource_units``
    and ``time_limit_s``: no new job of any kind.
    """

    model_config = _STRICT

    max_trials: int | None = Field(None, ge=1, le=10**7)
    max_concurrent: int | None = Field(None, ge=1, le=10**5)
    max_resource_units: int | None = Field(None, ge=1, le=MAX_RESOURCE_UNITS)
    time_limit_s: float | None = Field(None, gt=0)


class ExperimentConfig(BaseModel):
    """One experiment: what to search, how to judge it, and how much to spend."""

    model_config = _STRICT

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(..., min_length=1, max_length=200)
    metric: str = Field("loss", min_length=1, max_length=100, pattern=r"^[A-Za-z_][\w.\-/]*$")
    mode: Literal["min", "max"] = "min"
    space: SearchSpace
    scheduler: SchedulerConfig
    sampler: SamplerConfig = SamplerConfig()
    seed: int = Field(0, ge=0, le=2**63 - 1)
    budget: BudgetConfig = BudgetConfig()
    lease_ttl_s: float = Field(60.0, ge=1, le=86400, description="lease time to live")
    max_retries: int = Field(3, ge=0, le=100, description="re-runs of a lost or failed job")
    pause_after_failures: int = Field(
        PAUSE_AFTER_FAILURES, ge=0, le=10_000,
        description="pause the experiment after this many jobs in a row failed with none "
        "succeeding (a script that cannot run); 0: never",
    )
    description: str = Field("", max_length=10_000)
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)

    @property
    def sign(self) -> float:
        """Multiply a value by this to get a loss (lower is better)."""
        return 1.0 if self.mode == "min" else -1.0

    def lease_until(self, now: float) -> float:
        """When a lease taken or renewed at ``now`` runs out."""
        return now + self.lease_ttl_s


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(document)"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {msg}")
    return "; ".join(parts)


def parse_config(data: Any) -> ExperimentConfig:
    """Validate a mapping; raise ConfigError naming each bad field path and why."""
    if isinstance(data, ExperimentConfig):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"an experiment document must be a mapping, not {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML or JSON experiment document from disk."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML/JSON: {exc}") from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.detail}") from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the experiment document."""
    return ExperimentConfig.model_json_schema()


def build_scheduler(config: ExperimentConfig) -> Scheduler:
    """The pure rule that the document's ``scheduler`` section names."""
    from tuner.schedulers import Asha, Pasha, SyncSuccessiveHalving, s_max

    sc = config.scheduler
    r, big_r, eta = sc.min_resource, sc.max_resource, sc.eta
    match sc.type:
        case "sha":
            n = sc.n_configs or 0  # required for sha by SchedulerConfig's validation
            return SyncSuccessiveHalving(r, big_r, eta, ((sc.bracket, n),), sc.parallel_brackets)
        case "hyperband":
            return SyncSuccessiveHalving.hyperband(
                r, big_r, eta, sc.iterations, sc.parallel_brackets
            )
        case "asha":
            return Asha(r, big_r, eta, (sc.bracket,), sc.form == "stopping", config.seed)
        case "async_hyperband":
            rates = tuple(sc.brackets) if sc.brackets else tuple(range(s_max(r, big_r, eta) + 1))
            return Asha(r, big_r, eta, rates, sc.form == "stopping", config.seed)
        case "pasha":
            return Pasha(r, big_r, eta)
    raise AssertionError(f"unknown scheduler type {sc.type}")  # pydantic's Literal rules it out
