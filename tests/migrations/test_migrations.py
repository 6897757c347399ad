"""Alembic owns the schema: upgrade from empty, no drift from the models, down and up again."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from tests.conftest import DB_PARAMS, POSTGRES_ENV
from tuner.storage.database import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
    downgrade,
    make_engine,
    normalize_url,
    upgrade,
)
from tuner.storage.models import Base

TABLES = {
    "experiments",
    "trials",
    "brackets",
    "jobs",
    "reports",
    "superseded_reports",
    "rung_results",
    "rungs",
    "decisions",
    "workers",
    "tokens",
}


@pytest.fixture(params=DB_PARAMS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema at all)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    base = os.environ[POSTGRES_ENV]
    name = f"tuner_mig_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield normalize_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_dir_is_found_from_anywhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert (MIGRATIONS_DIR / "env.py").is_file()
    upgrade(f"sqlite:///{tmp_path / 'x.db'}")
    assert current_revision(f"sqlite:///{tmp_path / 'x.db'}") == _head()


def test_migrations_single_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_migrations_upgrade_head_on_empty_db(empty_url: str) -> None:
    assert current_revision(empty_url) is None
    upgrade(empty_url)
    assert current_revision(empty_url) == _head()
    assert _tables(empty_url) == TABLES
    upgrade(empty_url)  # idempotent at head


def test_migrations_match_models(empty_url: str) -> None:
    """The equivalent of ``alembic check``: autogenerate finds nothing to do."""
    upgrade(empty_url)
    assert _diff(empty_url) == []


def test_migrations_downgrade_base_then_upgrade(empty_url: str) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "base")
    assert current_revision(empty_url) is None
    assert _tables(empty_url) == set()
    upgrade(empty_url)
    assert _tables(empty_url) == TABLES
    assert _diff(empty_url) == []


def test_migration_0002_keeps_the_rows_and_widens_the_counter(empty_url: str) -> None:
    """0002 rebuilds ``experiments`` on SQLite (batch mode) and alters a column type on
    PostgreSQL: a stored experiment comes through whole, and its resource counter then
    holds more than 2**31."""
    upgrade(empty_url, "0001")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO experiments (id, name, config, state, scheduler_state, n_trials, "
                "resource_used, created_at, updated_at, ended_at) VALUES (7, 'kept', "
                "'{\"name\": \"kept\"}', 'running', '{}', 3, 2147483000, 1.5, 2.5, NULL)"
            ))
        upgrade(empty_url)
        with engine.begin() as conn:
            row = conn.execute(text(
                "SELECT name, n_trials, resource_used, created_at, state_reason "
                "FROM experiments WHERE id = 7"
            )).one()
            assert tuple(row) == ("kept", 3, 2147483000, 1.5, None)
            conn.execute(text("UPDATE experiments SET resource_used = resource_used + 2000000"))
            used = conn.execute(text("SELECT resource_used FROM experiments")).scalar()
            assert used == 2147483000 + 2000000  # past 2**31 - 1
    finally:
        engine.dispose()


def test_upgrade_from_0001_keeps_every_row_under_an_experiment(empty_url: str) -> None:
    """0002 rebuilds ``experiments`` on SQLite; the rows that refer to it (trials, jobs,
    reports, brackets, rungs) come through the upgrade to head. With foreign keys on during
    the rebuild, its DROP TABLE cascaded and deleted every one of them."""
    upgrade(empty_url, "0001")
    engine = make_engine(empty_url)
    rows = [
        "INSERT INTO experiments (id, name, config, state, scheduler_state, n_trials, "
        "resource_used, created_at, updated_at) VALUES (3, 'kept', "
        "'{\"name\": \"kept\", \"scheduler\": {\"type\": \"asha\", \"eta\": 3, "
        "\"max_resource\": 9}}', 'running', '{}', 1, 1, 1.0, 2.0)",
        "INSERT INTO trials (id, experiment_id, number, bracket, params, params_key, state, "
        "rung, resource, checkpoint_step, retries, stop_requested, created_at, updated_at) "
        "VALUES (11, 3, 0, 0, '{\"lr\": 0.1}', 'k0', 'paused', 0, 1, 0, 0, false, 1.0, 1.0)",
        "INSERT INTO brackets (experiment_id, bracket, n_trials) VALUES (3, 0, 1)",
        "INSERT INTO jobs (id, experiment_id, trial_id, trial_number, bracket, rung, "
        "from_resource, to_resource, state, attempt, created_at) "
        "VALUES (21, 3, 11, 0, 0, 0, 0, 1, 'done', 0, 1.0)",
        "INSERT INTO reports (trial_id, job_id, step, value, value_kind, metrics, created_at) "
        "VALUES (11, 21, 1, 0.5, 'finite', '{}', 1.0)",
        "INSERT INTO rung_results (experiment_id, bracket, rung, trial_number, trial_id, loss, "
        "loss_rank_kind, value, value_kind, status, created_at) "
        "VALUES (3, 0, 0, 0, 11, 0.5, 0, 0.5, 'finite', 0, 1.0)",
        "INSERT INTO rungs (experiment_id, bracket, rung, n_results, n_left, n_promoted) "
        "VALUES (3, 0, 0, 1, 0, 0)",
    ]
    counted = ["trials", "brackets", "jobs", "reports", "rung_results", "rungs"]
    try:
        with engine.begin() as conn:
            for statement in rows:
                conn.execute(text(statement))
        upgrade(empty_url)
        with engine.begin() as conn:
            counts = [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in counted]
            assert counts == [1] * len(counted)
            ranked = conn.execute(text("SELECT ranked_step, ranked_loss FROM trials")).one()
            assert tuple(ranked) == (1, 0.5)
            if engine.dialect.name == "sqlite":  # the pooled connection has its keys back on
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_migration_0003_ranks_the_stored_trials(empty_url: str) -> None:
    """0003 fills in each stored rung result's resource (``levels[rung]`` of its
    experiment's document) and each trial's ranked result (its result at ``trials.rung``: a
    failed trial's worst-value placeholder above it does not rank), keeps every row, and
    goes back down with the rows kept."""
    upgrade(empty_url, "0002")
    engine = make_engine(empty_url)
    document = '{"name": "kept", "scheduler": {"type": "asha", "eta": 3, "max_resource": 9}}'
    trials = [  # (id, number, rung)
        (1, 0, 1),  # results at rungs 0 and 1: ranked at resource 3
        (2, 1, 0),  # a result at rung 0, and a placeholder at rung 1 (it failed): resource 1
        (3, 2, -1),  # none
        (4, 3, 0),  # a non-finite result at rung 0
    ]
    results = [  # (trial id, rung, loss, loss_rank_kind, status)
        (1, 0, 0.3, 0, 1), (1, 1, 0.2, 0, 0), (2, 0, 0.1, 0, 1), (2, 1, 0.0, 1, 2),
        (4, 0, 0.0, 1, 2),
    ]
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO experiments (id, name, config, state, scheduler_state, n_trials, "
                "resource_used, created_at, updated_at) VALUES "
                "(5, 'kept', :doc, 'running', '{}', 4, 20, 1.0, 2.0)"
            ), {"doc": document})
            for trial_id, number, rung in trials:
                conn.execute(text(
                    "INSERT INTO trials (id, experiment_id, number, bracket, params, params_key, "
                    "state, rung, resource, checkpoint_step, retries, stop_requested, "
                    "created_at, updated_at) VALUES (:id, 5, :number, 0, '{}', :key, 'paused', "
                    ":rung, 0, 0, 0, false, 1.0, 1.0)"
                ), {"id": trial_id, "number": number, "key": f"k{number}", "rung": rung})
            for trial_id, rung, loss, kind, status in results:
                conn.execute(text(
                    "INSERT INTO rung_results (experiment_id, bracket, rung, trial_number, "
                    "trial_id, loss, loss_rank_kind, value, value_kind, status, created_at) "
                    "VALUES (5, 0, :rung, :trial_id - 1, :trial_id, :loss, :kind, :loss, "
                    "'finite', :status, 1.0)"
                ), {"rung": rung, "trial_id": trial_id, "loss": loss, "kind": kind,
                    "status": status})
        upgrade(empty_url)
        with engine.begin() as conn:
            resources = conn.execute(text(
                "SELECT trial_id, rung, resource FROM rung_results ORDER BY trial_id, rung"
            )).all()
            assert [tuple(r) for r in resources] == [
                (1, 0, 1), (1, 1, 3), (2, 0, 1), (2, 1, 3), (4, 0, 1)
            ]
            ranked = conn.execute(text(
                "SELECT id, ranked_kind, ranked_step, ranked_loss FROM trials ORDER BY "
                "ranked_kind, ranked_step DESC, ranked_loss, number"
            )).all()
            assert [tuple(r) for r in ranked] == [
                (1, 0, 3, 0.2), (2, 0, 1, 0.1), (4, 1, 1, 0.0), (3, 2, None, 0.0)
            ]
        downgrade(empty_url, "0002")
        with engine.begin() as conn:
            counts = conn.execute(text(
                "SELECT (SELECT count(*) FROM trials), (SELECT count(*) FROM rung_results)"
            )).one()
            assert tuple(counts) == (4, 5)
    finally:
        engine.dispose()
