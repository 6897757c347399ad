"""``tuner token create | list | revoke`` against a real server, and on a database named
with ``--database``; never a database made by accident."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.server_process import free_port
from tests.worker.live import ADMIN_TOKEN, Server
from tuner.cli import app, main
from tuner.errors import AuthError


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``tuner ARGS`` in this process; (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, where no command may leave a ./tuner.db."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    for name in ("TUNER_URL", "TUNER_TOKEN", "TUNER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return folder


def test_cli_token_has_create_list_and_revoke() -> None:
    import typer

    group = typer.main.get_command(app).commands["token"]  # type: ignore[attr-defined]
    assert {"create", "list", "revoke"} <= set(group.commands)


def test_cli_token_commands_go_through_the_named_server(
    shared_server: Server, elsewhere: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TUNER_URL", shared_server.url)  # as the README exports them
    monkeypatch.setenv("TUNER_TOKEN", ADMIN_TOKEN)

    code, out, err = run(["token", "create", "--role", "viewer", "--name", "cli-viewer"], capsys)

    assert code == 0, err
    viewer = out.strip()  # alone on stdout; what it is goes to stderr
    assert viewer.startswith("tnr_")
    created_note = " ".join(err.split())
    with shared_server.client(viewer) as client:
        client.list_experiments()  # the server knows it
    code, out, err = run(["token", "list"], capsys)
    assert code == 0, err
    assert "cli-viewer" in out and "viewer" in out and viewer not in out
    line = next(row for row in out.splitlines() if "cli-viewer" in row)
    token_id = line.split()[0]
    assert f"made token {token_id}, a viewer token named 'cli-viewer'" in created_note
    assert "shown only this once" in created_note

    code, out, err = run(["token", "revoke", token_id], capsys)

    assert code == 0, err
    assert f"token {token_id} (cli-viewer, viewer) is revoked" in out
    with shared_server.client(viewer) as client, pytest.raises(AuthError):
        client.list_experiments()  # refused at once by the server that revoked it
    code, out, _ = run(["token", "revoke", token_id], capsys)  # again: the same answer
    assert code == 0 and "is revoked" in out
    code, out, _ = run(["token", "list"], capsys)
    assert "cli-viewer" not in out
    code, out, _ = run(["token", "list", "--all"], capsys)
    assert "cli-viewer" in out
    assert list(elsewhere.iterdir()) == []


def test_cli_token_errors_through_the_server(
    shared_server: Server, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = ["--server", shared_server.url, "--token", ADMIN_TOKEN]
    code, _, err = run(["token", "revoke", "99999", *auth], capsys)
    assert code == 1 and "not found" in err and "Traceback" not in err
    code, _, err = run(["token", "create", "--role", "king", *auth], capsys)
    assert code == 1 and "role" in err
    viewer = shared_server.token("viewer")
    for args in (["list"], ["revoke", "1"], ["create", "--role", "viewer"]):
        code, _, err = run(["token", *args, "--server", shared_server.url, "--token", viewer],
                           capsys)
        assert code == 1 and "admin" in err, args
    code, out, err = run(["token", "list", *auth], capsys)
    admin_id = next(r.split()[0] for r in out.splitlines() if "TUNER_ADMIN_TOKEN" in r)
    code, _, err = run(["token", "revoke", admin_id, *auth], capsys)
    assert code == 1 and "last active admin token" in err
    assert list(elsewhere.iterdir()) == []


def test_cli_token_create_with_no_server_running_makes_no_database(
    elsewhere: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("TUNER_URL", url)

    code, _, err = run(["token", "create", "--role", "worker", "--token", "t"], capsys)

    assert code == 1 and "tuner server" in err and url in err
    assert list(elsewhere.iterdir()) == []


def test_cli_token_commands_on_a_named_database(
    elsewhere: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = tmp_path / "missing.db"
    code, _, err = run(["token", "create", "--role", "admin", "--database",
                        f"sqlite:///{missing}"], capsys)
    assert code == 1 and "no database file" in err and not missing.exists()

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    code, _, err = run(["token", "list", "--database", f"sqlite:///{empty}"], capsys)
    assert code == 1 and "no tuner schema" in err and "tuner db upgrade" in err

    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    assert run(["db", "upgrade", "--db", url], capsys)[0] == 0
    monkeypatch.setenv("TUNER_URL", f"http://127.0.0.1:{free_port()}")  # ignored: --database
    code, out, err = run(["token", "create", "--role", "admin", "--database", url], capsys)
    assert code == 0, err
    assert out.startswith("tnr_")
    code, out, _ = run(["token", "create", "--role", "admin", "--name", "b", "--db", url], capsys)
    assert code == 0
    code, out, _ = run(["token", "list", "--database", url], capsys)
    assert code == 0 and "admin token (cli)" in out

    code, out, err = run(["token", "revoke", "1", "--database", url], capsys)

    assert code == 0, err
    assert "token 1 (admin token (cli), admin) is revoked" in out and "within 10 s" in out
    code, _, err = run(["token", "revoke", "2", "--database", url], capsys)
    assert code == 1 and "last active admin token" in err
    code, _, err = run(["token", "list", "--database", url, "--server", "http://x"], capsys)
    assert code == 2 and "not both" in err
    assert list(elsewhere.iterdir()) == []
