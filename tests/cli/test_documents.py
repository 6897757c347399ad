"""What a newcomer's typo gets: an unknown key names the key it probably meant (in `tuner
submit`, `tuner simulate` and the create route alike), both commands point at the same
lines, a missing key is "Field required" (never a crash), and a server URL with a path the
API is not under (``/ui``) says to drop it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.worker.live import ADMIN_TOKEN, Server, small_document
from tuner.cli import main
from tuner.config import parse_config
from tuner.errors import ConfigError

TYPOS = """\
name: typos
metrc: val_loss
space:
  lr:
    type: float
    low: 0.001
    hihg: 0.1
  width: {type: int, low: 16, high: 64, lg: true}
  opt: {type: categorical, choices: [sgd, adam]}
  momentum:
    type: float
    low: 0.0
    high: 0.9
    condition: {parent: opt, valuse: [sgd]}
scheduler:
  type: asha
  max_resource: 9
  etta: 3
budget: {max_trails: 3}
sampler: {type: grid, grid_cout: 3}
surprise: 1
"""

#: (line, the problem's text) for each mistake in TYPOS.
EXPECTED = [
    (4, "space.lr.high: Field required"),
    (7, "space.lr.hihg: Extra inputs are not permitted (did you mean 'high'?)"),
    (8, "space.width.lg: Extra inputs are not permitted (did you mean 'log'?)"),
    (14, "space.momentum.condition.values: Field required"),
    (14, "space.momentum.condition.valuse: Extra inputs are not permitted (did you mean "
         "'values'?)"),
    (18, "scheduler.etta: Extra inputs are not permitted (did you mean 'eta'?)"),
    (19, "budget.max_trails: Extra inputs are not permitted (did you mean 'max_trials'?)"),
    (20, "sampler.grid_cout: Extra inputs are not permitted (did you mean 'grid_count'?)"),
    (2, "metrc: Extra inputs are not permitted (did you mean 'metric'?)"),
]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def problems(output: str, path: Path) -> list[str]:
    """The ``FILE:LINE: field: reason`` lines of an error output, without the prefix."""
    text = output.replace("error: ", "").replace("invalid: ", "")
    return [line.strip() for line in text.splitlines() if line.strip().startswith(str(path))]


@pytest.fixture
def typos(tmp_path: Path) -> Path:
    path = tmp_path / "typos.yaml"
    path.write_text(TYPOS)
    return path


def test_submit_names_line_field_and_the_key_meant(
    typos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["submit", str(typos), "--server", "http://127.0.0.1:1"], capsys)

    assert code == 1
    found = problems(err, typos)
    for line, text in EXPECTED:
        assert f"{typos}:{line}: {text}" in found, found
    unknown = [p for p in found if ": surprise: " in p]
    assert len(unknown) == 1 and "(the keys here are: schema_version, name, metric" in unknown[0]
    assert "Traceback" not in err


def test_simulate_shows_the_same_lines_as_submit(
    typos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, submitted = run(["submit", str(typos), "--server", "http://127.0.0.1:1"], capsys)
    code, out, simulated = run(["simulate", str(typos), "--workers", "2"], capsys)

    assert code == 2
    assert problems(simulated + out, typos) == problems(submitted, typos)
    assert len(problems(submitted, typos)) == len(EXPECTED) + 1


def test_a_missing_parameter_key_is_field_required_not_a_crash() -> None:
    document = small_document()
    document["space"] = {"lr": {"type": "float", "low": 0.1, "hihg": 1.0}, "c": {"type": "fixed"}}

    with pytest.raises(ConfigError) as info:
        parse_config(document)

    assert "space.lr.high: Field required" in info.value.detail
    assert "space.c.value: Field required" in info.value.detail
    assert "(did you mean 'high'?)" in info.value.detail


def test_create_route_says_did_you_mean(shared_server: Server) -> None:
    document = small_document(name="typo")
    document["scheduler"] = {**document["scheduler"], "etta": 3}
    document["space"] = {"lr": {"type": "float", "low": 0.1, "hihg": 1.0}}

    answer = httpx.post(
        f"{shared_server.url}/api/v1/experiments",
        json=document,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )

    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "scheduler.etta: Extra inputs are not permitted (did you mean 'eta'?)" in detail
    assert "space.lr.high: Field required" in detail


@pytest.mark.parametrize("suffix", ["/ui", "/ui/", "/tuner"])
def test_a_server_url_with_a_path_says_to_drop_it(
    shared_server: Server, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = shared_server.url + suffix
    dropped = suffix.rstrip("/")

    code, _, err = run(["ls", "--server", url, "--token", ADMIN_TOKEN], capsys)

    assert code == 1
    assert "no route GET" in err
    assert f"drop '{dropped}' from --server / TUNER_URL: {shared_server.url}" in err
    assert "Traceback" not in err


def test_a_missing_experiment_gets_no_url_hint(
    shared_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["show", "99999", "--server", shared_server.url, "--token", ADMIN_TOKEN],
                       capsys)

    assert code == 1 and "not found" in err
    assert "drop" not in err


def test_a_server_url_without_a_scheme_says_to_write_http(
    shared_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = shared_server.url.removeprefix("http://")  # 127.0.0.1:PORT, as people type it

    code, _, err = run(["ls", "--server", bare, "--token", ADMIN_TOKEN], capsys)

    assert code == 1
    assert f"has no scheme: write it as http://{bare}" in err
    assert "is the server running" not in err  # it is: the URL is what is wrong
