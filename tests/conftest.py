"""Shared fixtures: tiny FLUX weights built once, real servers on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Server, create_key, create_pg_database, drop_pg_database, postgres_available

BACKENDS = ["sqlite", "postgres"]


def _require_postgres() -> None:
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is required in CI and is not answering")
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not answering")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random flux-schnell pipeline, built once per test run (as ``--demo`` does)."""
    from fluxserve.predictors.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("weights") / "flux-schnell", kind="schnell")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run; dropped at the end."""
    _require_postgres()
    url, name = create_pg_database()
    yield url
    drop_pg_database(name)


def make_server(
    root: Path, tiny_weights: Path, database_url: str | None, key: str | None = None, **kwargs: object
) -> Server:
    """A server whose demo weights are the session's tiny pipeline (linked, not rebuilt)."""
    root.mkdir(parents=True, exist_ok=True)
    demo = root / "demo-weights"
    demo.mkdir(exist_ok=True)
    link = demo / "flux-schnell"
    if not link.exists():
        link.symlink_to(tiny_weights, target_is_directory=True)
    server = Server(data_dir=root, database_url=database_url, **kwargs)  # type: ignore[arg-type]
    server.key = key or create_key(root, server.env())
    return server


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path
) -> Iterator[Server]:
    """A running ``fluxserve serve --demo`` (with the fixture models), once per backend."""
    database_url = None
    if request.param == "postgres":
        database_url = request.getfixturevalue("pg_database")
    srv = make_server(tmp_path_factory.mktemp(f"server-{request.param}"), tiny_weights, database_url)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    """A migrated :class:`Store` on a fresh SQLite file or the run's PostgreSQL database (emptied)."""
    from sqlalchemy import text

    from fluxserve.store.store import Store

    if request.param == "postgres":
        url = request.getfixturevalue("pg_store_database")
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
    st = Store.connect(url)
    await st.migrate()
    if request.param == "postgres":

        def empty(conn: Any) -> None:
            conn.execute(text("DELETE FROM predictions"))
            conn.execute(text("DELETE FROM api_keys"))
            conn.execute(text("DELETE FROM workers"))

        await st.db.write(empty)
    yield st
    await st.close()


@pytest.fixture(scope="session")
def pg_store_database() -> Iterator[str]:
    """A PostgreSQL database for store tests (separate from the servers' database)."""
    _require_postgres()
    url, name = create_pg_database()
    yield url
    drop_pg_database(name)
