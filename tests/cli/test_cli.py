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
        "export",
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
        number = answer.job.trial_number
    code, out, _ = run(["ls", *auth], capsys)
    assert code == 0 and "cli-test" in out
    code, out, _ = run(["show", str(experiment_id), *auth], capsys)
    assert code == 0 and "rungs" in out and "best" in out and "0.25" in out
    code, out, _ = run(["show", str(experiment_id), "--top", "0", *auth], capsys)
    assert code == 0 and f"best: trial {experiment_id}/{number} value 0.25" in out
    assert "best trials" not in out  # no table, but the best trial's line
    for action, state in (("pause", "paused"), ("resume", "running")):
        code, out, _ = run([action, str(experiment_id), *auth], capsys)
        assert code == 0 and state in out
    code, out, _ = run(["stop-trial", f"{experiment_id}/{number}", *auth], capsys)
    assert code == 0 and f"trial {experiment_id}/{number} is stopped" in out
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


# ---- a trial is EXP/NUM -----------------------------------------------------------------------
def _experiment_with_jobs(server: Server, n_jobs: int, **overrides: object) -> tuple[int, list]:
    """A new experiment and ``n_jobs`` jobs claimed from it (none run)."""
    with server.client() as client:
        experiment_id = client.create_experiment(small_document(**overrides)).id
        jobs = [client.claim(experiment_id, worker_id="cli-test").job for _ in range(n_jobs)]
    assert all(job is not None for job in jobs)
    return experiment_id, jobs


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["3"], ["EXP/NUM", "--experiment"]),
        (["x/3"], ["EXP/NUM"]),
        (["2/-1"], ["NUM"]),
        (["2/3", "--experiment", "5"], ["experiment 2", "--experiment is 5"]),
    ],
    ids=["bare-number", "bad-experiment", "negative-number", "two-experiments"],
)
def test_cli_a_trial_not_written_exp_num_is_a_usage_error(
    args: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["stop-trial", *args, "--token", "t"], capsys)
    assert code == 2 and out == "", err
    flat = " ".join(err.split())  # click draws the message in a box, wrapped
    for word in words:
        assert word in flat, err


def test_cli_stop_trial_by_its_number_in_its_experiment(
    shared_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = ["--server", shared_server.url, "--token", ADMIN_TOKEN]
    _experiment_with_jobs(shared_server, 2)  # its trial 1 is not the one to stop
    experiment_id, jobs = _experiment_with_jobs(shared_server, 2)
    code, out, err = run(["stop-trial", "1", "--experiment", str(experiment_id), *auth], capsys)
    assert code == 0, err
    assert out.strip() == (
        f"trial {experiment_id}/1 is running (stop requested: it stops at its next report)"
    )
    with shared_server.client() as client:
        assert client.get_trial(jobs[1].trial_id).stop_requested
        assert not client.get_trial(jobs[0].trial_id).stop_requested
    code, _, err = run(["stop-trial", f"{experiment_id}/7", *auth], capsys)
    assert code == 1 and f"experiment {experiment_id} has no trial 7" in err


TRACEBACK = "the command exited with code 1\nTraceback (most recent call last):\n" + "".join(
    f'  File "train.py", line {i}\n' for i in range(100)
) + "ValueError: lr too big\n"


def test_cli_show_lists_failures_and_one_trial_shows_its_jobs(
    shared_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = ["--server", shared_server.url, "--token", ADMIN_TOKEN]
    experiment_id, [job] = _experiment_with_jobs(shared_server, 1, max_retries=1)
    with shared_server.client() as client:
        client.fail_job(job.job_id, job.lease_token, TRACEBACK)
        retry = client.claim(experiment_id, worker_id="cli-test").job
        assert retry is not None and retry.trial_id == job.trial_id
        client.report(retry.job_id, retry.lease_token, 1, 0.5)
    code, out, err = run(["show", str(experiment_id), *auth], capsys)
    assert code == 0, err
    assert "failures: the latest 1 of 1 failed or lost jobs" in out
    failures = out[out.index("failures: the latest"):].splitlines()
    row = next(line for line in failures if line.lstrip().startswith(f"{experiment_id}/0"))
    assert "failed" in row and "ValueError: lr too big" in row, out
    code, out, err = run(["show", f"{experiment_id}/0", *auth], capsys)
    assert code == 0, err
    assert out.startswith(f"trial {experiment_id}/0: running, no rung reached yet")
    assert "params: lr=" in out and "last report: 0.5 at step 1" in out
    assert f"job {job.job_id} (attempt 0) failed:" in out
    assert "ValueError: lr too big" in out and 'line 99' in out and "line 10\n" not in out
    assert str(retry.job_id) in out  # the retry's row in the jobs table


def test_cli_json_prints_the_apis_answers_and_nothing_else(
    shared_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = ["--server", shared_server.url, "--token", ADMIN_TOKEN]
    experiment_id, [job] = _experiment_with_jobs(shared_server, 1, name="[bold]json[/]")
    code, out, _ = run(["ls", "--json", "--limit", "500", *auth], capsys)
    assert code == 0
    listed = json.loads(out)
    mine = next(item for item in listed["items"] if item["id"] == experiment_id)
    assert mine["name"] == "[bold]json[/]" and set(listed) == {"items", "total", "limit", "offset"}
    code, out, _ = run(["show", str(experiment_id), "--json", *auth], capsys)
    assert code == 0
    shown = json.loads(out)
    assert set(shown) == {"experiment", "rungs", "best_trials", "failures"}
    assert shown["experiment"]["id"] == experiment_id and shown["failures"]["total"] == 0
    assert [t["number"] for t in shown["best_trials"]] == [0]
    code, out, _ = run(["show", f"{experiment_id}/0", "--json", *auth], capsys)
    assert code == 0
    trial = json.loads(out)
    with shared_server.client() as client:
        assert trial == client.get_trial(job.trial_id).model_dump(mode="json")


def test_cli_export_csv_and_json(
    shared_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = ["--server", shared_server.url, "--token", ADMIN_TOKEN]
    experiment_id, jobs = _experiment_with_jobs(shared_server, 2)
    with shared_server.client() as client:
        for job, value in zip(jobs, (0.75, 0.25), strict=True):
            body = {"lease_token": job.lease_token, "value": value}
            client.job_call(job.job_id, "complete", body)
        api_csv = client.export(experiment_id, format="csv")
        api_json = client.export(experiment_id, format="json")
    code, out, err = run(["export", str(experiment_id), *auth], capsys)
    assert code == 0 and err == ""
    assert out == api_csv
    rows = out.splitlines()
    assert rows[0].startswith("number,state,") and len(rows) == 3
    assert rows[1].startswith("1,") and rows[2].startswith("0,")  # the better first
    target = tmp_path / "trials.json"
    code, out, err = run(
        ["export", str(experiment_id), "--format", "json", "--output", str(target), *auth], capsys
    )
    assert code == 0 and out == "" and str(target) in err
    assert json.loads(target.read_text()) == api_json
    code, _, err = run(["export", str(experiment_id), "--format", "xml", *auth], capsys)
    assert code == 2 and "xml" in err
