"""Reading an experiment document for ``tuner submit``: each error names the field path and,
for YAML and JSON files, the line where that field is."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tuner.config import ExperimentConfig
from tuner.errors import ConfigError


def find_line(node: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest node along ``loc`` in a composed YAML tree."""
    line = None
    for key in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            found = None
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
                    found, line = value_node, key_node.start_mark.line + 1
                    break
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            node = node.value[key] if 0 <= key < len(node.value) else None
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _describe(exc: ValidationError, tree: yaml.Node | None, path: Path) -> str:
    parts = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if isinstance(p, str | int)]
        # Tagged unions add the tag to the path ("space.lr.float.low"): keep document keys.
        where = ".".join(str(p) for p in loc) or "(document)"
        message = str(err["msg"]).removeprefix("Value error, ")
        line = find_line(tree, loc) if tree is not None else None
        at = f"{path}:{line}: " if line is not None else f"{path}: "
        parts.append(f"{at}{where}: {message}")
    return "\n".join(parts)


def read_document(path: Path) -> dict[str, Any]:
    """Load and validate ``path``; answer the document as JSON-ready data.

    Raises:
        ConfigError: unreadable, not YAML/JSON, or invalid (one line per problem, with the
            field path and the file's line).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    tree: yaml.Node | None = None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    try:
        # JSON is (nearly always) YAML too: the same tree gives the lines of both.
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        tree = None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: an experiment document must be a mapping, not {type(data).__name__}"
        )
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, tree, path)) from None
    return config.model_dump(mode="json", exclude_none=True)
