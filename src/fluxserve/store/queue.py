"""The queue: claim with a lease, heartbeats, compare-and-set finish, release of lost work, and the
queued predictions' fate (failed loads, deadlines, queue positions). The prediction row is the job."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, or_, select, update

from fluxserve.lifecycle import Status
from fluxserve.schema import utcnow
from fluxserve.store.base import StoreBase, add_to_outbox, prediction_or_none
from fluxserve.store.rows import PredictionRow, db_text
from fluxserve.store.tables import predictions

_P = predictions.c
_UNSET: Any = object()
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
    return prediction_or_none(conn.execute(_claim_statement(models), params).mappings().first())


class QueueMixin(StoreBase):
    """Predictions as workers and housekeeping move them through the queue."""

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
            values["logs"] = db_text(logs)
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
            "new_logs": db_text(logs),
            "new_error": db_text(error),
            "new_metrics": metrics,
            "completed": completed_at,
        }

        def query(conn: Connection) -> bool:
            row = prediction_or_none(conn.execute(_FINISH, params).mappings().first())
            if row is None:
                return False
            add_to_outbox(conn, self.on_terminal, [row])
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
            .values(status=Status.FAILED.value, error=db_text(error), completed_at=utcnow(), **released)
            .returning(*predictions.c)
        )

        def query(conn: Connection) -> tuple[list[str], list[str]]:
            requeued = [r[0] for r in conn.execute(requeue).all()]
            failed = [PredictionRow.from_mapping(r) for r in conn.execute(fail).mappings().all()]
            add_to_outbox(conn, self.on_terminal, failed)
            return requeued, [r.id for r in failed]

        return await self.db.write(query)

    async def fail_queued(self, model: str, error: str) -> list[str]:
        """Fail every ``starting`` prediction of ``model`` with ``error`` (its model cannot load); their ids."""
        stmt = (
            update(predictions)
            .where(_P.model == model, _P.status == Status.STARTING.value)
            .values(status=Status.FAILED.value, error=db_text(error), completed_at=utcnow())
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

    async def cancel_queued_past_deadline(self, error: str) -> list[str]:
        """``starting`` predictions whose deadline passed end ``canceled`` (never run); their ids."""
        now = utcnow()
        stmt = (
            update(predictions)
            .where(_P.status == Status.STARTING.value, _P.deadline.is_not(None), _P.deadline <= now)
            .values(status=Status.CANCELED.value, error=db_text(error), completed_at=now, cancel_requested=True)
            .returning(*predictions.c)
        )
        return await self._end(stmt)
