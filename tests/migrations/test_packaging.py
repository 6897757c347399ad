"""A wheel carries the Alembic environment: installed with no repository beside it, the
schema upgrade (``tuner db upgrade``, the server's start) still finds its revisions."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_a_wheel_install_upgrades_a_database(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(  # the test extra's setuptools: no download
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(wheels)],
        check=True, timeout=300,
    )
    wheel = next(wheels.glob("tuner-*.whl"))
    revisions = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    with zipfile.ZipFile(wheel) as archive:
        packaged = sorted(
            name.rsplit("/", 1)[1] for name in archive.namelist()
            if "/share/tuner/migrations/versions/" in name
        )
    assert revisions and packaged == revisions

    # Installed as pip installs a wheel (its files to site-packages, its .data/data/ to the
    # prefix), by hand: pip with --prefix would uninstall this environment's editable tuner.
    prefix = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    python = str(prefix / "bin" / "python")
    purelib = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip())
    data = f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.data/data/"
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            target = prefix / name.removeprefix(data) if name.startswith(data) else purelib / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    script = (
        "import sys\n"
        "from tuner.storage import database as d\n"
        "d.upgrade(sys.argv[1])\n"
        "print(d.MIGRATIONS_DIR)\n"
        "print(d.current_revision(sys.argv[1]))\n"
    )
    # The dependencies come from this environment (PYTHONPATH); tuner only from the wheel:
    # the editable install's path hook is a .pth file, which PYTHONPATH entries do not run.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    db = tmp_path / "installed.db"
    out = subprocess.run(
        [python, "-c", script, f"sqlite:///{db}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()
    head = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
    assert out[0] == str(prefix / "share" / "tuner" / "migrations")
    assert out[1] == head
