"""The upstream predictor: runs one prediction by forwarding it to a Replicate-format provider.

It is a client of the Replicate HTTP API (:mod:`fluxserve.gateway.upstream`). It sends the input files
(:mod:`fluxserve.gateway.transfer`), creates the prediction upstream (model route, or version route when the
models file pins a version), follows it (the provider's ``urls.stream`` as a wake-up signal when offered,
polling ``{base}/predictions/{id}`` with backoff always), mirrors its logs into ours, forwards cancel, and
downloads every output file so it is stored and served by us. It runs on the worker's event loop
(``apredict``), not in a thread, so one worker follows many forwarded predictions at once.

Every error names the provider and the HTTP status, never a token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from fluxserve.gateway.routes import Provider, UpstreamRoute
from fluxserve.gateway.transfer import input_value, rehost_outputs
from fluxserve.gateway.upstream import Upstream, UpstreamError, canceled, pause
from fluxserve.predictors.base import PredictContext, PredictionCanceled

if TYPE_CHECKING:
    from fluxserve.config import Settings

log = logging.getLogger("fluxserve.gateway")

#: After forwarding a cancel, how long we wait for the provider to confirm before ending canceled anyway.
CANCEL_CONFIRM_SECONDS = 10.0
#: With a live stream, polling is only a safety net.
STREAM_POLL_SECONDS = 5.0
POLL_MIN_SECONDS = 0.2
POLL_MAX_SECONDS = 2.0
_TERMINAL = {"succeeded", "failed", "canceled", "aborted"}


class UpstreamPredictor:
    """Forwards predictions of one model to its provider (see the module docstring)."""

    def __init__(self, route: UpstreamRoute, settings: Settings) -> None:
        self.route = route
        self.provider: Provider = route.provider
        self.allow_loopback = settings.allow_loopback_urls
        self.max_output_bytes = max(settings.max_upload_bytes, settings.max_input_bytes)

    def setup(self) -> None:
        """Nothing to load: the token was checked when the models file was read."""

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """Run :meth:`apredict` on a private event loop (for callers that have no loop of their own)."""
        return asyncio.run(self.apredict(inputs, ctx))

    async def apredict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """Forward one prediction and return its output with every file replaced by a local Path."""
        async with Upstream.open(self.route, allow_loopback=self.allow_loopback) as upstream:
            created = await upstream.resume(ctx)
            if created is None:
                payload = {k: await input_value(upstream, k, v) for k, v in inputs.items() if v is not None}
                created = await upstream.create(payload, ctx)
                upstream_id = str(created.get("id", ""))
                # Saved with the prediction: if this process dies, the next worker follows this upstream
                # prediction instead of failing ours (and the user paying twice for a re-run).
                ctx.checkpoint({"base_url": self.provider.base_url, "upstream_id": upstream_id})
                log.info(
                    "forwarded to %s (%s) as prediction %s", self.provider.name, self.provider.base_url, upstream_id
                )
            final = await self._follow(upstream, created, ctx)
            status = final.get("status")
            if ctx.lost:
                # Another worker owns this prediction now; it is still running upstream for that worker.
                raise PredictionCanceled()
            if canceled(ctx) or status == "canceled":
                raise PredictionCanceled()
            if status != "succeeded":
                error = upstream.scrub(str(final.get("error") or "no error message"))
                raise UpstreamError(f"{upstream.name} reports that the prediction {status}: {error}")
            return await rehost_outputs(upstream, final.get("output"), ctx.output_dir, self.max_output_bytes)

    async def _follow(self, upstream: Upstream, state: dict[str, Any], ctx: PredictContext) -> dict[str, Any]:
        """Follow the upstream prediction until it is terminal, mirroring its logs and forwarding cancel."""
        upstream_id = str(state["id"])
        mirror = _LogMirror(ctx)
        logs_now = state.get("logs")
        if ctx.resume_data and isinstance(logs_now, str):
            # Resumed: our logs already hold what the previous run mirrored (up to its last write); go on from
            # the upstream's present lines rather than repeat them. Lines from the outage itself are skipped.
            mirror.seen = logs_now.rfind("\n") + 1
        mirror.update(logs_now)
        wake = asyncio.Event()
        stream_task: asyncio.Task[None] | None = None
        # Empty when the provider offers no stream (the client's parser fills every link in).
        stream_url = state["urls"]["stream"]
        if self.provider.stream and stream_url:
            stream_task = asyncio.create_task(upstream.watch_stream(stream_url, wake))
        delay = POLL_MIN_SECONDS
        unreachable_since: float | None = None
        cancel_sent_at: float | None = None
        try:
            while state.get("status") not in _TERMINAL:
                if ctx.lost:
                    break
                if canceled(ctx):
                    if cancel_sent_at is None:
                        cancel_sent_at = time.monotonic()
                        await upstream.cancel(upstream_id)
                    elif time.monotonic() - cancel_sent_at > CANCEL_CONFIRM_SECONDS:
                        log.warning("%s did not confirm cancel of %s", self.provider.name, upstream_id)
                        break
                streaming = stream_task is not None and not stream_task.done()
                await pause(STREAM_POLL_SECONDS if streaming else delay, ctx, wake)
                wake.clear()
                poll = await upstream.poll(upstream_id, delay)
                if poll.state is None:
                    if poll.outage is not None:
                        unreachable_since = self._still_reachable(upstream, unreachable_since, poll.outage, ctx)
                    assert poll.wait is not None
                    delay = poll.wait
                    continue
                if unreachable_since is not None:
                    ctx.log(f"The upstream provider answers again after {time.monotonic() - unreachable_since:.0f} s")
                    unreachable_since = None
                new = poll.state
                changed = new.get("status") != state.get("status") or new.get("logs") != state.get("logs")
                state = new
                mirror.update(state.get("logs"))
                delay = POLL_MIN_SECONDS if changed else min(delay * 1.5, POLL_MAX_SECONDS)
        finally:
            if stream_task is not None:
                stream_task.cancel()
        mirror.flush(state.get("logs"))
        metrics = state.get("metrics")
        if isinstance(metrics, dict):
            for name, value in metrics.items():
                # Our own clock gives total_time and our files give image_count; the rest (predict_time above
                # all) is what the provider measured and bills, so it is what we report.
                if name not in ("total_time", "image_count") and isinstance(value, int | float):
                    ctx.set_metric(name, value)
        return state

    def _still_reachable(self, upstream: Upstream, since: float | None, what: str, ctx: PredictContext) -> float:
        """When the provider first stopped answering (logged once), or :class:`UpstreamError` once it has been
        silent for longer than the provider's ``unreachable_seconds``."""
        now = time.monotonic()
        if since is None:
            ctx.log(f"The upstream provider is not answering ({what}); still following the prediction")
            return now
        if now - since > self.provider.unreachable_seconds:
            raise UpstreamError(
                f"{upstream.name} stopped answering ({what}) for {self.provider.unreachable_seconds:.0f} s "
                "while the prediction ran there"
            )
        return since


class _LogMirror:
    """Appends the upstream's logs to ours line by line, as they grow."""

    def __init__(self, ctx: PredictContext) -> None:
        self.ctx = ctx
        self.seen = 0

    def update(self, logs: Any) -> None:
        """Log every complete new line (a partial last line waits for its newline)."""
        if not isinstance(logs, str) or len(logs) <= self.seen:
            return
        if not logs.startswith(logs[: self.seen]):
            return
        new = logs[self.seen :]
        complete, sep, _ = new.rpartition("\n")
        if not sep:
            return
        for line in complete.split("\n"):
            self.ctx.log(line)
        self.seen += len(complete) + 1

    def flush(self, logs: Any) -> None:
        """At the end: log what is left, partial line included."""
        self.update(logs)
        if isinstance(logs, str) and len(logs) > self.seen:
            self.ctx.log(logs[self.seen :])
            self.seen = len(logs)
