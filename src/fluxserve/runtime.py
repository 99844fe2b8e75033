"""The composition root: builds the store, event hub, registry, blob store, service and worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fluxserve.api.state import ApiState, LocalWorker
from fluxserve.catalog.registry import Registry
from fluxserve.config import Settings
from fluxserve.events.hub import EventHub
from fluxserve.events.pgnotify import PgNotifyBridge
from fluxserve.events.webhooks import WebhookSender, terminal_delivery
from fluxserve.gateway.served import build_registry
from fluxserve.metrics.prometheus import Metrics
from fluxserve.net.guard import NetPolicy
from fluxserve.service.files import FileService
from fluxserve.service.housekeeping import maintain
from fluxserve.service.predictions import PredictionService
from fluxserve.storage import BlobStore
from fluxserve.storage.local import LocalBlobStore
from fluxserve.store.store import Store
from fluxserve.worker.loop import NothingLoaded, Worker

log = logging.getLogger("fluxserve")


def open_blob_store(settings: Settings) -> BlobStore:
    """S3 when a bucket is configured, else a directory."""
    if settings.s3_bucket:
        from fluxserve.storage.s3 import S3BlobStore

        return S3BlobStore(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
        )
    return LocalBlobStore(settings.resolved_blob_dir())


def _report_worker_end(task: asyncio.Task[None]) -> None:
    """Log why a worker stopped by itself (this also retrieves its exception)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("the worker stopped: %s", exc, exc_info=not isinstance(exc, NothingLoaded))


@dataclass
class Runtime:
    """Everything one process runs, wired together; ``open`` and ``close`` bracket its life."""

    settings: Settings
    store: Store
    hub: EventHub
    registry: Registry
    blobs: BlobStore
    service: PredictionService
    webhooks: WebhookSender
    worker: Worker | None = None
    bridge: PgNotifyBridge | None = None
    metrics: Metrics = field(default_factory=Metrics)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _worker_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        with_worker: bool,
        worker_models: list[str] | None = None,
        exit_if_nothing_loads: bool = False,
    ) -> Runtime:
        """Connect, migrate, bridge events across processes (PostgreSQL), start housekeeping and,
        when asked, a worker for ``worker_models`` (default: every model). With ``exit_if_nothing_loads``
        (a worker process), the worker stops with :class:`~fluxserve.worker.loop.NothingLoaded` when none
        of its models loads."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store.connect(
            settings.resolved_database_url(),
            sqlite_synchronous=settings.sqlite_synchronous,
            on_terminal=terminal_delivery(settings.default_api_base()),
        )
        await store.migrate()
        hub = EventHub()
        registry = build_registry(settings)
        if registry.routes:
            from fluxserve.gateway.models import load_schemas

            pending = await load_schemas(registry, settings.data_dir)
            if pending:
                log.warning("%d forwarded model(s) have no schema yet; they answer 503 until it arrives", pending)
        blobs = open_blob_store(settings)
        metrics = Metrics()
        service = PredictionService(
            store,
            registry,
            hub,
            liveness_seconds=settings.lease_seconds,
            max_input_bytes=settings.max_input_bytes,
            on_created=metrics.prediction_created,
            queue_cap=settings.queue_cap,
            strict_inputs=settings.strict_inputs,
            max_text_chars=settings.max_text_chars,
        )
        webhooks = WebhookSender(
            store, NetPolicy(allow_loopback=settings.allow_loopback_urls), settings.default_api_base(), metrics=metrics
        )
        runtime = cls(settings, store, hub, registry, blobs, service, webhooks, metrics=metrics)
        if store.dialect == "postgresql":
            runtime.bridge = PgNotifyBridge(settings.resolved_database_url(), hub)
            await runtime.bridge.start()
        runtime._tasks.append(asyncio.create_task(maintain(store, hub, blobs, settings), name="fluxserve-reaper"))
        runtime._tasks.append(asyncio.create_task(webhooks.run(), name="fluxserve-webhooks"))
        if registry.routes:
            from fluxserve.gateway.models import retry_pending_schemas

            runtime._tasks.append(
                asyncio.create_task(retry_pending_schemas(registry, settings.data_dir), name="fluxserve-schemas")
            )
        if with_worker:
            unknown = [m for m in worker_models or [] if registry.get(m) is None]
            if unknown:
                await runtime.close()
                known = ", ".join(spec.ref for spec in registry)
                raise ValueError(f"unknown model(s) {', '.join(unknown)}; this build serves {known}")
            runtime.worker = Worker(
                settings,
                store,
                hub,
                registry,
                blobs,
                webhooks,
                models=worker_models,
                metrics=metrics,
                exit_if_nothing_loads=exit_if_nothing_loads,
            )
            await runtime.worker.register()
            runtime._worker_task = asyncio.create_task(runtime.worker.run(), name="fluxserve-worker")
            runtime._worker_task.add_done_callback(_report_worker_end)
        return runtime

    async def worker_ended(self) -> BaseException | None:
        """Wait until this process's worker stops by itself; what stopped it (None: it returned)."""
        assert self._worker_task is not None
        await asyncio.wait({self._worker_task})
        if self._worker_task.cancelled():
            return None
        return self._worker_task.exception()

    def api_state(self) -> ApiState:
        """The narrow state the API serves from."""
        return ApiState(
            settings=self.settings,
            service=self.service,
            files=FileService(
                self.store,
                self.blobs,
                max_bytes=self.settings.max_upload_bytes,
                ttl_seconds=self.settings.file_ttl_seconds,
                scratch_dir=self.settings.scratch_dir,
            ),
            registry=self.registry,
            store=self.store,
            blobs=self.blobs,
            metrics=self.metrics,
            local_worker=self._local_worker,
        )

    def _local_worker(self) -> LocalWorker | None:
        if self.worker is None or self._worker_task is None:
            return None
        return LocalWorker(
            id=self.worker.worker_id,
            busy=self.worker.busy,
            alive=not self._worker_task.done(),
            model_states=self.worker.model_manager.states(),
        )

    @property
    def worker_alive(self) -> bool | None:
        """Whether this process's worker task still runs; None when this process runs no worker."""
        if self._worker_task is None:
            return None
        return not self._worker_task.done()

    async def close(self) -> None:
        """Let running predictions finish (up to ``shutdown_grace_seconds``), then stop everything."""
        if self.worker is not None and self._worker_task is not None:
            self.worker.stop()
            if self.worker.busy:
                log.info("waiting up to %.0fs for running predictions", self.settings.shutdown_grace_seconds)
            done, _ = await asyncio.wait({self._worker_task}, timeout=self.settings.shutdown_grace_seconds)
            if not done:
                self._tasks.append(self._worker_task)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.webhooks.close()
        if self.bridge is not None:
            await self.bridge.stop()
        await self.store.close()


@asynccontextmanager
async def open_api_state(settings: Settings) -> AsyncIterator[ApiState]:
    """The API's state for ``fluxserve serve``: a runtime with the in-process worker when enabled."""
    runtime = await Runtime.open(settings, with_worker=settings.worker, worker_models=settings.worker_models)
    try:
        yield runtime.api_state()
    finally:
        await runtime.close()
