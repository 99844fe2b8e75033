"""Predictions, API side: insert, get, list (keyset pages), usage, cancel, and data removal."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select, update

from fluxserve.lifecycle import Status
from fluxserve.schema import utcnow
from fluxserve.store.base import StoreBase, TerminalHook, add_to_outbox, prediction_or_none
from fluxserve.store.rows import PredictionRow, UsageRow
from fluxserve.store.tables import predictions

_P = predictions.c
_GET = select(predictions).where(_P.id == bindparam("pid"))
_GET_OWNED = _GET.where(_P.key_id == bindparam("kid"))
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


def _q_get(conn: Connection, pid: str, kid: str | None) -> PredictionRow | None:
    if kid is None:
        return prediction_or_none(conn.execute(_GET, {"pid": pid}).mappings().first())
    return prediction_or_none(conn.execute(_GET_OWNED, {"pid": pid, "kid": kid}).mappings().first())


def _q_insert(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(_INSERT, values)


def _q_request_cancel(conn: Connection, pid: str, kid: str, on_terminal: TerminalHook | None) -> PredictionRow | None:
    params = {"pid": pid, "kid": kid, "now": utcnow()}
    canceled_queued = conn.execute(_CANCEL_QUEUED, params).rowcount
    conn.execute(_CANCEL_RUNNING, params)
    row = _q_get(conn, pid, kid)
    if canceled_queued and row is not None:
        add_to_outbox(conn, on_terminal, [row])
    return row


class PredictionsMixin(StoreBase):
    """Predictions as the API reads and writes them."""

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
        source: str | None = None,
    ) -> list[PredictionRow]:
        """A key's predictions (of one ``source``, if given), newest first, keyset-paginated on (created_at, id).

        ``before`` gives the page after a cursor (older rows); ``after`` the page before one (newer
        rows, still returned newest first).
        """
        stmt = select(predictions).where(_P.key_id == key_id)
        if source is not None:
            stmt = stmt.where(_P.source == source)
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

    async def predictions_to_purge(self, completed_before: datetime, limit: int) -> list[PredictionRow]:
        """Terminal predictions completed before ``completed_before`` whose data is still there."""
        stmt = (
            select(predictions)
            .where(
                _P.status.in_([s.value for s in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)]),
                _P.completed_at < completed_before,
                _P.data_removed.is_(False),
                _P.example.is_(None),
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

    async def set_example(self, prediction_id: str, kind: str | None) -> PredictionRow | None:
        """Make a prediction one of its model's examples (``kind`` "example" or "default": the model's one
        default example, replacing any other) or, with None, an ordinary prediction again."""

        def query(conn: Connection) -> PredictionRow | None:
            row = _q_get(conn, prediction_id, None)
            if row is None:
                return None
            if kind == "default":
                conn.execute(
                    update(predictions).where(_P.model == row.model, _P.example == "default").values(example="example")
                )
            conn.execute(update(predictions).where(_P.id == prediction_id).values(example=kind))
            return _q_get(conn, prediction_id, None)

        return await self.db.write(query)

    async def examples(self, model: str, limit: int) -> list[PredictionRow]:
        """A model's example predictions: the default first, then newest first."""
        stmt = (
            select(predictions)
            .where(_P.model == model, _P.example.is_not(None))
            .order_by(case((_P.example == "default", 0), else_=1), _P.created_at.desc(), _P.id.desc())
            .limit(limit)
        )
        return await self.db.read(lambda conn: [PredictionRow.from_mapping(r) for r in conn.execute(stmt).mappings()])
