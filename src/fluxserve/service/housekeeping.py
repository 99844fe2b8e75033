"""Housekeeping that runs in every process (API replicas and workers); safe to run concurrently.

Deadlines, the lease reaper, data retention and file expiry.

The reaper fails predictions whose worker stopped renewing its lease: the UPDATE only matches rows
whose lease expired, so two reapers never both fail one row, and a worker that lost its lease can
no longer write (its compare-and-set fails).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fluxserve.config import Settings
from fluxserve.events.hub import PREDICTION, WORK, EventHub
from fluxserve.lifecycle import DEADLINE_ERROR, LEASE_LOST_ERROR, RESUME_NOTE
from fluxserve.schema import utcnow
from fluxserve.storage import BlobStore, blob_keys
from fluxserve.store.store import Store

log = logging.getLogger("fluxserve.reaper")

# Retention runs every this many housekeeping rounds (about a second each).
RETENTION_EVERY = 10
# Worker records not refreshed for this many lease periods are deleted.
FORGET_WORKERS_AFTER_LEASES = 20


async def reap_once(store: Store, hub: EventHub) -> list[str]:
    """Fail every ``processing`` prediction whose lease has expired; return their ids."""
    requeued, reaped = await store.release_processing(LEASE_LOST_ERROR, RESUME_NOTE, expired_before=utcnow())
    for pid in requeued:
        log.warning("prediction %s: lease expired; queued to be resumed", pid)
        hub.publish(PREDICTION, pid)
        hub.publish(WORK, pid)
    for pid in reaped:
        log.warning("prediction %s: lease expired; marked failed", pid)
        hub.publish(PREDICTION, pid)
    return reaped


async def expire_deadlines(store: Store, hub: EventHub) -> list[str]:
    """Cancel queued predictions whose ``Cancel-After`` deadline passed (running ones: the worker)."""
    canceled = await store.cancel_queued_past_deadline(DEADLINE_ERROR)
    for pid in canceled:
        hub.publish(PREDICTION, pid)
    return canceled


async def purge_expired_data(store: Store, blobs: BlobStore, settings: Settings, *, batch: int = 100) -> int:
    """Remove input, output, logs and output files of predictions past the retention period, and
    uploaded files past their expiry. Returns how many predictions were purged."""
    purged = 0
    if settings.data_retention_seconds:
        cutoff = utcnow() - timedelta(seconds=settings.data_retention_seconds)
        for row in await store.predictions_to_purge(cutoff, batch):
            for key in blob_keys(row.output):
                await asyncio.to_thread(blobs.delete, key)
            await store.mark_data_removed(row.id)
            purged += 1
    for file in await store.expired_files(utcnow(), batch):
        await asyncio.to_thread(blobs.delete, file.blob_key)
        await store.forget_file(file.id)
    return purged


async def maintain(store: Store, hub: EventHub, blobs: BlobStore, settings: Settings) -> None:
    """Housekeeping forever: the lease reaper and deadlines every second or so, retention every
    ``RETENTION_EVERY`` rounds."""
    interval = min(1.0, max(0.5, settings.lease_seconds / 3))
    rounds = 0
    while True:
        await asyncio.sleep(interval)
        rounds += 1
        try:
            await expire_deadlines(store, hub)
            if rounds % max(1, round(settings.lease_seconds / 3 / interval)) == 0:
                await reap_once(store, hub)
                await store.workers.forget(
                    utcnow() - timedelta(seconds=settings.lease_seconds * FORGET_WORKERS_AFTER_LEASES)
                )
            # Short retention periods (tests, demos) are honoured to the second; long ones checked every 10 s.
            if rounds % RETENTION_EVERY == 0 or settings.data_retention_seconds < 60:
                await purge_expired_data(store, blobs, settings)
        except Exception as exc:
            log.warning("housekeeping failed (will retry): %s", exc)
