"""The ``tuner`` command: help everywhere, what each error says, and the commands against a
real server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import typer

from tests.server_process import free_port
from tests.worker.live import ADMIN_TOKEN, ROOT, Server, small_document, tuner_command
from tuner.cli import app, main


def _paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the tree (typer vendors its own click: duck typing)."""
    found = [prefix]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        found.extend(_paths(sub, (*prefix, name)))
    return found


COMMANDS = _paths(typer.main.get_command(app))


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``tuner ARGS`` in this process; (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_cli_has_every_command() -> None:
    names = {" ".join(path) for path in COMMANDS}
    assert {
        "server",
        "worker",
        "submit",
        "ls",
        "show",
        "pause",
        "resume",
        "cancel",
        "stop-trial",
        "simulate",
        "db upgrade",
        "token create",
        "quickstart",
        "schema",
    } <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tuner")
def test_cli_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*path, "--help"], capsys)
    assert code == 0
    assert "Usage" in out


def test_cli_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["show", "not-a-number"], capsys)
    assert code == 2 and "Traceback" not in err
    code, _, err = run(["no-such-command"], capsys)
    assert code == 2


def test_cli_unreachable_server_says_start_it(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(["ls", "--server", url, "--token", "t"], capsys)
    assert code == 1
    assert "tuner server" in err and url in err
    assert "Traceback" not in err


def test_cli_invalid_file_names_field_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\n"
        "space:\n"
        "  lr: {type: float, low: 0.1, high: 1}\n"
        "scheduler:\n"
        "  type: asha\n"
        "  max_resource: lots\n"
    )
    code, _, err = run(["submit", str(bad), "--server", "http://127.0.0.1:1"], capsys)
    assert code == 1
    assert "scheduler.max_resource" in err
    assert "bad.yaml:6" in err
    assert "Traceback" not in err


def test_cli_missing_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["submit", "/no/such/file.yaml"], capsys)
    assert code == 2


def test_cli_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["schema"], capsys)
    assert code == 0
    schema = json.loads(out)
    assert "scheduler" in schema["properties"]


def test_cli_bad_token_and_wrong_role(
    shared_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["ls", "--server", shared_server.url, "--token", "nope"], capsys)
    assert code == 1 and "refused the token" in err and "--token" in err
    viewer = shared_server.token("viewer")
    code, _, err = run(["cancel", "1", "--server", shared_server.url, "--token", viewer], capsys)
    assert code == 1 and "admin" in err and "Traceback" not in err


def test_cli_experiment_commands(
    shared_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    doc = tmp_path / "exp.yaml"
    doc.write_text(yaml.safe_dump(small_document(name="cli-test")))
    auth = ["--server", shared_server.url, "--token", ADMIN_TOKEN]
    code, out, err = run(["submit", str(doc), *auth], capsys)
    assert code == 0, err
    assert "created experiment" in out
    with shared_server.client() as client:
        experiment_id = client.list_experiments(limit=1).items[0].id
        answer = client.claim(experiment_id, wait_s=5)
        assert answer.job is not None
        client.job_call(
            answer.job.job_id, "complete", {"lease_token": answer.job.lease_token, "value": 0.25}
        )
        trial_id = answer.job.trial_id
    code, out, _ = run(["ls", *auth], capsys)
    assert code == 0 and "cli-test" in out
    code, out, _ = run(["show", str(experiment_id), *auth], capsys)
    assert code == 0 and "rungs" in out and "best" in out and "0.25" in out
    for action, state in (("pause", "paused"), ("resume", "running")):
        code, out, _ = run([action, str(experiment_id), *auth], capsys)
        assert code == 0 and state in out
    code, out, _ = run(["stop-trial", str(trial_id), *auth], capsys)
    assert code == 0 and "stopped" in out
    code, out, _ = run(["cancel", str(experiment_id), *auth], capsys)
    assert code == 0 and "cancelled" in out
    code, _, err = run(["show", "99999", *auth], capsys)
    assert code == 1 and "not found" in err


def test_cli_db_upgrade_and_token_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    code, out, _ = run(["db", "upgrade", "--db", url], capsys)
    assert code == 0 and "up to date" in out
    code, out, _ = run(["token", "create", "--role", "worker", "--db", url], capsys)
    assert code == 0 and out.strip().startswith("tnr_")
    code, _, err = run(["token", "create", "--role", "king", "--db", url], capsys)
    assert code == 1 and "role" in err


def test_cli_console_script_runs() -> None:
    done = subprocess.run(
        tuner_command("--help"), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "quickstart" in done.stdout


def test_cli_quickstart_yaml_matches_the_quickstart_document() -> None:
    import yaml

    from tuner.config import parse_config
    from tuner.quickstart import experiment_document

    on_disk = parse_config(yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text()))
    assert on_disk == parse_config(experiment_document("full"))
