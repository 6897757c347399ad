"""Reading an experiment document for ``tuner submit``: each error names the field path and,
for YAML and JSON files, the line where that field is (:func:`tuner.config.load_config`, the
reader ``tuner simulate`` and the SDK use too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_document(path: Path) -> dict[str, Any]:
    """Load and validate ``path``; answer the document as JSON-ready data.

    Raises:
        ConfigError: unreadable, not YAML/JSON, or invalid (one line per problem, with the
            field path and the file's line).
    """
    # Imported here: the document's model pulls in pydantic, the space and the samplers
    # (numpy), which `tuner --help` and `tuner show` do not need.
    from tuner.config import load_config

    return load_config(path).model_dump(mode="json", exclude_none=True)
