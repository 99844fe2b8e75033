"""The worker loop: claim → run in a thread → heartbeat and stream logs → finish (compare-and-set)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from fluxserve.config import Settings
from fluxserve.events import ANY, CANCEL, PREDICTION, WORK, EventHub, Subscription
from fluxserve.lifecycle import DEADLINE_ERROR, RESUME_NOTE, RUN_TIME_ERROR, STOP_LEASE_LOST, Status
from fluxserve.metrics import Metrics
from fluxserve.netguard import NetPolicy, guarded_client
from fluxserve.predictors.base import PredictionCanceled, Predictor, WeightsUnavailable
from fluxserve.predictors.inputs import validate_input
from fluxserve.registry import ModelSpec, Registry
from fluxserve.schema import utcnow
from fluxserve.storage import BlobStore, blob_ref, count_blob_refs
from fluxserve.store.rows import PredictionRow
from fluxserve.store.store import Store
from fluxserve.webhooks import WebhookSender, wants
from fluxserve.worker.context import RunContext
from fluxserve.worker.inputs import InputResolver

log = logging.getLogger("fluxserve.worker")

RESTART_ERROR = (
    "The server stopped while this prediction was running, so it did not finish. It was not retried "
    "automatically; create it again."
)
STOP_DEADLINE = "deadline"
STOP_RUN_TIME = "run-time limit"
# Logs are written at most this often while a prediction runs (each write also renews the lease).
LOG_FLUSH_SECONDS = 0.25


def error_message(exc: BaseException) -> str:
    """A readable one-line error for a failed prediction."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


