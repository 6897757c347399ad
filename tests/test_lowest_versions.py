"""The lowest versions that pyproject.toml allows of SQLAlchemy, FastAPI and pydantic work:
a fresh virtual environment with exactly those (the rest as pip resolves them) runs the
storage contract suite and the job protocol's tests on SQLite."""

from __future__ import annotations

import re
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORED = ("sqlalchemy", "fastapi", "pydantic")
TESTS = ["tests/storage/test_store_contract.py", "tests/api/test_protocol.py"]


def lowest_pins() -> list[str]:
    """``name[extras]==floor`` for each of :data:`FLOORED`, from the project's own ranges."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = []
    for name in FLOORED:
        found = [d for d in dependencies if re.match(rf"{name}(\[|>)", d)]
        assert len(found) == 1, f"{name}: expected one requirement, got {found}"
        requirement = found[0].split("#")[0].strip()
        assert ">=" in requirement and "," not in requirement, requirement
        pins.append(requirement.replace(">=", "=="))
    return pins


def test_the_floors_are_read_from_pyproject() -> None:
    pins = lowest_pins()
    assert [re.split(r"[\[=]", pin)[0] for pin in pins] == list(FLOORED)
    assert all("==" in pin for pin in pins)


@pytest.mark.slow
def test_the_lowest_allowed_versions_pass(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Starlette's TestClient of FastAPI's lowest version needs httpx < 0.28 (a test tool).
    install = [
        str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        *lowest_pins(), "-e", str(ROOT), "pytest", "pytest-timeout", "hypothesis",
        "httpx<0.28",
    ]
    done = subprocess.run(install, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    versions = subprocess.run(
        [str(python), "-c", "import sqlalchemy, fastapi, pydantic; "
         "print(sqlalchemy.__version__, fastapi.__version__, pydantic.VERSION)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    floors = [pin.split("==")[1] for pin in lowest_pins()]
    assert [v.removesuffix(".0") for v in versions] == [f.removesuffix(".0") for f in floors]
    run = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *TESTS],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
        env={"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
