"""The ``tuner`` command starts light: ``--help`` and the commands that only talk to a
server load neither numpy, the simulator nor the service (docs/PERFORMANCE.md has the
figures). Checked on ``sys.modules`` in a fresh interpreter, not by timing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.worker.live import ROOT

#: Modules a command that does not need them must not load at start-up.
HEAVY = ("numpy", "scipy", "sklearn", "fastapi", "uvicorn", "sqlalchemy", "tuner.simulate")


def loaded_after(code: str) -> list[str]:
    """The heavy modules loaded once ``code`` ran in a fresh interpreter."""
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_import_tuner_cli_loads_nothing_heavy() -> None:
    assert loaded_after("import tuner.cli") == []


def test_import_tuner_loads_nothing_heavy() -> None:
    assert loaded_after("import tuner") == []


@pytest.mark.parametrize(
    "args",
    [["--help"], ["show", "--help"], ["submit", "--help"], ["ls", "--help"]],
    ids=lambda a: " ".join(a),
)
def test_help_loads_nothing_heavy(args: list[str]) -> None:
    code = (
        "import contextlib, io\n"
        "from tuner.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({args!r})\n"
    )
    assert loaded_after(code) == []


def test_the_probe_sees_a_heavy_import() -> None:
    """The check above can fail: a command that needs numpy does load it."""
    assert "tuner.simulate" in loaded_after("import tuner.simulate")


def test_cli_default_server_is_the_sdk_default() -> None:
    from tuner.cli.options import DEFAULT_SERVER
    from tuner.client import DEFAULT_URL

    assert DEFAULT_SERVER == DEFAULT_URL
