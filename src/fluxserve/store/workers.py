"""The worker registry: which workers are alive, what each serves, the state of each of its models,
and the operator requests (load, unload) waiting for them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from fluxserve.schema import utcnow
from fluxserve.store.db import Database
from fluxserve.store.rows import WorkerRow
from fluxserve.store.tables import workers

_W = workers.c


class WorkerRegistry:
    """Worker records in the database (one row per worker process, refreshed by its heartbeat)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def heartbeat(
        self,
        worker_id: str,
        hostname: str,
        models: Sequence[str],
        states: Mapping[str, dict[str, Any]] | None = None,
        *,
        hardware: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Record that ``worker_id`` is alive, serves ``models`` with ``states``; return (and clear) the
        operator requests waiting for it."""
        now = utcnow()
        values: dict[str, Any] = {"last_seen_at": now, "models": list(models)}
        if states is not None:
            values["model_states"] = dict(states)
        if hardware is not None:
            values["hardware"] = hardware

        def upsert(conn: Connection) -> list[dict[str, Any]]:
            pending = conn.execute(select(_W.requests).where(_W.id == worker_id)).first()
            if pending is None:
                conn.execute(workers.insert().values(id=worker_id, hostname=hostname, started_at=now, **values))
                return []
            conn.execute(update(workers).where(_W.id == worker_id).values(requests=None, **values))
            return list(pending[0] or [])

        return await self.db.write(upsert)

    async def gone(self, worker_id: str) -> None:
        """Remove a worker that stops cleanly."""
        await self.db.write(lambda conn: conn.execute(workers.delete().where(_W.id == worker_id)))

    async def live(self, seen_after: datetime) -> list[WorkerRow]:
        """Workers seen after ``seen_after``."""
        stmt = select(workers).where(_W.last_seen_at > seen_after).order_by(_W.started_at, _W.id)

        def query(conn: Connection) -> list[WorkerRow]:
            return [
                WorkerRow(
                    id=r["id"],
                    hostname=r["hostname"],
                    models=list(r["models"]),
                    started_at=r["started_at"],
                    last_seen_at=r["last_seen_at"],
                    model_states=dict(r["model_states"] or {}),
                    hardware=dict(r["hardware"] or {}),
                )
                for r in conn.execute(stmt).mappings()
            ]

        return await self.db.read(query)

    async def forget(self, seen_before: datetime) -> None:
        """Delete worker records not refreshed since ``seen_before``."""
        await self.db.write(lambda conn: conn.execute(workers.delete().where(_W.last_seen_at < seen_before)))

    async def request(self, model: str, action: str, seen_after: datetime) -> list[str]:
        """Queue ``action`` ("load" or "unload") of ``model`` for every live worker serving it; their ids."""

        def query(conn: Connection) -> list[str]:
            rows = conn.execute(
                select(_W.id, _W.models, _W.requests).where(_W.last_seen_at > seen_after).with_for_update()
            ).all()
            targets = []
            for wid, models, pending in rows:
                if model in (models or []):
                    queued = [*(pending or []), {"action": action, "model": model}]
                    conn.execute(update(workers).where(_W.id == wid).values(requests=queued))
                    targets.append(str(wid))
            return targets

        return await self.db.write(query)
