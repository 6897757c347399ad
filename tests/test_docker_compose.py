"""docker-compose.yml and the Dockerfile agree with the code (Docker does not run in CI):
every `tuner` subcommand, flag and TUNER_* variable they use exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from api.settings import Settings
from tuner.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
TREE = typer.main.get_command(app)


def _words(command: Any) -> list[str]:
    """A service's command as words; ``sh -c "..."`` is split again."""
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    if words[:2] == ["sh", "-c"]:
        return shlex.split(words[2])
    return words


def _invocations(words: list[str]) -> list[list[str]]:
    """Each `tuner ...` in the words, up to `&&`, `;` or the `--` before a user command."""
    found, current = [], None
    for word in words:
        if word == "tuner":
            current = []
            found.append(current)
        elif word in ("&&", ";", "--"):
            current = None
        elif current is not None:
            current.append(word)
    return found


def _resolve(args: list[str]) -> tuple[Any, list[str]]:
    """Walk the command tree along the leading words; the command and the rest."""
    command = TREE
    rest = list(args)
    while rest and getattr(command, "commands", None) and rest[0] in command.commands:
        command = command.commands[rest.pop(0)]
    return command, rest


def _options(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def _cli_envvars() -> set[str]:
    found: set[str] = set()
    stack = [TREE]
    while stack:
        command = stack.pop()
        stack.extend((getattr(command, "commands", None) or {}).values())
        for param in getattr(command, "params", []):
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                found.add(envvar)
            elif envvar:
                found.update(envvar)
    return found


KNOWN_ENV = {f"TUNER_{name.upper()}" for name in Settings.model_fields} | _cli_envvars()
SERVICES = COMPOSE["services"]
TUNER_SERVICES = [name for name, s in SERVICES.items() if "tuner" in str(s.get("command", ""))]


def test_compose_has_postgres_api_and_gpu_workers() -> None:
    assert {"postgres", "api", "worker"} <= set(SERVICES)
    assert "healthcheck" in SERVICES["postgres"]
    assert SERVICES["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "ports" not in SERVICES["worker"] and "container_name" not in SERVICES["worker"]


@pytest.mark.parametrize("service", TUNER_SERVICES)
def test_compose_tuner_commands_and_flags_exist(service: str) -> None:
    invocations = _invocations(_words(SERVICES[service]["command"]))
    assert invocations, f"{service} runs no tuner command"
    for args in invocations:
        command, rest = _resolve(args)
        assert command is not TREE, f"{service}: unknown subcommand in {args}"
        assert not getattr(command, "commands", None), f"{service}: {args} names a group"
        flags = {word.split("=", 1)[0] for word in rest if word.startswith("-")}
        unknown = flags - _options(command)
        assert not unknown, f"{service}: `tuner {' '.join(args)}` uses unknown flags {unknown}"


def test_compose_api_upgrades_then_serves_on_all_interfaces() -> None:
    args = _invocations(_words(SERVICES["api"]["command"]))
    assert args[0][:2] == ["db", "upgrade"]
    assert args[-1][0] == "server" and "0.0.0.0" in args[-1]


def test_compose_worker_runs_an_existing_script() -> None:
    words = _words(SERVICES["worker"]["command"])
    user_command = words[words.index("--") + 1 :]
    scripts = [w for w in user_command if w.endswith(".py")]
    assert scripts and all((ROOT / s).is_file() for s in scripts)
    assert "--exit-when-done" in words and "--gpus" in words


def test_compose_tuner_environment_variables_exist() -> None:
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        names = env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        tuner_names = {n for n in names if n.startswith("TUNER_")}
        assert tuner_names <= KNOWN_ENV, f"{name}: unknown {tuner_names - KNOWN_ENV}"
    assert SERVICES["api"]["environment"]["TUNER_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_dockerfile_copies_what_exists_and_runs_a_real_command() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE):
        for source in sources.split():
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    cmd = re.search(r"^CMD\s+(\[.+\])$", text, flags=re.MULTILINE)
    assert cmd is not None
    args = yaml.safe_load(cmd.group(1))
    assert args[0] == "tuner"
    command, rest = _resolve(args[1:])
    assert command is not TREE
    assert {w for w in rest if w.startswith("-")} <= _options(command)
