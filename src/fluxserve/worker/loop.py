"""The worker loop: load models, claim what they can run, run each claimed prediction, report liveness.

Start-up is Cog's ``setup()``: the models in ``FLUXSERVE_PRELOAD`` load before their predictions are claimed
(the worker record says ``loading`` meanwhile), and a model that fails to load takes none. Each claimed
prediction runs as a :class:`~fluxserve.worker.runner.PredictionRun`, whose lease keeper covers it from claim
to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx

from fluxserve.catalog.lora import LORA_INPUTS
from fluxserve.catalog.registry import Registry
from fluxserve.config import Settings
from fluxserve.events.changes import PredictionChanges
from fluxserve.events.hub import ANY, OPERATOR, WORK, EventHub
from fluxserve.events.webhooks import WebhookSender
from fluxserve.lifecycle import RESTART_ERROR, RESUME_NOTE, queue_line
from fluxserve.lora import LoraCache
from fluxserve.metrics.prometheus import Metrics
from fluxserve.modelstate import summarize
from fluxserve.net.guard import NetPolicy, guarded_client
from fluxserve.schema import utcnow
from fluxserve.storage import BlobStore
from fluxserve.store.rows import PredictionRow
from fluxserve.store.store import Store
from fluxserve.worker import hardware
from fluxserve.worker.inputs import InputResolver
from fluxserve.worker.models import ModelManager
from fluxserve.worker.runner import PredictionRun, RunEnv

log = logging.getLogger("fluxserve.worker")

#: How often queued predictions are told their position (and how long one waits before it is told).
QUEUE_REPORT_SECONDS = 1.0
#: Queued predictions of a model that are told their position; those behind them learn it as they move up.
QUEUE_REPORT_DEPTH = 50


class NothingLoaded(Exception):
    """Every model of a worker failed to load (the message lists why)."""


class Worker:
    """Runs predictions of ``models`` (default: every model in the registry) from the store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        hub: EventHub,
        registry: Registry,
        blobs: BlobStore,
        webhooks: WebhookSender | None = None,
        *,
        models: list[str] | None = None,
        metrics: Metrics | None = None,
        exit_if_nothing_loads: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.registry = registry
        # A model whose license the operator has not accepted is never loaded (its predictions are refused).
        refused = {spec.ref for spec in registry if spec.refused}
        wanted = models if models is not None else [spec.ref for spec in registry]
        for ref in refused.intersection(models or ()):
            log.warning("Not serving %s: %s", ref, registry.get(ref).refused)  # type: ignore[union-attr]
        self.models = [ref for ref in wanted if ref not in refused]
        self.exit_if_nothing_loads = exit_if_nothing_loads
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._fetcher = guarded_client(
            NetPolicy(allow_loopback=settings.allow_loopback_urls),
            timeout=httpx.Timeout(settings.fetch_timeout_seconds, connect=10.0),
            follow_redirects=True,
        )
        self._state_changed = asyncio.Event()
        self.model_manager = ModelManager(
            settings,
            [spec for ref in self.models if (spec := registry.get(ref)) is not None],
            on_change=self._state_changed.set,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=settings.worker_concurrency, thread_name_prefix="fluxserve-predict"
        )
        self.env = RunEnv(
            settings=settings,
            store=store,
            hub=hub,
            registry=registry,
            blobs=blobs,
            inputs=InputResolver(
                store, blobs, self._fetcher, limit=settings.max_input_bytes, timeout=settings.fetch_timeout_seconds
            ),
            models=self.model_manager,
            executor=self._executor,
            changes=PredictionChanges(hub, webhooks, metrics),
            loras=self._lora_cache(settings, registry),
        )
        self._stopping = asyncio.Event()
        self._busy = 0
        self._operator_tasks: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Stop claiming new predictions; running ones finish."""
        self._stopping.set()
        self.hub.deliver(WORK, ANY)

    @property
    def busy(self) -> int:
        """How many predictions this worker is running now."""
        return self._busy

    # --- lifecycle ------------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Start-up recovery for the single-process SQLite deployment.

        One process owns a SQLite database, so a row still ``processing`` at start belongs to a
        process that died. It is failed, not re-run: a half-run prediction may already have sent
        webhooks or shown output, and a silent second run would charge the user twice. A row that saved a
        checkpoint (a forwarded prediction) is put back in the queue instead, to be resumed from it.
        """
        if self.store.dialect != "sqlite":
            return
        requeued, failed = await self.store.release_processing(RESTART_ERROR, RESUME_NOTE)
        for pid in requeued:
            log.warning(
                "prediction %s was running when the server stopped; resuming it", pid, extra={"prediction_id": pid}
            )
        for pid in failed:
            log.warning(
                "prediction %s was running when the server stopped; marked failed", pid, extra={"prediction_id": pid}
            )
        self.env.changes.touched([*requeued, *failed])

    async def register(self) -> None:
        """Announce this worker, its models and their states; carry out operator requests waiting for it."""
        requests = await self.store.workers.heartbeat(
            self.worker_id,
            socket.gethostname(),
            self.models,
            self.model_manager.states(),
            hardware=hardware.detect(self.settings.device),
        )
        for request in requests:
            action, model = request.get("action"), str(request.get("model"))
            log.info("operator request: %s %s", action, model)
            if action == "unload":
                await self.model_manager.unload(model)
            elif action == "load":
                # Loads take minutes: not inside the heartbeat. Kept referenced until done.
                task = asyncio.create_task(self.model_manager.load(model), name=f"fluxserve-load-{model}")
                self._operator_tasks.add(task)
                task.add_done_callback(self._operator_tasks.discard)
        if requests:
            self.hub.deliver(WORK, ANY)

    def _lora_cache(self, settings: Settings, registry: Registry) -> LoraCache | None:
        """The LoRA cache in ``<data dir>/lora-cache`` when this worker serves a model that takes LoRAs."""
        # Forwarded models pass their LoRA inputs on as text: only local ones fetch them.
        local = [spec for ref in self.models if (spec := registry.get(ref)) is not None and not spec.provider]
        if not any(f.name in LORA_INPUTS for spec in local for f in spec.inputs):
            return None
        policy = NetPolicy(allow_loopback=settings.allow_loopback_urls)
        return LoraCache(
            settings.data_dir / "lora-cache",
            max_bytes=settings.max_lora_bytes,
            budget_bytes=settings.lora_cache_bytes,
            time_limit=settings.lora_fetch_timeout_seconds,
            client_factory=lambda: guarded_client(
                policy, timeout=httpx.Timeout(settings.fetch_timeout_seconds, connect=10.0), follow_redirects=True
            ),
        )

    async def run(self) -> None:
        """Run until cancelled: preload, then ``worker_concurrency`` claim loops for the local models, one
        lane per forwarded model with its own ``max_concurrency``, the liveness heartbeat and queue reports."""
        await self.recover()
        local, lanes = [], []
        for ref in self.models:
            spec = self.registry.get(ref)
            if spec is not None and spec.max_concurrency:
                lanes.append(self._lane_loop([ref], spec.max_concurrency))
            else:
                local.append(ref)
        background = [
            asyncio.create_task(self._heartbeat_loop(), name="fluxserve-worker-heartbeat"),
            asyncio.create_task(self._queue_report_loop(local), name="fluxserve-queue-report"),
        ]
        try:
            # Claiming starts at once: a model that is ready (or loads at first use) is served while the
            # others of the preload list still load; those are not claimable until they are ready.
            loops = [self._preload(), *lanes]
            if local:
                loops += [self._claim_loop(local) for _ in range(self.settings.worker_concurrency)]
            tasks = [asyncio.create_task(loop) for loop in loops]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in tasks:
                    task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in background:
                task.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)
            await self._fetcher.aclose()
            with contextlib.suppress(Exception):
                await self.store.workers.gone(self.worker_id)

    async def _preload(self) -> None:
        """Load the preload list, one model at a time; fail the queue of those that cannot load, and stop
        the worker if it was asked to when none loads."""
        manager = self.model_manager
        if not manager.preload_list():
            return
        await manager.preload()
        failed = manager.failed()
        for ref, error in failed.items():
            await self._fail_queued(ref, error)
        if failed and self.exit_if_nothing_loads and len(failed) == len(manager.slots):
            reasons = "; ".join(f"{ref}: {error}" for ref, error in failed.items())
            raise NothingLoaded(f"no model could be loaded ({reasons})")

    async def _fail_queued(self, ref: str, error: str) -> None:
        """Fail the queued predictions of a model this worker could not load, unless another live worker
        can still run them."""
        try:
            live = await self.store.workers.live(utcnow() - timedelta(seconds=self.settings.lease_seconds))
            others = [w for w in live if w.id != self.worker_id]
            if summarize(ref, others).serving:
                return
            self.env.changes.touched(await self.store.fail_queued(ref, f"Model {ref} could not be loaded: {error}"))
        except Exception as exc:
            log.warning("could not fail the queued predictions of %s: %s", ref, exc)

    async def _heartbeat_loop(self) -> None:
        # A model changing state is reported at once (operators watch loads), and an operator request is
        # read at once; else every third of a lease.
        with self.hub.subscribe(WORK, OPERATOR, event=self._state_changed):
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._state_changed.wait(), self.settings.lease_seconds / 3)
                self._state_changed.clear()
                await self._beat()

    async def _beat(self) -> None:
        try:
            await self.register()
            for ref, error in self.model_manager.failed().items():
                await self._fail_queued(ref, error)
        except Exception as exc:
            log.warning("worker heartbeat failed: %s", exc)

    async def _queue_report_loop(self, models: list[str]) -> None:
        """Tell queued predictions where they stand ("Waiting in queue: 3 predictions ahead") as they move."""
        while True:
            await asyncio.sleep(QUEUE_REPORT_SECONDS)
            if not self._busy:
                continue  # an idle worker claims what is queued for it: nobody waits on this one
            for ref in self.model_manager.claimable(models):
                try:
                    moved = await self.store.log_queue_positions(
                        ref,
                        limit=QUEUE_REPORT_DEPTH,
                        line=queue_line,
                        created_before=utcnow() - timedelta(seconds=QUEUE_REPORT_SECONDS),
                    )
                except Exception as exc:
                    log.debug("queue report for %s failed: %s", ref, exc)
                    continue
                self.env.changes.touched(moved)

    async def _claim(self, models: list[str]) -> PredictionRow | None:
        """Claim the next prediction among ``models``: of a resident model first, unless a model that needs
        a swap-in has had a prediction waiting longer than ``swap_after_seconds``."""
        manager = self.model_manager
        claimable = manager.claimable(models)
        if not claimable:
            return None
        try:
            resident = [m for m in claimable if manager.resident(m)]
            others = [m for m in claimable if m not in resident]
            if not resident or not others:
                return await self.store.claim(claimable, self.worker_id, self.settings.lease_seconds)
            oldest = await self.store.oldest_queued(others)
            order = [resident, others]
            if oldest is not None and (utcnow() - oldest).total_seconds() >= self.settings.swap_after_seconds:
                order.reverse()
            for group in order:
                row = await self.store.claim(group, self.worker_id, self.settings.lease_seconds)
                if row is not None:
                    return row
            return None
        except Exception:
            log.exception("claim failed; retrying")
            return None

    async def _claim_loop(self, models: list[str]) -> None:
        """One prediction at a time: the GPU lane (``worker_concurrency`` of these run side by side)."""
        with self.hub.subscribe(WORK, event=asyncio.Event()) as woken:
            while not self._stopping.is_set():
                woken.take()
                row = await self._claim(models)
                if row is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.event.wait(), self.settings.poll_interval)
                    continue
                await self._run_claimed(row)
                # Let whoever waits on the result (Prefer: wait) answer before we look for more work.
                await asyncio.sleep(0)

    async def _lane_loop(self, models: list[str], slots: int) -> None:
        """Up to ``slots`` predictions at once, for models that wait on the network (forwarded ones).

        One loop claims while a slot is free, so an idle lane costs one claim query per wake-up, not ``slots``.
        """
        free = asyncio.Semaphore(slots)
        running: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            free.release()

        with self.hub.subscribe(WORK, event=asyncio.Event()) as woken:
            while not self._stopping.is_set():
                await free.acquire()
                if self._stopping.is_set():
                    free.release()
                    break
                woken.take()
                row = await self._claim(models)
                if row is None:
                    free.release()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.event.wait(), self.settings.poll_interval)
                    continue
                task = asyncio.create_task(self._run_claimed(row), name=f"fluxserve-forward-{row.id}")
                running.add(task)
                task.add_done_callback(done)
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _run_claimed(self, row: PredictionRow) -> None:
        self.env.changes.started(row)
        self._busy += 1
        try:
            await PredictionRun(self.env, row).run()
        except Exception:  # the worker boundary: never let one prediction stop the loop
            log.exception("prediction %s: worker error", row.id, extra={"prediction_id": row.id})
        finally:
            self._busy -= 1
