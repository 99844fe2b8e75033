"""One claimed prediction, from the claim to the final compare-and-set.

Two tasks run side by side for the whole run:
- the **work**: validate the input, resolve file inputs, acquire the model (loading or swapping it in),
  predict (in a thread, or on the loop for network-bound predictors), store the output files;
- the **lease keeper**: renews the lease every third of a lease period, writes new logs and checkpoints,
  relays cancel requests, and enforces the deadline and the run-time limit.

So a prediction is never failed because its worker was busy doing legitimate work: whatever the work
waits on (a model load of minutes, a slow image URL, an upload), the lease stays renewed. The keeper stops
only after the terminal write. If the lease is lost (the worker was presumed dead), the work is abandoned
and its result dropped; the reaper or the next worker owns the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from fluxserve.catalog.fields import validate_input
from fluxserve.catalog.lora import LORA_INPUTS
from fluxserve.catalog.registry import ModelSpec, Registry
from fluxserve.config import Settings
from fluxserve.events.changes import PredictionChanges
from fluxserve.events.hub import CANCEL, EventHub, Subscription
from fluxserve.lifecycle import (
    DEADLINE_ERROR,
    RUN_TIME_ERROR,
    STOP_DEADLINE,
    STOP_LEASE_LOST,
    STOP_RUN_TIME,
    Status,
)
from fluxserve.lora import LoraCache, LoraFile
from fluxserve.predictors.base import PredictionCanceled, WeightsUnavailable
from fluxserve.schema import utcnow
from fluxserve.storage import BlobStore, blob_ref, count_blob_refs
from fluxserve.store.rows import PredictionRow
from fluxserve.store.store import Store
from fluxserve.tree import leaves, map_leaves
from fluxserve.worker.context import RunContext
from fluxserve.worker.inputs import InputResolver
from fluxserve.worker.models import ModelLoadFailed, ModelManager, error_message

log = logging.getLogger("fluxserve.worker")

# Logs are written at most this often while a prediction runs (each write also renews the lease).
LOG_FLUSH_SECONDS = 0.25

# Phases of the work. In the async ones the work can simply be interrupted; a predictor thread is asked
# to stop through its context instead (it notices within one step).
RESOLVING, LOADING, PREDICTING, STORING = "resolving inputs", "loading the model", "predicting", "storing outputs"
_INTERRUPTIBLE = (RESOLVING, LOADING)


@dataclass
class RunEnv:
    """What running a prediction needs from its worker."""

    settings: Settings
    store: Store
    hub: EventHub
    registry: Registry
    blobs: BlobStore
    inputs: InputResolver
    models: ModelManager
    executor: ThreadPoolExecutor
    changes: PredictionChanges
    #: Where LoRA inputs are fetched into (None: this worker serves no LoRA model).
    loras: LoraCache | None = None


class _Lost(Exception):
    """The lease passed to someone else: drop everything."""


class PredictionRun:
    """Runs one claimed prediction (``row`` holds a fresh lease)."""

    def __init__(self, env: RunEnv, row: PredictionRow) -> None:
        assert row.lease_token is not None
        self.env = env
        self.row = row
        self.token = row.lease_token
        self.loop = asyncio.get_running_loop()
        # One event wakes the keeper for everything: new logs, a checkpoint, cancel, the work ending.
        self.wake = asyncio.Event()
        self.scratch = env.settings.scratch_dir / row.id
        # Logs stay append-only: a claimed prediction keeps what it logged while queued (queue position,
        # "waiting for a worker") and a resumed one its earlier run's logs.
        self.ctx = RunContext(
            self.scratch,
            self._wake_from_thread,
            resume_data=row.checkpoint,
            earlier_logs=row.logs or "",
        )
        self.phase = RESOLVING
        self.lost = False
        self.finished = False
        self._work: asyncio.Task[Any] | None = None

    def _work_ended(self, task: asyncio.Task[Any]) -> None:
        self.wake.set()
        if not task.cancelled():
            # Retrieved here too: a work task abandoned on shutdown must not log "exception never retrieved".
            task.exception()

    def _wake_from_thread(self) -> None:
        self.loop.call_soon_threadsafe(self.wake.set)

    async def run(self) -> None:
        """Work and keep the lease until the result is written (or the lease is lost)."""
        self._work = asyncio.create_task(self._do_work(), name=f"fluxserve-work-{self.row.id}")
        self._work.add_done_callback(self._work_ended)
        keeper = asyncio.create_task(self._keep_lease(), name=f"fluxserve-lease-{self.row.id}")
        try:
            status, output, error = await self._outcome(self._work)
            if not self.lost:
                # From here a vanished lease is most likely our own terminal write: the keeper just stops.
                self.finished = True
                await self._finish(status, output, error)
        finally:
            self.finished = True
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if self._work is not None and not self._work.done():
                self._work.cancel()
            if self.ctx.output_dir_used:
                shutil.rmtree(self.scratch, ignore_errors=True)

    async def _outcome(self, work: asyncio.Task[Any]) -> tuple[Status, Any, str | None]:
        try:
            return Status.SUCCEEDED, await work, None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the worker itself is being stopped
            # The keeper interrupted the work: a cancel, a deadline, or the lease lost.
            return self._stopped()
        except PredictionCanceled:
            return self._stopped()
        except (WeightsUnavailable, ModelLoadFailed) as exc:
            return Status.FAILED, None, str(exc)
        except Exception as exc:
            log.info(
                "prediction %s failed: %s",
                self.row.id,
                exc,
                exc_info=not isinstance(exc, ValueError),
                extra={"prediction_id": self.row.id},
            )
            return Status.FAILED, None, error_message(exc)

    def _stopped(self) -> tuple[Status, Any, str | None]:
        reason = self.ctx.stop_reason
        if reason == STOP_DEADLINE:
            return Status.CANCELED, None, DEADLINE_ERROR
        if reason == STOP_RUN_TIME:
            # Runaway work fails (it is not something the user asked to stop).
            return Status.FAILED, None, RUN_TIME_ERROR.format(limit=self.env.settings.max_run_seconds)
        return Status.CANCELED, None, None

    # --- the work --------------------------------------------------------------------------------------

    async def _do_work(self) -> Any:
        env, row = self.env, self.row
        spec = env.registry.get(row.model)
        if spec is None:
            raise RuntimeError(f"Model {row.model} is not served by this worker.")
        if spec.refused or spec.unavailable:
            raise RuntimeError(spec.refused or spec.unavailable)
        validation = validate_input(spec.inputs, row.input or {})
        if validation.errors:
            raise ValueError("; ".join(f"{e.field}: {e.description}" for e in validation.errors))
        values = await env.inputs.resolve(spec, row.key_id, validation.values)
        held = await self._fetch_loras(spec, values)
        try:
            return await self._predict(spec, values)
        finally:
            for lora in held:
                lora.release()

    async def _fetch_loras(self, spec: ModelSpec, values: dict[str, Any]) -> list[LoraFile]:
        """Replace each LoRA input of ``values`` by its checked local file (kept from eviction until released)."""
        names = [f.name for f in spec.inputs if f.name in LORA_INPUTS and values.get(f.name) is not None]
        if not names or spec.provider:  # a forwarded model passes them on as they are
            return []
        if self.env.loras is None:
            raise RuntimeError("this worker has no LoRA cache")
        held: list[LoraFile] = []
        try:
            for name in names:
                lora = await self.env.loras.get(str(values[name]), name, self.ctx.log)
                held.append(lora)
                values[name] = lora
                self.ctx.check_canceled()
        except BaseException:
            for lora in held:
                lora.release()
            raise
        return held

    async def _predict(self, spec: ModelSpec, values: dict[str, Any]) -> Any:
        env, ctx = self.env, self.ctx
        ctx.check_canceled()
        self.phase = LOADING
        predictor = await env.models.acquire(spec, ctx.log)
        try:
            ctx.check_canceled()
            self.phase = PREDICTING
            apredict = getattr(predictor, "apredict", None)
            if apredict is not None:
                # Network-bound predictors (forwarding) run on the loop; cancel reaches them through ctx.
                result = await apredict(values, ctx)
            else:
                result = await self.loop.run_in_executor(env.executor, predictor.predict, values, ctx)
        finally:
            env.models.release(spec)
        if not any(isinstance(leaf, Path) for leaf in leaves(result)):
            return result
        self.phase = STORING
        # Uploads block (a copy, or a PUT to S3): keep them off the event loop.
        return await self.loop.run_in_executor(None, self._store_outputs, result)

    def _store_outputs(self, result: Any) -> Any:
        """Move every file the predictor returned into blob storage; replace Paths by blob refs."""

        def store(leaf: Any) -> Any:
            if not isinstance(leaf, Path):
                return leaf
            key = f"{self.row.id}/{leaf.name}"
            self.env.blobs.put(key, leaf)
            return blob_ref(key)

        return map_leaves(result, store)

    def _stop(self, reason: str | None) -> None:
        """Ask the work to stop: through the context, and at once if it is in an interruptible phase."""
        if self.ctx.cancel_event.is_set():
            return
        self.ctx.stop_reason = reason
        self.ctx.cancel_event.set()
        if self._work is not None and (self.phase in _INTERRUPTIBLE or reason == STOP_LEASE_LOST):
            self._work.cancel()

    # --- the lease keeper --------------------------------------------------------------------------

    async def _keep_lease(self) -> None:
        """Renew the lease, write logs and checkpoints, relay cancel, enforce the deadline and run-time limit."""
        env, row, loop = self.env, self.row, self.loop
        settings = env.settings
        heartbeat = settings.lease_seconds / 3
        next_heartbeat = loop.time() + heartbeat
        last_write = 0.0
        written_logs = row.logs or ""
        # When to stop it: the server's run-time limit, or the prediction's own deadline if sooner.
        stop_at, stop_reason = loop.time() + settings.max_run_seconds, STOP_RUN_TIME
        if row.deadline is not None:
            until_deadline = (row.deadline - utcnow()).total_seconds()
            if loop.time() + until_deadline < stop_at:
                stop_at, stop_reason = loop.time() + until_deadline, STOP_DEADLINE
        if row.cancel_requested:
            self._stop(None)
        with env.hub.subscribe(CANCEL, row.id, event=self.wake) as cancel_asked:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(next_heartbeat, stop_at) - loop.time())):
                        await self.wake.wait()
                self.wake.clear()
                if loop.time() >= stop_at:
                    self._stop(stop_reason)
                await self._relay_cancel(cancel_asked)
                logs = self.ctx.text()
                now = loop.time()
                checkpoint = self.ctx.take_checkpoint()
                if logs == written_logs and now < next_heartbeat and checkpoint is None:
                    continue
                if logs != written_logs and now - last_write < LOG_FLUSH_SECONDS:
                    # Coalesce bursts of log lines into one write.
                    await asyncio.sleep(LOG_FLUSH_SECONDS - (now - last_write))
                    logs = self.ctx.text()
                try:
                    cancel = await env.store.update_running(
                        row.id,
                        self.token,
                        lease_seconds=settings.lease_seconds,
                        # After the work ended the terminal write carries the logs: only renew the lease.
                        logs=logs if logs != written_logs and not self._work_done else None,
                        checkpoint=checkpoint,
                    )
                except Exception as exc:
                    if checkpoint is not None:
                        self.ctx.restore_checkpoint(checkpoint)
                    # The database may be restarting: keep working and try again soon. If it stays away
                    # past the lease, the reaper fails the prediction.
                    log.warning(
                        "prediction %s: heartbeat failed (%s); retrying", row.id, exc, extra={"prediction_id": row.id}
                    )
                    last_write = loop.time()
                    next_heartbeat = last_write + min(heartbeat, 1.0)
                    continue
                last_write = loop.time()
                next_heartbeat = last_write + heartbeat
                if cancel is None:
                    if self.finished:
                        return
                    log.warning("prediction %s: lease lost; abandoning it", row.id, extra={"prediction_id": row.id})
                    self.lost = True
                    self._stop(STOP_LEASE_LOST)
                    return
                if cancel:
                    self._stop(None)
                if logs != written_logs and not self._work_done:
                    written_logs = logs
                    env.changes.logged(replace(row, logs=logs))

    @property
    def _work_done(self) -> bool:
        return self._work is not None and self._work.done()

    async def _relay_cancel(self, cancel_asked: Subscription) -> None:
        if not cancel_asked.fired:
            return
        cancel_asked.take()
        try:
            if await self.env.store.cancel_requested(self.row.id):
                self._stop(None)
        except Exception as exc:
            log.warning("prediction %s: reading cancel failed (%s)", self.row.id, exc)

    # --- the end ---------------------------------------------------------------------------------------

    async def _finish(self, status: Status, output: Any, error: str | None) -> None:
        env, row, ctx = self.env, self.row, self.ctx
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
        if not await self._write_terminal(status, output, logs, error, metrics, completed):
            log.warning(
                "prediction %s: lease lost before finishing; result dropped", row.id, extra={"prediction_id": row.id}
            )
            return
        env.changes.completed(
            replace(
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
        )

    async def _write_terminal(
        self, status: Status, output: Any, logs: str, error: str | None, metrics: dict[str, Any], completed: datetime
    ) -> bool:
        """Write the result, retrying through a database outage (the keeper keeps the lease meanwhile)."""
        give_up = self.loop.time() + self.env.settings.lease_seconds
        delay = 0.1
        while True:
            try:
                return await self.env.store.finish(
                    self.row.id, self.token, status=status, output=output, logs=logs, error=error, metrics=metrics,
                    completed_at=completed,
                )  # fmt: skip
            except Exception as exc:
                if self.loop.time() > give_up or self.lost:
                    log.error(
                        "prediction %s: could not write its result: %s",
                        self.row.id,
                        exc,
                        extra={"prediction_id": self.row.id},
                    )
                    return False
                log.warning(
                    "prediction %s: writing the result failed (%s); retrying",
                    self.row.id,
                    exc,
                    extra={"prediction_id": self.row.id},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
