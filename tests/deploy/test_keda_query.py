"""The KEDA queries against a real PostgreSQL database: migrated by the migration Job's own script, with
predictions written through fluxserve's Store, the query run as KEDA's postgresql scaler runs it (one value)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from fluxserve.lifecycle import Status
from fluxserve.schema import utcnow
from fluxserve.service.predictions import new_prediction_id
from fluxserve.store.db import MIGRATIONS_DIR
from fluxserve.store.rows import PredictionRow
from fluxserve.store.store import Store
from tests.deploy.files import (
    compose_migrate_script,
    migrate_job_script,
    postgresql_trigger,
    scaled_objects,
    worker_deployments,
    worker_models,
)
from tests.support import create_pg_database, drop_pg_database, postgres_available

#: A model no worker Deployment of the base serves (non-commercial: refused under the default settings).
UNSERVED_MODEL = "black-forest-labs/flux-dev"


@pytest.fixture(scope="module")
def migrated_database() -> Iterator[str]:
    """A fresh database migrated by running the migration Job's script, as the Job's pod would."""
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is required in CI and is not answering")
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not answering")
    url, name = create_pg_database()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXSERVE_")}
        env["FLUXSERVE_DATABASE_URL"] = url
        done = subprocess.run(
            [sys.executable, "-c", migrate_job_script()], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "schema is up to date" in done.stdout
        yield url
    finally:
        drop_pg_database(name)


@pytest.fixture
async def store(migrated_database: str) -> AsyncIterator[Store]:
    """fluxserve's Store on the migrated database, emptied of predictions and keys."""
    st = Store.connect(migrated_database)
    conn = await asyncpg.connect(migrated_database)
    try:
        await conn.execute("DELETE FROM predictions")
        await conn.execute("DELETE FROM api_keys")
    finally:
        await conn.close()
    yield st
    await st.close()


async def keda_value(url: str, query: str) -> int:
    """What KEDA's postgresql scaler reads: the single value of the query's single row."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(query)
    finally:
        await conn.close()
    assert len(rows) == 1 and len(rows[0]) == 1, "KEDA scans one value from one row"
    value = rows[0][0]
    assert isinstance(value, int)
    return value


async def _insert(store: Store, key_id: str, model: str, status: Status = Status.STARTING, ms: int = 0) -> str:
    row = PredictionRow(
        id=new_prediction_id(),
        key_id=key_id,
        model=model,
        version="hidden",
        input={"prompt": "a paper boat"},
        status=status,
        created_at=utcnow() + timedelta(milliseconds=ms),
        completed_at=utcnow() if status.is_terminal else None,
    )
    await store.insert_prediction(row)
    return row.id


async def _finish(store: Store, models: list[str], status: Status) -> None:
    claimed = await store.claim(models, "worker-test", 30)
    assert claimed is not None and claimed.lease_token
    done = await store.finish(
        claimed.id,
        claimed.lease_token,
        status=status,
        output=None,
        logs="",
        error=None if status is Status.SUCCEEDED else "stopped",
        metrics={"predict_time": 0.1},
        completed_at=utcnow(),
    )
    assert done


async def test_the_migration_job_and_compose_run_one_script_that_reaches_the_head(migrated_database: str) -> None:
    assert compose_migrate_script().strip() == migrate_job_script().strip()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    conn = await asyncpg.connect(migrated_database)
    try:
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == head
        columns = {
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'predictions'"
            )
        }
    finally:
        await conn.close()
    assert {"status", "model"} <= columns, "the columns the KEDA queries read"


def _scaled_object_ids() -> list[str]:
    return [s["metadata"]["name"] for s in scaled_objects()]


@pytest.mark.parametrize("name", _scaled_object_ids())
async def test_each_query_counts_exactly_its_workers_queued_and_running_predictions(
    name: str, migrated_database: str, store: Store
) -> None:
    (scaled,) = [s for s in scaled_objects() if s["metadata"]["name"] == name]
    trigger = postgresql_trigger(scaled)
    query = trigger["metadata"]["query"]
    activation = float(trigger["metadata"]["activationTargetQueryValue"])
    target = scaled["spec"]["scaleTargetRef"]["name"]
    # The models come from the scaled Deployment's own --model list, so a model added to the Deployment but not
    # to the query (or the other way round) fails here.
    (deployment,) = [d for d in worker_deployments() if d["metadata"]["name"] == target]
    models = worker_models(deployment)
    others = [m for d in worker_deployments() if d is not deployment for m in worker_models(d)] + [UNSERVED_MODEL]
    key, _ = await store.create_key("keda")

    assert await keda_value(migrated_database, query) == 0, "nothing queued: the scaler must read 0"
    # One queued prediction of the first model activates the scaler (KEDA: active when value > activation).
    await _insert(store, key.id, models[0])
    assert await keda_value(migrated_database, query) == 1 > activation

    # Other groups' work, and finished work of this group, never count.
    for i, model in enumerate(others):
        await _insert(store, key.id, model, ms=i)
        await _insert(store, key.id, model, ms=i + 1)
        assert await store.claim([model], "other-worker", 30) is not None
    for model in models:
        await _insert(store, key.id, model, Status.FAILED)
        await _insert(store, key.id, model, Status.CANCELED)
    assert await keda_value(migrated_database, query) == 1

    # Per model of this group: 3 more queued, of which one is claimed (processing) and one runs to the end.
    for model in models:
        for i in range(3):
            await _insert(store, key.id, model, ms=10 + i)
        assert await store.claim([model], "worker-a", 30) is not None
        await _finish(store, [model], Status.SUCCEEDED)
    expected = 1 + 2 * len(models)
    assert await keda_value(migrated_database, query) == expected
    queued = sum([await store.queued_count(m) for m in models])
    assert queued == expected - len(models), "fluxserve's own count of the queued ones agrees"

    # All of this group's work finishes: back to 0, which lets KEDA scale the Deployment to zero.
    for model in models:
        while await store.queued_count(model):
            await _finish(store, [model], Status.SUCCEEDED)
    conn = await asyncpg.connect(migrated_database)
    try:
        running = await conn.fetch(
            "SELECT id, lease_token FROM predictions WHERE status = 'processing' AND worker_id = 'worker-a'"
        )
    finally:
        await conn.close()
    for row in running:
        finished = await store.finish(
            row["id"],
            row["lease_token"],
            status=Status.CANCELED,
            output=None,
            logs="",
            error="canceled",
            metrics={},
            completed_at=utcnow(),
        )
        assert finished
    assert await keda_value(migrated_database, query) == 0
    assert sum([await store.queued_count(m) for m in others]) == len(others), "the other groups' queues remain"
