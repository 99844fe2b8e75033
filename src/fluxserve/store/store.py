"""The store: every query the service and the worker run. Single statements, so each write is atomic."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from fluxserve.lifecycle import Status
from fluxserve.schema import utcnow
from fluxserve.store.rows import KeyRow, PredictionRow
from fluxserve.store.tables import api_keys, predictions

_P = predictions.c
_UNSET: Any = object()


def hash_token(token: str) -> str:
    """SHA-256 hex of an API token: what the database holds."""
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    """Async access to keys and predictions on SQLite or PostgreSQL (same SQL on both)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    async def ping(self) -> None:
        """Run a trivial query; raises if the database is unreachable."""
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    # --- keys -------------------------------------------------------------------------------------

    async def create_key(self, name: str) -> tuple[KeyRow, str]:
        """Create a key; return its row and the token, which is shown once and never stored."""
        token = "fs_" + secrets.token_urlsafe(30)
        row = KeyRow(id=secrets.token_hex(8), name=name, token_hash=hash_token(token), created_at=utcnow())
        async with self.engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(id=row.id, name=row.name, token_hash=row.token_hash, created_at=row.created_at)
            )
        return row, token

    async def key_by_token(self, token: str) -> KeyRow | None:
        """The live key whose token is ``token``, or None."""
        stmt = select(api_keys).where(api_keys.c.token_hash == hash_token(token), api_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return KeyRow(**row) if row else None

    async def list_keys(self) -> list[KeyRow]:
        """Every key, oldest first."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).mappings().all()
        return [KeyRow(**r) for r in rows]

    async def count_keys(self) -> int:
        """How many live keys exist."""
        stmt = select(func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    # --- predictions: API side ----------------------------------------------------------------------

    async def insert_prediction(self, row: PredictionRow) -> None:
        """Insert a new prediction (the job)."""
        async with self.engine.begin() as conn:
            await conn.execute(predictions.insert().values(**row.to_values()))

    async def get_prediction(self, prediction_id: str, key_id: str | None = None) -> PredictionRow | None:
        """The prediction ``prediction_id``; with ``key_id``, only if that key owns it."""
        stmt = select(predictions).where(_P.id == prediction_id)
        if key_id is not None:
            stmt = stmt.where(_P.key_id == key_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return PredictionRow.from_mapping(row) if row else None

    async def list_predictions(
        self,
        key_id: str,
        *,
        limit: int,
        before: tuple[datetime, str] | None = None,
        after: tuple[datetime, str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> list[PredictionRow]:
        """A key's predictions, newest first, keyset-paginated on (created_at, id).

        ``before`` gives the page after a cursor (older rows); ``after`` the page before one (newer
        rows, still returned newest first).
        """
        stmt = select(predictions).where(_P.key_id == key_id)
        if created_after is not None:
            stmt = stmt.where(_P.created_at > created_after)
        if created_before is not None:
            stmt = stmt.where(_P.created_at < created_before)
        if before is not None:
            ts, pid = before
            stmt = stmt.where(or_(_P.created_at < ts, and_(_P.created_at == ts, _P.id < pid)))
        if after is not None:
            ts, pid = after
            stmt = stmt.where(or_(_P.created_at > ts, and_(_P.created_at == ts, _P.id > pid)))
            stmt = stmt.order_by(_P.created_at.asc(), _P.id.asc()).limit(limit)
        else:
            stmt = stmt.order_by(_P.created_at.desc(), _P.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = [PredictionRow.from_mapping(r) for r in (await conn.execute(stmt)).mappings().all()]
        if after is not None:
            rows.reverse()
        return rows

    async def count_predictions(self, model: str) -> int:
        """How many predictions of ``model`` exist (a model's ``run_count``)."""
        stmt = select(func.count()).select_from(predictions).where(_P.model == model)
        async with self.engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def request_cancel(self, prediction_id: str, key_id: str) -> PredictionRow | None:
        """Cancel: a queued prediction ends ``canceled`` at once; a running one is flagged for its worker.

        Returns the row as it is afterwards, or None if the key has no such prediction. A terminal
        prediction is returned unchanged.
        """
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(predictions)
                .where(_P.id == prediction_id, _P.key_id == key_id, _P.status == Status.STARTING.value)
                .values(status=Status.CANCELED.value, completed_at=now, cancel_requested=True)
            )
            await conn.execute(
                update(predictions)
                .where(_P.id == prediction_id, _P.key_id == key_id, _P.status == Status.PROCESSING.value)
                .values(cancel_requested=True)
            )
            row = (
                (await conn.execute(select(predictions).where(_P.id == prediction_id, _P.key_id == key_id)))
                .mappings()
                .first()
            )
        return PredictionRow.from_mapping(row) if row else None

    # --- predictions: worker side -------------------------------------------------------------------

    async def claim(self, models: Sequence[str], worker_id: str, lease_seconds: float) -> PredictionRow | None:
        """Take the oldest ``starting`` prediction of ``models``: status ``processing`` and a new lease.

        On PostgreSQL the candidate is locked ``FOR UPDATE SKIP LOCKED`` so concurrent workers never
        take the same row; SQLite serialises writers anyway.
        """
        if not models:
            return None
        now = utcnow()
        candidate = (
            select(_P.id)
            .where(_P.status == Status.STARTING.value, _P.model.in_(list(models)))
            .order_by(_P.created_at, _P.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            update(predictions)
            .where(_P.id == candidate, _P.status == Status.STARTING.value)
            .values(
                status=Status.PROCESSING.value,
                started_at=now,
                lease_token=secrets.token_hex(16),
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                worker_id=worker_id,
                attempts=_P.attempts + 1,
            )
            .returning(*predictions.c)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(stmt)).mappings().first()
        return PredictionRow.from_mapping(row) if row else None

    async def update_running(
        self,
        prediction_id: str,
        lease_token: str,
        *,
        lease_seconds: float,
        logs: str | None = None,
        output: Any = _UNSET,
    ) -> bool | None:
        """Heartbeat plus progress: renew the lease and write logs/output, only while we hold the lease.

        ``logs=None`` leaves the logs as they are. Returns None if the lease was lost, else whether
        the user asked to cancel.
        """
        values: dict[str, Any] = {"lease_expires_at": utcnow() + timedelta(seconds=lease_seconds)}
        if logs is not None:
            values["logs"] = logs
        if output is not _UNSET:
            values["output"] = output
        stmt = (
            update(predictions)
            .where(
                _P.id == prediction_id,
                _P.lease_token == lease_token,
                _P.status == Status.PROCESSING.value,
            )
            .values(**values)
            .returning(_P.cancel_requested)
        )
        async with self.engine.begin() as conn:
            result = (await conn.execute(stmt)).first()
        return None if result is None else bool(result[0])

    async def cancel_requested(self, prediction_id: str) -> bool:
        """Whether the user asked to cancel ``prediction_id``."""
        async with self.engine.connect() as conn:
            value = (await conn.execute(select(_P.cancel_requested).where(_P.id == prediction_id))).scalar_one_or_none()
        return bool(value)

    async def finish(
        self,
        prediction_id: str,
        lease_token: str,
        *,
        status: Status,
        output: Any,
        logs: str,
        error: str | None,
        metrics: dict[str, Any],
        completed_at: datetime,
    ) -> bool:
        """Write the terminal state; a compare-and-set on the lease token. False if the lease was lost."""
        assert status.is_terminal
        stmt = (
            update(predictions)
            .where(
                _P.id == prediction_id,
                _P.lease_token == lease_token,
                _P.status == Status.PROCESSING.value,
            )
            .values(
                status=status.value,
                output=output,
                logs=logs,
                error=error,
                metrics=metrics,
                completed_at=completed_at,
                lease_token=None,
                lease_expires_at=None,
            )
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def fail_processing(self, error: str, *, expired_before: datetime | None = None) -> list[str]:
        """Fail ``processing`` predictions whose worker is gone; return their ids.

        With ``expired_before``, only those whose lease expired before then (the reaper); without it,
        every ``processing`` row (start-up recovery of the single-process SQLite deployment).
        """
        now = utcnow()
        where = [_P.status == Status.PROCESSING.value]
        if expired_before is not None:
            where.append(_P.lease_expires_at < expired_before)
        stmt = (
            update(predictions)
            .where(*where)
            .values(
                status=Status.FAILED.value,
                error=error,
                completed_at=now,
                lease_token=None,
                lease_expires_at=None,
            )
            .returning(_P.id)
        )
        async with self.engine.begin() as conn:
            return [r[0] for r in (await conn.execute(stmt)).all()]
