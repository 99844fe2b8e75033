"""In-process test support: a real :class:`Runtime` (store, service, worker) behind the ASGI app, no subprocess.

``open_inprocess`` opens the runtime on a tmp data dir (SQLite, or a PostgreSQL URL), builds the app with
``create_app``, runs its lifespan and hands back an ``httpx.AsyncClient`` on ``httpx.ASGITransport``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fluxserve.api.app import create_app
from fluxserve.api.state import ApiState
from fluxserve.cli.options import with_store
from fluxserve.config import Settings
from fluxserve.runtime import Runtime
from fluxserve.service.predictions import PredictionService
from fluxserve.store.rows import KeyRow
from fluxserve.store.store import Store
from tests.support import create_pg_database, drop_pg_database, postgres_available

BACKENDS = ["sqlite", "postgres"]
FIXTURES = "fluxserve.predictors.fixtures:ALL"
TERMINAL = ("succeeded", "failed", "canceled")


def inprocess_settings(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    """Settings for an in-process runtime: demo weights, the fixture models, lazy loading, fast polling."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "demo": True,
        "extra_models": [FIXTURES],
        # Load each model at its first prediction (as tests/support.py Server does): no tiny FLUX build at start.
        "preload": "none",
        "poll_interval": 0.2,
        "shutdown_grace_seconds": 2.0,
        "rate_limit_create": "100000/minute",
        "rate_limit_other": "1000000/minute",
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def database_for(backend: str) -> Iterator[str | None]:
    """The database URL for ``backend``: None (SQLite in the data dir) or a fresh PostgreSQL database,
    dropped on exit. Skips (fails in CI) when PostgreSQL does not answer."""
    if backend == "sqlite":
        yield None
        return
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is required in CI and is not answering")
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not answering")
    url, name = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


async def create_key(settings: Settings, name: str = "test", *, admin: bool = False) -> tuple[KeyRow, str]:
    """Create an API key as ``fluxserve keys create`` does (its own store connection); (row, token)."""

    async def create(store: Store) -> tuple[KeyRow, str]:
        return await store.create_key(name, admin=admin)

    return await with_store(settings, create)


@dataclass
class InProcess:
    """A running in-process fluxserve: the runtime, the app and an authenticated ASGI client."""

    settings: Settings
    runtime: Runtime
    app: FastAPI
    client: httpx.AsyncClient
    key: KeyRow
    token: str

    @property
    def service(self) -> PredictionService:
        """The runtime's prediction service."""
        return self.runtime.service

    @property
    def store(self) -> Store:
        """The runtime's store."""
        return self.runtime.store

    async def new_key(self, name: str = "extra") -> tuple[KeyRow, str]:
        """Another API key on the same database (the CLI path)."""
        return await create_key(self.settings, name)

    def auth(self, token: str | None = None) -> dict[str, str]:
        """``Authorization`` header for ``token`` (default: this instance's key)."""
        return {"Authorization": f"Bearer {token or self.token}"}

    def client_with(self, token: str | None) -> httpx.AsyncClient:
        """A new ASGI client on the same app sending ``token`` (None: no ``Authorization`` header at all)."""
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test", headers=headers)

    async def wait_for(self, prediction_id: str, seconds: float = 20, until: Any = None) -> dict[str, Any]:
        """Poll ``GET /v1/predictions/{id}`` over ASGI until ``until(body)`` (default: a terminal status)."""
        done = until or (lambda p: p["status"] in TERMINAL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            response = await self.client.get(f"/v1/predictions/{prediction_id}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if done(body) or loop.time() > deadline:
                return body
            await asyncio.sleep(0.05)


@asynccontextmanager
async def open_inprocess(
    data_dir: Path,
    database_url: str | None = None,
    *,
    with_worker: bool = True,
    worker_models: list[str] | None = None,
    **overrides: Any,
) -> AsyncIterator[InProcess]:
    """Open a runtime (with the in-process worker unless ``with_worker=False``), create a key, build the app,
    run its lifespan and yield an :class:`InProcess` whose client is authenticated with that key."""
    settings = inprocess_settings(data_dir, database_url, **overrides)
    key, token = await create_key(settings)
    runtime = await Runtime.open(settings, with_worker=with_worker, worker_models=worker_models)
    try:

        @asynccontextmanager
        async def open_state(_settings: Settings) -> AsyncIterator[ApiState]:
            yield runtime.api_state()

        app = create_app(settings, open_state)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=headers, timeout=30
            ) as client:
                yield InProcess(settings, runtime, app, client, key, token)
    finally:
        await runtime.close()
