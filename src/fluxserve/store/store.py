"""The store: every query the service and the worker run, each one statement or one short transaction.

Queries are plain functions of a :class:`~sqlalchemy.Connection`; :class:`~fluxserve.store.db.Database`
decides how they run on each dialect. Hot statements are built once with bind parameters, so a
request pays neither statement construction nor cache-key generation.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select, update

from fluxserve.lifecycle import Status
from fluxserve.schema import utcnow
from fluxserve.store.db import Database
from fluxserve.store.rows import FileRow, KeyRow, PredictionRow, UsageRow
from fluxserve.store.tables import api_keys, files, predictions, webhook_deliveries
from fluxserve.store.workers import WorkerRegistry

_P = predictions.c
_UNSET: Any = object()
_D = webhook_deliveries.c

#: Called, inside the transaction, for every prediction that reaches a terminal state; a returned
#: dict is inserted into the webhook outbox (so the terminal webhook is as durable as the status).
TerminalHook = Callable[[PredictionRow], dict[str, Any] | None]

_GET = select(predictions).where(_P.id == bindparam("pid"))
_GET_OWNED = _GET.where(_P.key_id == bindparam("kid"))
_KEY_BY_HASH = select(api_keys).where(api_keys.c.token_hash == bindparam("h"), api_keys.c.revoked_at.is_(None))
_INSERT = predictions.insert()
_CANCEL_QUEUED = (
    update(predictions)
    .where(_P.id == bindparam("pid"), _P.key_id == bindparam("kid"), _P.status == Status.STARTING.value)
    .values(status=Status.CANCELED.value, completed_at=bindparam("now"), cancel_requested=True)
)
_CANCEL_RUNNING = (
    update(predictions)
    .where(_P.id == bindparam("pid"), _P.key_id == bindparam("kid"), _P.status == Status.PROCESSING.value)
    .values(cancel_requested=True)
)
_FINISH = (
    update(predictions)
    .where(
        _P.id == bindparam("pid"),
        _P.lease_token == bindparam("token"),
        _P.status == Status.PROCESSING.value,
    )
    .values(
        status=bindparam("new_status"),
        output=bindparam("new_output"),
        logs=bindparam("new_logs"),
        error=bindparam("new_error"),
        metrics=bindparam("new_metrics"),
        completed_at=bindparam("completed"),
        lease_token=None,
        lease_expires_at=None,
    )
    .returning(*predictions.c)
)


def hash_token(token: str) -> str:
    """SHA-256 hex of an API token: what the database holds."""
    return hashlib.sha256(token.encode()).hexdigest()


def _prediction(mapping: Any) -> PredictionRow | None:
    return PredictionRow.from_mapping(mapping) if mapping is not None else None


# --- queries (functions of a connection) --------------------------------------------------------------


def _q_get(conn: Connection, pid: str, kid: str | None) -> PredictionRow | None:
    if kid is None:
        return _prediction(conn.execute(_GET, {"pid": pid}).mappings().first())
    return _prediction(conn.execute(_GET_OWNED, {"pid": pid, "kid": kid}).mappings().first())


def _q_insert(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(_INSERT, values)


def _q_request_cancel(conn: Connection, pid: str, kid: str, on_terminal: TerminalHook | None) -> PredictionRow | None:
    params = {"pid": pid, "kid": kid, "now": utcnow()}
    canceled_queued = conn.execute(_CANCEL_QUEUED, params).rowcount
    conn.execute(_CANCEL_RUNNING, params)
    row = _q_get(conn, pid, kid)
    if canceled_queued and row is not None:
        _q_outbox(conn, on_terminal, [row])
    return row


def _q_outbox(conn: Connection, on_terminal: TerminalHook | None, rows: list[PredictionRow]) -> None:
    if on_terminal is None:
        return
    for row in rows:
        delivery = on_terminal(row)
        if delivery is not None:
            conn.execute(webhook_deliveries.insert(), delivery)


@functools.lru_cache(maxsize=64)
def _claim_statement(models: tuple[str, ...]) -> Any:
    """The claim UPDATE for one set of models, built once (the model list is a worker's constant)."""
    candidate = (
        select(_P.id)
        # Equalities, not IN: SQLAlchemy renders IN lists anew at every execution.
        .where(_P.status == Status.STARTING.value, or_(*(_P.model == m for m in models)))
        .order_by(_P.created_at, _P.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(predictions)
        .where(_P.id == candidate, _P.status == Status.STARTING.value)
        .values(
            status=Status.PROCESSING.value,
            started_at=bindparam("now"),
            lease_token=bindparam("token"),
            lease_expires_at=bindparam("expires"),
            worker_id=bindparam("worker"),
            attempts=_P.attempts + 1,
        )
        .returning(*predictions.c)
    )


def _q_claim(conn: Connection, models: tuple[str, ...], worker_id: str, lease_seconds: float) -> PredictionRow | None:
    now = utcnow()
    params = {
        "now": now,
        "token": secrets.token_hex(16),
        "expires": now + timedelta(seconds=lease_seconds),
        "worker": worker_id,
    }
    return _prediction(conn.execute(_claim_statement(models), params).mappings().first())


class Store:
    """Async access to keys and predictions on SQLite or PostgreSQL (same SQL on both)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.on_terminal: TerminalHook | None = None
        #: Worker records (liveness, model states, operator requests).
        self.workers = WorkerRegistry(db)

    @classmethod
    def connect(cls, url: str, *, sqlite_synchronous: str = "NORMAL") -> Store:
        """A store on ``url`` (connections open lazily)."""
        return cls(Database(url, sqlite_synchronous=sqlite_synchronous))

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.db.dialect

    async def migrate(self) -> None:
        """Apply pending migrations."""
        await self.db.migrate()

    async def close(self) -> None:
        """Close every connection."""
        await self.db.close()

    async def ping(self) -> None:
        """Run a trivial query; raises if the database is unreachable."""
        await self.db.read(lambda conn: conn.execute(select(1)).scalar_one())

    # --- keys ---------------------------------------------------------------------------------------

    async def create_key(self, name: str, *, admin: bool = False) -> tuple[KeyRow, str]:
        """Create a key (``admin``: it may also load and unload models); return its row and the token,
        which is shown once and never stored."""
        token = "fs_" + secrets.token_urlsafe(30)
        row = KeyRow(id=secrets.token_hex(8), name=name, token_hash=hash_token(token), created_at=utcnow(), admin=admin)
        values = {
            "id": row.id, "name": row.name, "token_hash": row.token_hash, "created_at": row.created_at, "admin": admin
        }  # fmt: skip
        await self.db.write(lambda conn: conn.execute(api_keys.insert(), values))
        return row, token

    async def key_by_token(self, token: str) -> KeyRow | None:
        """The live key whose token is ``token``, or None."""

        def query(conn: Connection) -> KeyRow | None:
            row = conn.execute(_KEY_BY_HASH, {"h": hash_token(token)}).mappings().first()
            return KeyRow(**row) if row else None

        return await self.db.read(query)

    async def list_keys(self) -> list[KeyRow]:
        """Every key, oldest first."""

        def query(conn: Connection) -> list[KeyRow]:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings().all()
            return [KeyRow(**r) for r in rows]

        return await self.db.read(query)

    async def count_keys(self) -> int:
        """How many live keys exist."""
        stmt = select(func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
        return await self.db.read(lambda conn: int(conn.execute(stmt).scalar_one()))

    # --- predictions: API side ------------------------------------------------------------------------

    async def insert_prediction(self, row: PredictionRow) -> None:
        """Insert a new prediction (the job)."""
        await self.db.write(_q_insert, row.to_values())

    async def get_prediction(self, prediction_id: str, key_id: str | None = None) -> PredictionRow | None:
        """The prediction ``prediction_id``; with ``key_id``, only if that key owns it."""
        return await self.db.read(_q_get, prediction_id, key_id)

    async def count_predictions(self, model: str) -> int:
        """How many predictions of ``model`` exist (a model's ``run_count``)."""
        stmt = select(func.count()).select_from(predictions).where(_P.model == model)
        return await self.db.read(lambda conn: int(conn.execute(stmt).scalar_one()))

    async def usage(
        self,
        key_id: str | None = None,
        *,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> dict[str, UsageRow]:
        """Usage per key (only ``key_id``'s when given) of the predictions created in the window.

        One aggregate over the predictions table: images and predict seconds are summed from the
        ``metrics`` JSON the worker wrote at finish. Retention clears input, output and logs but keeps
        status and metrics, so the figures stay right after the data is gone. A key's rows are found
        through ``ix_predictions_key_created`` (key_id, created_at), which also serves the window.
        """

        def by_status(status: Status) -> Any:
            return func.coalesce(func.sum(case((_P.status == status.value, 1), else_=0)), 0)

        stmt = select(
            _P.key_id,
            func.count(),
            by_status(Status.SUCCEEDED),
            by_status(Status.FAILED),
            by_status(Status.CANCELED),
            func.coalesce(func.sum(_P.metrics["image_count"].as_integer()), 0),
            func.coalesce(func.sum(_P.metrics["predict_time"].as_float()), 0.0),
        ).group_by(_P.key_id)
        if key_id is not None:
            stmt = stmt.where(_P.key_id == key_id)
        if created_after is not None:
            stmt = stmt.where(_P.created_at > created_after)
        if created_before is not None:
            stmt = stmt.where(_P.created_at < created_before)

        def query(conn: Connection) -> dict[str, UsageRow]:
            return {
                str(r[0]): UsageRow(
                    predictions=int(r[1]),
                    succeeded=int(r[2]),
                    failed=int(r[3]),
                    canceled=int(r[4]),
                    image_count=int(r[5]),
                    predict_time=float(r[6]),
                )
                for r in conn.execute(stmt)
            }

        return await self.db.read(query)

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

        def query(conn: Connection) -> list[PredictionRow]:
            return [PredictionRow.from_mapping(r) for r in conn.execute(stmt).mappings().all()]

        rows = await self.db.read(query)
        if after is not None:
            rows.reverse()
        return rows

    async def request_cancel(self, prediction_id: str, key_id: str) -> PredictionRow | None:
        """Cancel: a queued prediction ends ``canceled`` at once; a running one is flagged for its worker.

        Returns the row as it is afterwards, or None if the key has no such prediction. A terminal
        prediction is returned unchanged.
        """
        return await self.db.write(_q_request_cancel, prediction_id, key_id, self.on_terminal)

    # --- predictions: worker side ---------------------------------------------------------------------

    async def claim(self, models: Sequence[str], worker_id: str, lease_seconds: float) -> PredictionRow | None:
        """Take the oldest ``starting`` prediction of ``models``: status ``processing`` and a new lease.

        On PostgreSQL the candidate is locked ``FOR UPDATE SKIP LOCKED`` so concurrent workers never
        take the same row; SQLite serialises writers anyway.
        """
        if not models:
            return None
        return await self.db.write(_q_claim, tuple(models), worker_id, lease_seconds)

    async def update_running(
        self,
        prediction_id: str,
        lease_token: str,
        *,
        lease_seconds: float,
        logs: str | None = None,
        output: Any = _UNSET,
        checkpoint: dict[str, Any] | None = None,
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
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        stmt = (
            update(predictions)
            .where(_P.id == prediction_id, _P.lease_token == lease_token, _P.status == Status.PROCESSING.value)
            .values(**values)
            .returning(_P.cancel_requested)
        )

        def query(conn: Connection) -> bool | None:
            result = conn.execute(stmt).first()
            return None if result is None else bool(result[0])

        return await self.db.write(query)

    async def cancel_requested(self, prediction_id: str) -> bool:
        """Whether the user asked to cancel ``prediction_id``."""
        stmt = select(_P.cancel_requested).where(_P.id == prediction_id)
        return await self.db.read(lambda conn: bool(conn.execute(stmt).scalar_one_or_none()))

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
        params = {
            "pid": prediction_id,
            "token": lease_token,
            "new_status": status.value,
            "new_output": output,
            "new_logs": logs,
            "new_error": error,
            "new_metrics": metrics,
            "completed": completed_at,
        }

        def query(conn: Connection) -> bool:
            row = _prediction(conn.execute(_FINISH, params).mappings().first())
            if row is None:
                return False
            _q_outbox(conn, self.on_terminal, [row])
            return True

        return await self.db.write(query)

    async def release_processing(
        self, error: str, note: str, *, expired_before: datetime | None = None
    ) -> tuple[list[str], list[str]]:
        """Take ``processing`` predictions away from a worker that is gone; return (requeued ids, failed ids).

        Those that saved a checkpoint go back to ``starting`` with ``note`` appended to their logs: the next
        worker resumes them (a forwarded prediction keeps following its upstream run). The others fail with
        ``error`` (and their terminal webhook joins the outbox), in the same transaction.

        With ``expired_before``, only rows whose lease expired before then (the reaper); without it, every
        ``processing`` row (start-up recovery of the single-process SQLite deployment).
        """
        where = [_P.status == Status.PROCESSING.value]
        if expired_before is not None:
            where.append(_P.lease_expires_at < expired_before)
        released = {"lease_token": None, "lease_expires_at": None}
        requeue = (
            update(predictions)
            .where(*where, _P.checkpoint.is_not(None))
            .values(status=Status.STARTING.value, logs=func.coalesce(_P.logs, "") + note + "\n", worker_id=None,
                    **released)
            .returning(_P.id)
        )  # fmt: skip
        fail = (
            update(predictions)
            .where(*where)
            .values(status=Status.FAILED.value, error=error, completed_at=utcnow(), **released)
            .returning(*predictions.c)
        )

        def query(conn: Connection) -> tuple[list[str], list[str]]:
            requeued = [r[0] for r in conn.execute(requeue).all()]
            failed = [PredictionRow.from_mapping(r) for r in conn.execute(fail).mappings().all()]
            _q_outbox(conn, self.on_terminal, failed)
            return requeued, [r.id for r in failed]

        return await self.db.write(query)

    # --- queue ------------------------------------------------------------------------------------

    async def _end(self, stmt: Any) -> list[str]:
        """Run an UPDATE … RETURNING that ends predictions; their terminal webhooks join the outbox in the same
        transaction. Returns their ids."""

        def query(conn: Connection) -> list[str]:
            rows = [PredictionRow.from_mapping(r) for r in conn.execute(stmt).mappings().all()]
            _q_outbox(conn, self.on_terminal, rows)
            return [r.id for r in rows]

        return await self.db.write(query)

    async def fail_queued(self, model: str, error: str) -> list[str]:
        """Fail every ``starting`` prediction of ``model`` with ``error`` (its model cannot load); their ids."""
        stmt = (
            update(predictions)
            .where(_P.model == model, _P.status == Status.STARTING.value)
            .values(status=Status.FAILED.value, error=error, completed_at=utcnow())
            .returning(*predictions.c)
        )
        return await self._end(stmt)

    async def oldest_queued(self, models: Sequence[str]) -> datetime | None:
        """When the oldest ``starting`` prediction of ``models`` was created (None if none waits)."""
        if not models:
            return None
        stmt = select(func.min(_P.created_at)).where(_P.status == Status.STARTING.value, _P.model.in_(list(models)))
        # min() keeps the column's type, so the value comes back as an aware UTC datetime on both dialects.
        return await self.db.read(lambda conn: conn.execute(stmt).scalar_one_or_none())

    async def log_queue_positions(
        self, model: str, *, limit: int, line: Callable[[int], str], created_before: datetime
    ) -> list[str]:
        """Append ``line(ahead)`` to the logs of the first ``limit`` queued predictions of ``model`` whose
        position changed since it was last written; return their ids.

        Only predictions created before ``created_before`` are told (one claimed at once needs no position
        line); they are the head of the queue, so the count ahead of each is exact. Idempotent (the position
        is compared first), so several workers may run it side by side.
        """
        head = (
            select(_P.id, _P.queue_position)
            .where(_P.model == model, _P.status == Status.STARTING.value, _P.created_at < created_before)
            .order_by(_P.created_at, _P.id)
            .limit(limit)
        )

        def query(conn: Connection) -> list[str]:
            moved = []
            for ahead, (pid, written) in enumerate(conn.execute(head).all()):
                if written == ahead:
                    continue
                changed = conn.execute(
                    update(predictions)
                    .where(_P.id == pid, _P.status == Status.STARTING.value)
                    .values(logs=func.coalesce(_P.logs, "") + line(ahead), queue_position=ahead)
                ).rowcount
                if changed:
                    moved.append(str(pid))
            return moved

        return await self.db.write(query)

    async def queued_count(self, model: str) -> int:
        """How many predictions of ``model`` wait for a worker."""
        stmt = (
            select(func.count()).select_from(predictions).where(_P.model == model, _P.status == Status.STARTING.value)
        )
        return await self.db.read(lambda conn: int(conn.execute(stmt).scalar_one()))

    # --- webhooks ---------------------------------------------------------------------------------

    async def webhook_secret(self, key_id: str, candidate: str) -> str:
        """The key's webhook signing secret; ``candidate`` becomes it if the key has none yet."""

        def query(conn: Connection) -> str:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.webhook_secret.is_(None))
                .values(webhook_secret=candidate)
            )
            return str(conn.execute(select(api_keys.c.webhook_secret).where(api_keys.c.id == key_id)).scalar_one())

        return await self.db.write(query)

    async def claim_deliveries(self, *, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
        """Due ``pending`` outbox rows, leased to this process (pushed ``lease_seconds`` into the future)."""
        now = utcnow()
        due = (
            select(_D.id)
            .where(_D.state == "pending", _D.next_attempt_at <= now)
            .order_by(_D.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(webhook_deliveries)
            .where(_D.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=now + timedelta(seconds=lease_seconds))
            .returning(*webhook_deliveries.c)
        )
        return await self.db.write(lambda conn: [dict(r) for r in conn.execute(stmt).mappings().all()])

    async def delivery_done(self, delivery_id: str, attempts: int) -> None:
        """Mark a delivery delivered."""
        stmt = update(webhook_deliveries).where(_D.id == delivery_id).values(state="delivered", attempts=attempts)
        await self.db.write(lambda conn: conn.execute(stmt))

    async def delivery_retry(self, delivery_id: str, attempts: int, at: datetime, error: str) -> None:
        """Schedule the next attempt of a delivery."""
        stmt = (
            update(webhook_deliveries)
            .where(_D.id == delivery_id)
            .values(attempts=attempts, next_attempt_at=at, last_error=error[:500])
        )
        await self.db.write(lambda conn: conn.execute(stmt))

    async def delivery_failed(self, delivery_id: str, attempts: int, error: str) -> None:
        """Give up on a delivery."""
        stmt = (
            update(webhook_deliveries)
            .where(_D.id == delivery_id)
            .values(state="failed", attempts=attempts, last_error=error[:500])
        )
        await self.db.write(lambda conn: conn.execute(stmt))

    async def deliveries_for(self, prediction_id: str) -> list[dict[str, Any]]:
        """The outbox rows of a prediction (for tests and operators)."""
        stmt = select(webhook_deliveries).where(_D.prediction_id == prediction_id)
        return await self.db.read(lambda conn: [dict(r) for r in conn.execute(stmt).mappings().all()])

    # --- files --------------------------------------------------------------------------------------

    async def insert_file(self, row: FileRow) -> None:
        """Record an uploaded file."""
        values = {k: getattr(row, k) for k in FileRow.__dataclass_fields__}
        await self.db.write(lambda conn: conn.execute(files.insert(), values))

    async def get_file(self, file_id: str, key_id: str, *, now: datetime) -> FileRow | None:
        """The key's unexpired file ``file_id``, or None."""
        stmt = select(files).where(files.c.id == file_id, files.c.key_id == key_id, files.c.expires_at > now)

        def query(conn: Connection) -> FileRow | None:
            row = conn.execute(stmt).mappings().first()
            return FileRow(**row) if row else None

        return await self.db.read(query)

    async def list_files(
        self, key_id: str, *, now: datetime, limit: int, before: tuple[datetime, str] | None
    ) -> list[FileRow]:
        """The key's unexpired files, newest first (keyset pagination like predictions)."""
        stmt = select(files).where(files.c.key_id == key_id, files.c.expires_at > now)
        if before is not None:
            ts, fid = before
            stmt = stmt.where(or_(files.c.created_at < ts, and_(files.c.created_at == ts, files.c.id < fid)))
        stmt = stmt.order_by(files.c.created_at.desc(), files.c.id.desc()).limit(limit)
        return await self.db.read(lambda conn: [FileRow(**r) for r in conn.execute(stmt).mappings().all()])

    async def delete_file(self, file_id: str, key_id: str) -> bool:
        """Delete the key's file record; False if there was none."""
        stmt = files.delete().where(files.c.id == file_id, files.c.key_id == key_id)
        return await self.db.write(lambda conn: bool(conn.execute(stmt).rowcount))

    # --- deadlines and retention ------------------------------------------------------------------

    async def cancel_queued_past_deadline(self, error: str) -> list[str]:
        """``starting`` predictions whose deadline passed end ``canceled`` (never run); their ids."""
        now = utcnow()
        stmt = (
            update(predictions)
            .where(_P.status == Status.STARTING.value, _P.deadline.is_not(None), _P.deadline <= now)
            .values(status=Status.CANCELED.value, error=error, completed_at=now, cancel_requested=True)
            .returning(*predictions.c)
        )
        return await self._end(stmt)

    async def predictions_to_purge(self, completed_before: datetime, limit: int) -> list[PredictionRow]:
        """Terminal predictions completed before ``completed_before`` whose data is still there."""
        stmt = (
            select(predictions)
            .where(
                _P.status.in_([s.value for s in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)]),
                _P.completed_at < completed_before,
                _P.data_removed.is_(False),
            )
            .order_by(_P.completed_at)
            .limit(limit)
        )
        return await self.db.read(lambda conn: [PredictionRow.from_mapping(r) for r in conn.execute(stmt).mappings()])

    async def mark_data_removed(self, prediction_id: str) -> None:
        """Drop input, output and logs of a terminal prediction; metadata and metrics stay."""
        stmt = (
            update(predictions)
            .where(_P.id == prediction_id)
            .values(input=None, output=None, logs=None, data_removed=True)
        )
        await self.db.write(lambda conn: conn.execute(stmt))

    async def expired_files(self, now: datetime, limit: int) -> list[FileRow]:
        """Uploaded files past their expiry."""
        stmt = select(files).where(files.c.expires_at <= now).order_by(files.c.expires_at).limit(limit)
        return await self.db.read(lambda conn: [FileRow(**r) for r in conn.execute(stmt).mappings().all()])

    async def forget_file(self, file_id: str) -> None:
        """Delete a file record (its blob is deleted by the caller)."""
        await self.db.write(lambda conn: conn.execute(files.delete().where(files.c.id == file_id)))
