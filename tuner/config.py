"""The experiment document: the single input of ``tuner simulate``, the create route and the SDK.

Written as YAML or JSON, validated by pydantic, stored as JSON and immutable once created.
Invalid documents are refused with the field path and the reason (:func:`load_config`).
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator
from pydantic_core import ErrorDetails

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


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation names (``X | None``, a tagged union, ``Annotated[...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _tag(model: type[BaseModel]) -> object:
    field = model.model_fields.get("type")
    return None if field is None else field.default


def _walk(loc: Sequence[str | int]) -> tuple[list[str | int], list[type[BaseModel]]]:
    """Follow ``loc`` through the document's models: (the path without tagged unions' tags,
    the models that may sit at its end; [] where the path leaves the models)."""
    path: list[str | int] = []
    models: list[type[BaseModel]] = [ExperimentConfig]
    for part in loc:
        if len(models) > 1:  # a tagged union (a parameter): the path names the tag
            models = [m for m in models if _tag(m) == part]
            continue
        path.append(part)
        if not models:
            continue
        if issubclass(models[0], RootModel):  # the space: the path names a parameter
            models = _models_in(typing.get_args(models[0].model_fields["root"].annotation)[-1])
            continue
        field = models[0].model_fields.get(str(part))
        models = [] if field is None else _models_in(field.annotation)
    return path, models


def describe_error(error: ErrorDetails) -> tuple[list[str | int], str]:
    """The document path of one validation error (``space.lr.high``, without the union's
    tag) and its sentence; an unknown key gets the key it probably meant
    (``scheduler.etta: Extra inputs are not permitted (did you mean 'eta'?)``)."""
    loc = [p for p in error["loc"] if isinstance(p, str | int)]
    path, _ = _walk(loc)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden" and loc:
        _, parents = _walk(loc[:-1])
        known = list(parents[0].model_fields) if len(parents) == 1 else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        elif known:
            message += f" (the keys here are: {', '.join(known)})"
    return path, message


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        path, message = describe_error(err)
        parts.append(f"{'.'.join(str(p) for p in path) or '(document)'}: {message}")
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


def find_line(node: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest key (or list item) along ``loc`` in a composed YAML
    tree. A key the mapping lacks (a tagged union's tag, a missing field) is skipped: a
    missing field points at the key of the mapping that lacks it."""
    line = None if node is None else node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
                    node, line = value_node, key_node.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            node = node.value[key] if 0 <= key < len(node.value) else None
            if node is not None:
                line = node.start_mark.line + 1
        else:
            break
    return line


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML or JSON experiment document from disk (``tuner submit``, ``tuner
    simulate`` and the SDK read files with this).

    Raises:
        ConfigError: unreadable, not YAML/JSON, or invalid: one line per problem, each
            ``FILE:LINE: field.path: reason``.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: an experiment document must be a mapping, not {type(data).__name__}"
        )
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        try:
            # JSON is (nearly always) YAML too: the same tree gives the lines of both.
            tree: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            tree = None
        problems = []
        for err in exc.errors():
            loc, message = describe_error(err)
            line = find_line(tree, loc)
            where = f"{path}:{line}" if line is not None else str(path)
            field = ".".join(str(p) for p in loc) or "(document)"
            problems.append(f"{where}: {field}: {message}")
        raise ConfigError("\n".join(problems)) from None


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