@dataclass
class _Loaded:
    predictor: Predictor | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


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
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.hub = hub
        self.registry = registry
        self.blobs = blobs
        self.webhooks = webhooks
        self._fetcher = guarded_client(
            NetPolicy(allow_loopback=settings.allow_loopback_urls),
            timeout=httpx.Timeout(settings.fetch_timeout_seconds, connect=10.0),
            follow_redirects=True,
        )
        self.inputs = InputResolver(
            store, blobs, self._fetcher, limit=settings.max_input_bytes, timeout=settings.fetch_timeout_seconds
        )
        self.models = models if models is not None else [spec.ref for spec in registry]
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._executor = ThreadPoolExecutor(
            max_workers=settings.worker_concurrency, thread_name_prefix="fluxserve-predict"
        )
        self._loaded: dict[str, _Loaded] = {}
        self._stopping = asyncio.Event()
        self._busy = 0

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
            self.hub.publish(PREDICTION, pid)
        for pid in failed:
            log.warning(
                "prediction %s was running when the server stopped; marked failed", pid, extra={"prediction_id": pid}
            )
            self.hub.publish(PREDICTION, pid)

    async def register(self) -> None:
        """Announce this worker and its models (so the API can tell when a model has no worker)."""
        await self.store.worker_heartbeat(self.worker_id, socket.gethostname(), self.models)

    async def run(self) -> None:
        """Run until cancelled: ``worker_concurrency`` claim loops for the local models, one lane per model
        with its own ``max_concurrency`` (forwarded models), plus the liveness heartbeat."""
        await self.recover()
        local, lanes = [], []
        for ref in self.models:
            spec = self.registry.get(ref)
            if spec is not None and spec.max_concurrency:
                lanes.append(self._lane_loop([ref], spec.max_concurrency))
            else:
                local.append(ref)
        loops = [*lanes]
        if local:
            loops += [self._claim_loop(local) for _ in range(self.settings.worker_concurrency)]
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        try:
            await asyncio.gather(*loops)
        finally:
            heartbeat.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)
            await self._fetcher.aclose()
            with contextlib.suppress(Exception):
                await self.store.worker_gone(self.worker_id)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                await self.register()
            except Exception as exc:
                log.warning("worker heartbeat failed: %s", exc)

    async def _claim(self, models: list[str]) -> PredictionRow | None:
        try:
            return await self.store.claim(models, self.worker_id, self.settings.lease_seconds)
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
        self.hub.publish(PREDICTION, row.id, row)
        if self.webhooks is not None:
            self.webhooks.event(row, "start")
        self._busy += 1
        try:
            await self._run(row)
        except Exception:  # the worker boundary: never let one prediction stop the loop
            log.exception("prediction %s: worker error", row.id, extra={"prediction_id": row.id})
        finally:
            self._busy -= 1

    # --- one prediction ----------------------------------------------------------------------------

    async def _predictor(self, spec: ModelSpec) -> Predictor:
        loaded = self._loaded.setdefault(spec.ref, _Loaded())
        async with loaded.lock:
            if loaded.predictor is None:
                if spec.max_concurrency:
                    # Not on the GPU lane's threads: a model loading there must not hold up forwarded ones.
                    predictor = await asyncio.to_thread(_build_predictor, spec, self.settings)
                else:
                    loop = asyncio.get_running_loop()
                    predictor = await loop.run_in_executor(self._executor, _build_predictor, spec, self.settings)
                loaded.predictor = predictor
            return loaded.predictor

    async def _run(self, row: PredictionRow) -> None:
        assert row.lease_token is not None
        token = row.lease_token
        spec = self.registry.get(row.model)
        loop = asyncio.get_running_loop()
        # One event wakes the supervisor for everything: new logs, the predictor finishing, cancel.
        wake = asyncio.Event()
        scratch = self.settings.scratch_dir / row.id

        def on_log() -> None:
            loop.call_soon_threadsafe(wake.set)

        resumed = row.checkpoint is not None
        ctx = RunContext(scratch, on_log, resume_data=row.checkpoint, earlier_logs=(row.logs or "") if resumed else "")
        status, output, error = Status.FAILED, None, None
        try:
            if spec is None:
                raise RuntimeError(f"Model {row.model} is not served by this worker.")
            if spec.unavailable:
                raise RuntimeError(spec.unavailable)
            validation = validate_input(spec.inputs, row.input or {})
            if validation.errors:
                raise ValueError("; ".join(f"{e.field}: {e.description}" for e in validation.errors))
            values = await self.inputs.resolve(spec, row.key_id, validation.values)
            predictor = await self._predictor(spec)
            with self.hub.subscribe(CANCEL, row.id, event=wake) as cancel_asked:
                if row.cancel_requested:
                    ctx.cancel_event.set()
                apredict = getattr(predictor, "apredict", None)
                future: asyncio.Future[Any]
                if apredict is not None:
                    # Network-bound predictors (forwarding) run on the loop; cancel reaches them through ctx.
                    future = asyncio.ensure_future(apredict(values, ctx))
                else:
                    future = loop.run_in_executor(self._executor, predictor.predict, values, ctx)
                future.add_done_callback(lambda _: wake.set())
                result = await self._supervise(row, token, future, ctx, wake, cancel_asked)
            if result is _LOST:
                return
            if _has_files(result):
                # Uploads block (a copy, or a PUT to S3): keep them off the event loop.
                output = await loop.run_in_executor(None, self._store_outputs, row.id, result)
            else:
                output = result
            status = Status.SUCCEEDED
        except PredictionCanceled:
            status = Status.CANCELED
            if ctx.stop_reason == STOP_DEADLINE:
                error = DEADLINE_ERROR
            elif ctx.stop_reason == STOP_RUN_TIME:
                # Runaway work fails (it is not something the user asked to stop).
                status, error = Status.FAILED, RUN_TIME_ERROR.format(limit=self.settings.max_run_seconds)
        except WeightsUnavailable as exc:
            error = str(exc)
        except Exception as exc:
            log.info(
                "prediction %s failed: %s",
                row.id,
                exc,
                exc_info=not isinstance(exc, ValueError),
                extra={"prediction_id": row.id},
            )
            error = error_message(exc)
        finally:
            if ctx.output_dir_used:
                shutil.rmtree(scratch, ignore_errors=True)
        await self._finish(row, token, status, output, error, ctx)

    async def _supervise(
        self,
        row: PredictionRow,
        token: str,
        future: asyncio.Future[Any],
        ctx: RunContext,
        wake: asyncio.Event,
        cancel_asked: Subscription,
    ) -> Any:
        """Wait for the predictor while writing logs, renewing the lease and relaying cancel."""
        loop = asyncio.get_running_loop()
        heartbeat = self.settings.lease_seconds / 3
        next_heartbeat = loop.time() + heartbeat
        last_write = 0.0
        written_logs = ""
        # When to stop it: the server's run-time limit, or the prediction's own deadline if sooner.
        stop_at, stop_reason = loop.time() + self.settings.max_run_seconds, STOP_RUN_TIME
        if row.deadline is not None:
            until_deadline = (row.deadline - utcnow()).total_seconds()
            if loop.time() + until_deadline < stop_at:
                stop_at, stop_reason = loop.time() + until_deadline, STOP_DEADLINE
        while True:
            if not future.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(next_heartbeat, stop_at) - loop.time())):
                        await wake.wait()
            wake.clear()
            if loop.time() >= stop_at and not ctx.cancel_event.is_set():
                ctx.stop_reason = stop_reason
                ctx.cancel_event.set()
            if cancel_asked.fired:
                cancel_asked.take()
                if await self.store.cancel_requested(row.id):
                    ctx.cancel_event.set()
            if future.done():
                return future.result()
            logs = ctx.text()
            now = loop.time()
            checkpoint = ctx.take_checkpoint()
            if logs == written_logs and now < next_heartbeat and checkpoint is None:
                continue
            if logs != written_logs and now - last_write < LOG_FLUSH_SECONDS:
                # Coalesce bursts of log lines into one write (but stop waiting if the predictor ends).
                await asyncio.wait({future}, timeout=LOG_FLUSH_SECONDS - (now - last_write))
                if future.done():
                    return future.result()
                logs = ctx.text()
            try:
                cancel = await self.store.update_running(
                    row.id,
                    token,
                    lease_seconds=self.settings.lease_seconds,
                    logs=logs if logs != written_logs else None,
                    checkpoint=checkpoint,
                )
            except Exception as exc:
                if checkpoint is not None:
                    ctx.restore_checkpoint(checkpoint)
                # The database may be restarting: keep predicting and try again at the next
                # heartbeat. If it stays away past the lease, the reaper fails the prediction.
                log.warning(
                    "prediction %s: heartbeat failed (%s); retrying", row.id, exc, extra={"prediction_id": row.id}
                )
                last_write = loop.time()
                next_heartbeat = last_write + min(heartbeat, 1.0)
                continue
            last_write = loop.time()
            next_heartbeat = last_write + heartbeat
            if cancel is None:
                log.warning("prediction %s: lease lost; abandoning the result", row.id, extra={"prediction_id": row.id})
                ctx.stop_reason = STOP_LEASE_LOST
                ctx.cancel_event.set()
                return _LOST
            if cancel:
                ctx.cancel_event.set()
            if logs != written_logs:
                written_logs = logs
                self.hub.publish(PREDICTION, row.id)
                if self.webhooks is not None:
                    self.webhooks.event(replace(row, logs=logs), "logs")

    def _store_outputs(self, prediction_id: str, result: Any) -> Any:
        """Move every file the predictor returned into blob storage; replace Paths by blob refs."""
        if isinstance(result, Path):
            key = f"{prediction_id}/{result.name}"
            self.blobs.put(key, result)
            return blob_ref(key)
        if isinstance(result, list | tuple):
            return [self._store_outputs(prediction_id, item) for item in result]
        if isinstance(result, dict):
            return {k: self._store_outputs(prediction_id, v) for k, v in result.items()}
        return result

    async def _finish(
        self,
        row: PredictionRow,
        token: str,
        status: Status,
        output: Any,
        error: str | None,
        ctx: RunContext,
    ) -> None:
        completed = utcnow()
        started = row.started_at or completed
        metrics: dict[str, Any] = {
            "predict_time": round((completed - started).total_seconds(), 6),
            "total_time": round((completed - row.created_at).total_seconds(), 6),
        }
        metrics.update(ctx.metrics)
        if status == Status.SUCCEEDED:
            metrics["image_count"] = count_blob_refs(output)
        logs = ctx.text()
        ok = await self._write_terminal(row, token, status, output, logs, error, metrics, completed)
        if not ok:
            log.warning(
                "prediction %s: lease lost before finishing; result dropped", row.id, extra={"prediction_id": row.id}
            )
            return
        if self.metrics is not None:
            self.metrics.prediction_finished(
                row.model,
                status.value,
                created_at=row.created_at,
                started_at=row.started_at,
                completed_at=completed,
                image_count=metrics.get("image_count"),
            )
        finished = replace(
            row,
            status=status,
            output=output,
            logs=logs,
            error=error,
            metrics=metrics,
            completed_at=completed,
            lease_token=None,
            lease_expires_at=None,
        )
        self.hub.publish(PREDICTION, row.id, finished)
        if self.webhooks is not None:
            if output is not None:
                self.webhooks.event(finished, "output")
            self.webhooks.forget(row.id)
            if wants(finished, "completed"):
                # The terminal webhook is already in the outbox (same transaction); send it now.
                self.webhooks.wake.set()

    async def _write_terminal(
        self,
        row: PredictionRow,
        token: str,
        status: Status,
        output: Any,
        logs: str,
        error: str | None,
        metrics: dict[str, Any],
        completed: datetime,
    ) -> bool:
        """Write the result, retrying through a database outage for as long as the lease could last."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.settings.lease_seconds
        delay = 0.1
        while True:
            try:
                return await self.store.finish(
                    row.id, token, status=status, output=output, logs=logs, error=error, metrics=metrics,
                    completed_at=completed,
                )  # fmt: skip
            except Exception as exc:
                if loop.time() > give_up:
                    log.error(
                        "prediction %s: could not write its result: %s", row.id, exc, extra={"prediction_id": row.id}
                    )
                    return False
                log.warning(
                    "prediction %s: writing the result failed (%s); retrying",
                    row.id,
                    exc,
                    extra={"prediction_id": row.id},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


def _has_files(value: Any) -> bool:
    if isinstance(value, Path):
        return True
    if isinstance(value, list | tuple):
        return any(_has_files(v) for v in value)
    if isinstance(value, dict):
        return any(_has_files(v) for v in value.values())
    return False


_LOST: Any = object()


def _build_predictor(spec: ModelSpec, settings: Settings) -> Predictor:
    """Build and set up a predictor (in a worker thread: this is where torch gets imported)."""
    predictor = spec.predictor_factory(settings)
    try:
        predictor.setup()
    except WeightsUnavailable:
        raise
    except Exception as exc:
        raise WeightsUnavailable(f"Could not load model {spec.ref}: {error_message(exc)}") from exc
    return predictor
