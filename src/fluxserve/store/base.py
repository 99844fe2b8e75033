"""What the parts of the store share: the terminal-webhook outbox hook and a helper to end predictions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from fluxserve.store.db import Database
from fluxserve.store.rows import PredictionRow
from fluxserve.store.tables import predictions, webhook_deliveries

_P = predictions.c
_D = webhook_deliveries.c

#: Called, inside the transaction, for every prediction that reaches a terminal state; a returned
#: dict is inserted into the webhook outbox (so the terminal webhook is as durable as the status).
TerminalHook = Callable[[PredictionRow], dict[str, Any] | None]


def prediction_or_none(mapping: Any) -> PredictionRow | None:
    """A row object from a mapping, or None."""
    return PredictionRow.from_mapping(mapping) if mapping is not None else None


def add_to_outbox(conn: Connection, on_terminal: TerminalHook | None, rows: list[PredictionRow]) -> None:
    """Insert the terminal webhook of each of ``rows`` (per ``on_terminal``) in the current transaction."""
    if on_terminal is None:
        return
    for row in rows:
        delivery = on_terminal(row)
        if delivery is not None:
            conn.execute(webhook_deliveries.insert(), delivery)


class StoreBase:
    """What every part of the store shares: the database and the terminal-webhook hook."""

    db: Database
    on_terminal: TerminalHook | None

    async def _end(self, stmt: Any) -> list[str]:
        """Run an UPDATE … RETURNING that ends predictions; their terminal webhooks join the outbox in the same
        transaction. Returns their ids."""

        def query(conn: Connection) -> list[str]:
            rows = [PredictionRow.from_mapping(r) for r in conn.execute(stmt).mappings().all()]
            add_to_outbox(conn, self.on_terminal, rows)
            return [r.id for r in rows]

        return await self.db.write(query)
