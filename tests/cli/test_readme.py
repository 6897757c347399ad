"""The README's commands run as written: each ``tuner submit DOCUMENT`` followed by a ``tuner
worker ... -- COMMAND`` in its code blocks is a pair, and each pair runs for real against a
``tuner server`` (the document copied with a smaller budget): every trial gets values, none
fails, and the script's reports are under the document's metric (a copy of the document
that optimises another metric gets its reports refused). The PyTorch pair runs where torch
imports (a GPU check does: docs/GPU_CHECK.md); PyTorch is not a dependency of tuner."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.worker.live import ADMIN_TOKEN, PYTHON, ROOT, Server, tuner_command

README = ROOT / "README.md"
#: Trials per run: enough for promotions at the bottom rungs, few enough to be quick.
MAX_TRIALS = 6
#: The seconds one worker run may take (each job starts a Python process).
RUN_TIMEOUT_S = 240


@dataclass(frozen=True)
class Pair:
    """A document the README submits and the worker command it runs on it."""

    document: str
    worker: tuple[str, ...]  # the worker line's words, as written

    @property
    def command(self) -> tuple[str, ...]:
        return self.worker[self.worker.index("--") + 1 :]

    @property
    def script(self) -> str:
        return next(word for word in self.command if word.endswith(".py"))

    def __str__(self) -> str:
        return f"{self.document}+{Path(self.script).name}"


def code_blocks(text: str) -> list[str]:
    """The shell blocks of a markdown text."""
    return re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.DOTALL)


def readme_pairs(text: str) -> list[Pair]:
    """Each worker line with the document submitted last before it, block by block."""
    pairs = []
    for block in code_blocks(text):
        document = None
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["tuner", "submit"]:
                document = words[2]
            elif words[:2] == ["tuner", "worker"]:
                assert document is not None, f"{line!r} runs no document submitted before it"
                pairs.append(Pair(document, tuple(words)))
    return pairs


PAIRS = readme_pairs(README.read_text())


def test_the_readme_names_each_example_pair() -> None:
    found = {(pair.document, pair.script) for pair in PAIRS}
    assert ("examples/asha.yaml", "examples/curves.py") in found
    assert ("examples/pytorch.yaml", "examples/pytorch_mnist_like.py") in found
    for pair in PAIRS:
        assert (ROOT / pair.document).is_file() and (ROOT / pair.script).is_file(), pair


def needs_torch(pair: Pair) -> bool:
    return "import torch" in (ROOT / pair.script).read_text()


def run_words(words: list[str], cwd: Path, env: dict[str, str], timeout_s: float) -> str:
    """Run a README line: ``tuner`` and ``python`` are this interpreter's, and the
    repository's paths are absolute (the line runs in ``cwd``, whose files are the test's)."""
    if words[0] == "tuner":
        words = tuner_command(*words[1:])
    argv = [PYTHON if w == "python" else str(ROOT / w) if (ROOT / w).is_file() else w
            for w in words]
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{shlex.join(words)} exited {done.returncode}:\n{output}"
    return output


def submit_copy(pair: Pair, tmp_path: Path, env: dict[str, str], **changes: Any) -> int:
    """Submit the pair's document with a small budget (and ``changes``); its id."""
    document = yaml.safe_load((ROOT / pair.document).read_text())
    document["budget"] = {**document.get("budget", {}), "max_trials": MAX_TRIALS}
    document.update(changes)
    copy = tmp_path / Path(pair.document).name
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    output = run_words(["tuner", "submit", str(copy)], tmp_path, env, 60)
    found = re.search(r"created experiment (\d+)", output)
    assert found, output
    return int(found.group(1))


def run_worker(pair: Pair, experiment_id: int, tmp_path: Path, env: dict[str, str]) -> str:
    words = list(pair.worker)
    words[words.index("--experiment") + 1] = str(experiment_id)
    return run_words(words, tmp_path, env, RUN_TIMEOUT_S)


@pytest.fixture
def readme_env(shared_server: Server) -> dict[str, str]:
    """The README's ``export TUNER_URL=... TUNER_TOKEN=...``, for this test's server."""
    return {**os.environ, "TUNER_URL": shared_server.url, "TUNER_TOKEN": ADMIN_TOKEN}


