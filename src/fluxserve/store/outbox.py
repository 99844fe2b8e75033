"""The webhook outbox: deliveries leased, retried and settled."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from fluxserve.schema import utcnow
from fluxserve.store.base import StoreBase
from fluxserve.store.tables import webhook_deliveries

_D = webhook_deliveries.c


class OutboxMixin(StoreBase):
    """Webhook deliveries."""

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
