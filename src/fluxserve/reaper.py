"""Housekeeping that runs in every process (API replicas and workers); safe to run concurrently.

The reaper fails predictions whose worker stopped renewing its lease: the UPDATE only matches rows
whose lease expired, so two reapers never both fail one row, and a worker that lost its lease can
no longer write (its compare-and-set fails).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fluxserve.config import Settings
from fluxserve.events import PREDICTION, EventHub
from fluxserve.schema import utcnow
from fluxserve.store.store import Store

log = logging.getLogger("fluxserve.reaper")

LEASE_LOST_ERROR = (
    "The worker running this prediction was lost (it stopped renewing its lease), so the prediction did not "
    "finish. Create it again."
)
# Worker records not refreshed for this many lease periods are deleted.
FORGET_WORKERS_AFTER_LEASES = 20


async def reap_once(store: Store, hub: EventHub) -> list[str]:
    """Fail every ``processing`` prediction whose lease has expired; return their ids."""
    reaped = await store.fail_processing(LEASE_LOST_ERROR, expired_before=utcnow())
    for pid in reaped:
        log.warning("prediction %s: lease expired; marked failed", pid)
        hub.publish(PREDICTION, pid)
    return reaped


async def maintain(store: Store, hub: EventHub, settings: Settings) -> None:
    """Run the reaper every third of a lease period, forever."""
    interval = max(0.5, settings.lease_seconds / 3)
    while True:
        await asyncio.sleep(interval)
        try:
            await reap_once(store, hub)
            await store.forget_workers(
                utcnow() - timedelta(seconds=settings.lease_seconds * FORGET_WORKERS_AFTER_LEASES)
            )
        except Exception as exc:
            log.warning("reaper failed (will retry): %s", exc)
