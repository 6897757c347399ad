"""Token checks that the role matrix (test_role_matrix.py) does not cover: a token looked up
on a pooled connection that the database dropped."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from tests.api.conftest import Api, bearer
from tests.conftest import DB_PARAMS
from tuner.storage.database import make_engine


@pytest.mark.parametrize("db_url", [DB_PARAMS[1]], indirect=True)
def test_a_token_looked_up_on_a_dropped_connection_is_looked_up_again(api: Api) -> None:
    """PostgreSQL: every backend of the service is terminated (a database restart, an
    administrator's pg_terminate_backend). A token the server has not verified yet is then
    looked up on a dead pooled connection: it is looked up again on a fresh one, and the
    request answered, not refused with a 503."""
    fresh = api.post("/tokens", {"role": "viewer", "name": "fresh"}, role="admin").json()
    assert api.get("/experiments").status_code == 200  # the read pool holds connections
    engine = api.client.app.state.runtime.engine  # type: ignore[attr-defined]
    admin = make_engine(engine.url, poolclass=NullPool)  # not one of the service's
    try:
        with admin.connect() as connection:
            terminated = connection.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalar()
    finally:
        admin.dispose()
    assert terminated
    answer = api.client.get("/api/v1/experiments", headers=bearer(fresh["token"]))
    assert answer.status_code == 200, answer.text
