"""The example scripts: the SDK loop runs against a real server; the PyTorch one imports
torch only when it runs."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.worker.live import ADMIN_TOKEN, PYTHON, ROOT, Server


def test_example_sdk_loop_runs_an_experiment_to_the_end(shared_server: Server) -> None:
    done = subprocess.run(
        [PYTHON, "examples/sdk_loop.py", "--sleep-s", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TUNER_URL": shared_server.url, "TUNER_TOKEN": ADMIN_TOKEN},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "best: trial" in done.stdout


def test_example_pytorch_imports_torch_lazily() -> None:
    code = (
        "import runpy, sys; "
        "runpy.run_path('examples/pytorch_mnist_like.py', run_name='not_main'); "
        "assert 'torch' not in sys.modules"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "examples/pytorch_mnist_like.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "--synthetic" in done.stdout
