"""The composition root: builds the store, event hub, registry, blob store, service and worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from fluxserve.config import Settings
from fluxserve.events import EventHub
from fluxserve.registry import Registry, build_registry
from fluxserve.service import PredictionService
from fluxserve.storage.local import LocalBlobStore
from fluxserve.store.store import Store
from fluxserve.worker.loop import Worker

log = logging.getLogger("fluxserve")


@dataclass
class Runtime:
    """Everything one process runs, wired together; ``open`` and ``close`` bracket its life."""

    settings: Settings
    store: Store
    hub: EventHub
    registry: Registry
    blobs: LocalBlobStore
    service: PredictionService
    worker: Worker | None = None
    _worker_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings, *, with_worker: bool) -> Runtime:
        """Connect, migrate, and (when asked) start the in-process worker."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store.connect(settings.resolved_database_url(), sqlite_synchronous=settings.sqlite_synchronous)
        await store.migrate()
        hub = EventHub()
        registry = build_registry(settings)
        blobs = LocalBlobStore(settings.blob_dir)
        runtime = cls(settings, store, hub, registry, blobs, PredictionService(store, registry, hub))
        if with_worker:
            runtime.worker = Worker(settings, store, hub, registry, blobs)
            runtime._worker_task = asyncio.create_task(runtime.worker.run(), name="fluxserve-worker")
        return runtime

    async def close(self) -> None:
        """Stop the worker and close the database."""
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
        await self.store.close()