@pytest.mark.parametrize("pair", PAIRS, ids=str)
def test_readme_pair_runs_as_written(
    pair: Pair, shared_server: Server, readme_env: dict[str, str], tmp_path: Path
) -> None:
    if needs_torch(pair) and importlib.util.find_spec("torch") is None:
        pytest.skip(f"torch is not installed: {pair.script} runs where it is (pip install torch)")
    metric = yaml.safe_load((ROOT / pair.document).read_text())["metric"]
    experiment_id = submit_copy(pair, tmp_path, readme_env)

    run_worker(pair, experiment_id, tmp_path, readme_env)

    with shared_server.client() as client:
        experiment = client.get_experiment(experiment_id)
        trials = client.list_trials(experiment_id, limit=100).items
        failures = client.failures(experiment_id).items
    assert experiment.state == "completed"
    assert experiment.config["metric"] == metric
    assert len(trials) == MAX_TRIALS
    assert failures == []
    assert {t.state for t in trials} <= {"completed", "stopped"}, [t.state for t in trials]
    assert all(t.best_value is not None for t in trials)
    assert experiment.progress.best is not None


@pytest.mark.parametrize("pair", PAIRS, ids=str)
def test_readme_pair_script_reports_the_documents_metric(
    pair: Pair, shared_server: Server, readme_env: dict[str, str], tmp_path: Path
) -> None:
    """The same script on a copy of its document that optimises another metric: its first
    report is refused, so the trial fails saying so (the script names its metric)."""
    if needs_torch(pair) and importlib.util.find_spec("torch") is None:
        pytest.skip(f"torch is not installed: {pair.script} runs where it is (pip install torch)")
    metric = yaml.safe_load((ROOT / pair.document).read_text())["metric"]
    experiment_id = submit_copy(
        pair, tmp_path, readme_env,
        metric=f"not_{metric}", max_retries=0, pause_after_failures=0,
        budget={"max_trials": 1},
    )

    run_worker(pair, experiment_id, tmp_path, readme_env)

    with shared_server.client() as client:
        trials = client.list_trials(experiment_id, limit=10).items
        failures = client.failures(experiment_id).items
    assert [t.state for t in trials] == ["failed"]
    assert len(failures) == 1
    assert "metric_mismatch" in failures[0].error or f"not_{metric}" in failures[0].error, (
        failures[0].error
    )


def test_readme_sdk_loop_runs_to_the_end(
    shared_server: Server, readme_env: dict[str, str], tmp_path: Path
) -> None:
    """``examples/sdk_loop.py``, as its docstring and the README run it."""
    output = run_words(["python", "examples/sdk_loop.py", "--sleep-s", "0"], tmp_path,
                       readme_env, RUN_TIMEOUT_S)

    found = re.search(r"submitted experiment (\d+)", output)
    assert found and "best: trial" in output, output
    with shared_server.client() as client:
        experiment = client.get_experiment(int(found.group(1)))
        failures = client.failures(experiment.id).items
    assert experiment.state == "completed" and failures == []
    assert experiment.progress.best is not None


def test_readme_blocks_are_found_and_parsed() -> None:
    """The parser above can fail: a worker line with no document before it is an error."""
    with pytest.raises(AssertionError, match="runs no document"):
        readme_pairs("```bash\ntuner worker --experiment 1 -- python x.py\n```\n")
    assert readme_pairs(
        "```bash\ntuner submit a.yaml  # note\ntuner worker --experiment 1 -- python b.py\n```"
    ) == [Pair("a.yaml", ("tuner", "worker", "--experiment", "1", "--", "python", "b.py"))]


def test_the_pytorch_example_without_torch_says_what_to_install() -> None:
    """Without torch, each job fails with one line that says what to do (the worker shows
    a failure's last lines), not a traceback."""
    hide_torch = (
        "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['pytorch_mnist_like.py']; "
        "runpy.run_path('examples/pytorch_mnist_like.py', run_name='__main__')"
    )
    done = subprocess.run(
        [PYTHON, "-c", hide_torch], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.strip() == (
        "this example needs PyTorch: pip install torch (not a dependency of tuner)"
    )
