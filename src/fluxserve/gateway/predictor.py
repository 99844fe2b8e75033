"""The upstream predictor: runs one prediction by forwarding it to a Replicate-format provider.

It is a client of the Replicate HTTP API. It creates the prediction upstream (model route, or version
route when the models file pins a version), follows it (the provider's ``urls.stream`` as a wake-up signal
when offered, polling ``{base}/predictions/{id}`` with backoff always), mirrors its logs into ours, forwards
cancel, and downloads every output file so it is stored and served by us: provider URLs expire within the
hour, ours live as long as our retention says. It runs on the worker's event loop (``apredict``), not in a
thread, so one worker follows many forwarded predictions at once.

Polling builds ``{base}/predictions/{id}`` itself instead of trusting ``urls.get``: CometAPI passes
Replicate's objects through unchanged, so their ``urls`` point at api.replicate.com, which the CometAPI key
cannot read (reference/replicate-api.md §11).

Every error names the provider and the HTTP status, never a token: provider messages are scrubbed of the
token before they are shown.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import httpx

from fluxserve.formats import IMAGE_FORMATS, OCTET_STREAM, extension_for_mime
from fluxserve.gateway.routes import Provider, UpstreamRoute
from fluxserve.net.guard import NetPolicy, UnsafeURL, check_url, guarded_client
from fluxserve.predictors.base import PredictContext, PredictionCanceled
from fluxserve.predictors.images import sniff_image
from fluxserve.tree import amap_leaves

if TYPE_CHECKING:
    from fluxserve.config import Settings

log = logging.getLogger("fluxserve.gateway")

#: Files up to this size travel upstream as data URIs in ``auto`` mode (Replicate's guidance for data URIs).
DATA_URI_MAX_BYTES = 256 * 1024
#: Longest Retry-After we honour inside one prediction; beyond it the prediction fails with the provider's answer.
MAX_RETRY_AFTER_SECONDS = 60.0
#: After forwarding a cancel, how long we wait for the provider to confirm before ending canceled anyway.
CANCEL_CONFIRM_SECONDS = 10.0
#: With a live stream, polling is only a safety net.
STREAM_POLL_SECONDS = 5.0
POLL_MIN_SECONDS = 0.2
POLL_MAX_SECONDS = 2.0
_TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UpstreamError(RuntimeError):
    """The provider refused or failed the prediction; the message is the prediction's ``error``."""


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
        async with self._clients() as (api, other):
            created = await self._resume(api, ctx)
            if created is None:
                payload = {k: await self._input_value(api, k, v) for k, v in inputs.items() if v is not None}
                created = await self._create(api, payload, ctx)
                upstream_id = str(created.get("id", ""))
                # Saved with the prediction: if this process dies, the next worker follows this upstream
                # prediction instead of failing ours (and the user paying twice for a re-run).
                ctx.checkpoint({"base_url": self.provider.base_url, "upstream_id": upstream_id})
                log.info(
                    "forwarded to %s (%s) as prediction %s", self.provider.name, self.provider.base_url, upstream_id
                )
            final = await self._follow(api, other, created, ctx)
            status = final.get("status")
            if ctx.lost:
                # Another worker owns this prediction now; it is still running upstream for that worker.
                raise PredictionCanceled()
            if _canceled(ctx) or status == "canceled":
                raise PredictionCanceled()
            if status != "succeeded":
                error = _scrub(str(final.get("error") or "no error message"), self.provider.token())
                raise UpstreamError(f"{self._name()} reports that the prediction {status}: {error}")
            return await self._outputs(api, other, final.get("output"), ctx.output_dir)

    # --- HTTP plumbing ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def _clients(self) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
        """The provider's API client (carries the token, only to the provider's origin) and a client for
        everything else (no token; SSRF-guarded, since output URLs come from the provider's answers)."""
        timeout = httpx.Timeout(self.provider.timeout, connect=min(10.0, self.provider.timeout))
        api = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {self.provider.token()}", "User-Agent": "fluxserve-gateway"},
            timeout=timeout,
        )
        other = guarded_client(NetPolicy(allow_loopback=self.allow_loopback), timeout=timeout, follow_redirects=True)
        try:
            yield api, other
        finally:
            await api.aclose()
            await other.aclose()

    def _name(self) -> str:
        return f"Upstream provider {self.provider.name} ({self.provider.base_url})"

    def _describe(self, response: httpx.Response, action: str) -> str:
        """A readable error for a refused request: provider, status, its detail, and what to do."""
        detail = ""
        try:
            body = response.json()
            if isinstance(body, dict):
                detail = str(body.get("detail") or body.get("title") or body.get("error") or "")
        except ValueError:
            detail = response.text[:300]
        detail = _scrub(detail.strip()[:500], self.provider.token())
        code = response.status_code
        hint = {
            401: f"the operator's provider token ({self.provider.token_env}) was refused",
            403: f"the operator's provider token ({self.provider.token_env}) may not use this model",
            402: "the provider account needs credit",
            404: f"the provider does not know {self.route.upstream_model}"
            + (f" version {self.route.version}" if self.route.version else ""),
            422: "the provider refused the input",
            429: "the provider's rate limit was reached",
        }.get(code, "the provider failed" if code >= 500 else "")
        text = f"{self._name()} answered HTTP {code} when {action}"
        if hint:
            text += f" ({hint})"
        return text + (f": {detail}" if detail else "")

    async def _sleep(self, seconds: float, ctx: PredictContext, wake: asyncio.Event | None = None) -> None:
        """Sleep, but return early on cancel or when ``wake`` is set (checked every 100 ms)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if _canceled(ctx) or (wake is not None and wake.is_set()):
                return
            if wake is None:
                await asyncio.sleep(min(0.1, left))
            else:
                with suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(0.1, left))

    # --- inputs ------------------------------------------------------------------------------------------

    async def _input_value(self, api: httpx.AsyncClient, field: str, value: Any) -> Any:
        """File inputs arrive as bytes (the worker resolved them); turn each into something the provider reads."""
        if isinstance(value, bytes):
            return await self._file_ref(api, field, value)
        if isinstance(value, list) and value and all(isinstance(v, bytes) for v in value):
            return [await self._file_ref(api, f"{field}[{i}]", v) for i, v in enumerate(value)]
        return value

    async def _file_ref(self, api: httpx.AsyncClient, field: str, data: bytes) -> str:
        fmt = sniff_image(data)
        mime = IMAGE_FORMATS[fmt].mime if fmt in IMAGE_FORMATS else OCTET_STREAM
        mode = self.provider.input_files
        if mode == "data_uri" or (mode == "auto" and len(data) <= DATA_URI_MAX_BYTES):
            return _data_uri(mime, data)
        filename = f"{field.replace('[', '-').rstrip(']')}{extension_for_mime(mime) or '.bin'}"
        try:
            response = await api.post(
                f"{self.provider.base_url}/files",
                files={"content": (filename, data, mime)},
                data={"type": mime},
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{self._name()} could not be reached to upload {field}: {type(exc).__name__}") from exc
        if response.status_code in (404, 405, 501) and mode == "auto":
            # A provider without a files route (CometAPI documents none): inline the file after all.
            return _data_uri(mime, data)
        if response.status_code not in (200, 201):
            raise UpstreamError(self._describe(response, f"uploading {field}"))
        url = (response.json().get("urls") or {}).get("get")
        if not isinstance(url, str):
            raise UpstreamError(f"{self._name()} answered the upload of {field} without urls.get")
        return url

    # --- create or resume --------------------------------------------------------------------------------

    async def _resume(self, api: httpx.AsyncClient, ctx: PredictContext) -> dict[str, Any] | None:
        """The upstream prediction a previous run of ours created (from its checkpoint), or None."""
        saved = ctx.resume_data or {}
        upstream_id = saved.get("upstream_id")
        if not isinstance(upstream_id, str) or saved.get("base_url") != self.provider.base_url:
            return None
        url = f"{self.provider.base_url}/predictions/{upstream_id}"
        give_up = time.monotonic() + self.provider.unreachable_seconds
        delay = 0.5
        while True:
            try:
                response = await api.get(url)
            except httpx.HTTPError as exc:
                if time.monotonic() + delay > give_up:
                    raise UpstreamError(
                        f"{self._name()} could not be reached to resume prediction {upstream_id}: {type(exc).__name__}"
                    ) from exc
                await self._sleep(delay, ctx)
                delay = min(delay * 2, 10.0)
                continue
            if response.status_code != 200:
                raise UpstreamError(self._describe(response, f"resuming prediction {upstream_id}"))
            state: dict[str, Any] = response.json()
            log.info("resuming upstream prediction %s at %s", upstream_id, self.provider.name)
            return state

    # --- create ------------------------------------------------------------------------------------------

    async def _create(self, api: httpx.AsyncClient, payload: dict[str, Any], ctx: PredictContext) -> dict[str, Any]:
        base = self.provider.base_url
        if self.route.version:
            url, body = f"{base}/predictions", {"version": self.route.version, "input": payload}
        else:
            url, body = f"{base}/models/{self.route.upstream_model}/predictions", {"input": payload}
        give_up = time.monotonic() + self.provider.unreachable_seconds
        delay = 0.5
        while True:
            ctx.check_canceled()
            try:
                response = await api.post(url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent, so trying again cannot create a second prediction upstream.
                if time.monotonic() + delay > give_up:
                    raise UpstreamError(f"{self._name()} could not be reached: {type(exc).__name__}") from exc
                await self._sleep(delay, ctx)
                delay = min(delay * 2, 10.0)
                continue
            except httpx.HTTPError as exc:
                # Sent, but no answer: it may exist upstream, so it is not re-sent (that could charge twice).
                raise UpstreamError(
                    f"{self._name()} did not answer the request creating the prediction ({type(exc).__name__})"
                ) from exc
            if response.status_code in (200, 201, 202):
                created = response.json()
                if not isinstance(created, dict) or not created.get("id"):
                    raise UpstreamError(f"{self._name()} answered the create request without a prediction id")
                return created
            if response.status_code == 429 or response.status_code >= 500:
                wait = _retry_after(response) if response.status_code == 429 else None
                wait = delay if wait is None else wait
                if wait > MAX_RETRY_AFTER_SECONDS or time.monotonic() + wait > give_up:
                    raise UpstreamError(self._describe(response, "creating the prediction"))
                if response.status_code == 429:
                    ctx.log(f"The upstream provider's rate limit was reached; retrying in {wait:.1f} s")
                await self._sleep(wait, ctx)
                delay = min(delay * 2, 10.0)
                continue
            raise UpstreamError(self._describe(response, "creating the prediction"))

    # --- follow ------------------------------------------------------------------------------------------

    async def _follow(
        self, api: httpx.AsyncClient, other: httpx.AsyncClient, state: dict[str, Any], ctx: PredictContext
    ) -> dict[str, Any]:
        """Follow the upstream prediction until it is terminal, mirroring its logs and forwarding cancel."""
        upstream_id = str(state["id"])
        poll_url = f"{self.provider.base_url}/predictions/{upstream_id}"
        mirror = _LogMirror(ctx)
        logs_now = state.get("logs")
        if ctx.resume_data and isinstance(logs_now, str):
            # Resumed: our logs already hold what the previous run mirrored (up to its last write); go on from
            # the upstream's present lines rather than repeat them. Lines from the outage itself are skipped.
            mirror.seen = logs_now.rfind("\n") + 1
        mirror.update(logs_now)
        wake = asyncio.Event()
        stream_task: asyncio.Task[None] | None = None
        stream_url = (state.get("urls") or {}).get("stream")
        if self.provider.stream and isinstance(stream_url, str):
            stream_task = asyncio.create_task(self._watch_stream(api, other, stream_url, wake))
        delay = POLL_MIN_SECONDS
        unreachable_since: float | None = None
        cancel_sent_at: float | None = None
        try:
            while state.get("status") not in _TERMINAL:
                if ctx.lost:
                    break
                if _canceled(ctx):
                    if cancel_sent_at is None:
                        cancel_sent_at = time.monotonic()
                        await self._forward_cancel(api, upstream_id)
                    elif time.monotonic() - cancel_sent_at > CANCEL_CONFIRM_SECONDS:
                        log.warning("%s did not confirm cancel of %s", self.provider.name, upstream_id)
                        break
                streaming = stream_task is not None and not stream_task.done()
                await self._sleep(STREAM_POLL_SECONDS if streaming else delay, ctx, wake)
                wake.clear()
                try:
                    response = await api.get(poll_url)
                except httpx.HTTPError as exc:
                    unreachable_since = self._still_reachable(unreachable_since, f"{type(exc).__name__}", ctx)
                    delay = min(max(delay, 0.5) * 2, 5.0)
                    continue
                if response.status_code == 429 or response.status_code >= 500:
                    if response.status_code >= 500:
                        unreachable_since = self._still_reachable(
                            unreachable_since, f"HTTP {response.status_code}", ctx
                        )
                    retry = _retry_after(response)
                    delay = min(MAX_RETRY_AFTER_SECONDS, retry if retry is not None else max(delay, 0.5) * 2)
                    continue
                if response.status_code != 200:
                    raise UpstreamError(self._describe(response, f"reading prediction {upstream_id}"))
                if unreachable_since is not None:
                    ctx.log(f"The upstream provider answers again after {time.monotonic() - unreachable_since:.0f} s")
                    unreachable_since = None
                new = response.json()
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

    def _still_reachable(self, since: float | None, what: str, ctx: PredictContext) -> float:
        now = time.monotonic()
        if since is None:
            ctx.log(f"The upstream provider is not answering ({what}); still following the prediction")
            return now
        if now - since > self.provider.unreachable_seconds:
            raise UpstreamError(
                f"{self._name()} stopped answering ({what}) for {self.provider.unreachable_seconds:.0f} s "
                "while the prediction ran there"
            )
        return since

    async def _forward_cancel(self, api: httpx.AsyncClient, upstream_id: str) -> None:
        try:
            response = await api.post(f"{self.provider.base_url}/predictions/{upstream_id}/cancel")
            if response.status_code >= 400:
                log.warning("%s answered HTTP %d to cancel %s", self.provider.name, response.status_code, upstream_id)
        except httpx.HTTPError as exc:
            log.warning("could not forward cancel of %s to %s: %s", upstream_id, self.provider.name, exc)

    async def _watch_stream(
        self, api: httpx.AsyncClient, other: httpx.AsyncClient, url: str, wake: asyncio.Event
    ) -> None:
        """Set ``wake`` on every server-sent event; return when the stream ends or fails (polling goes on)."""
        client = api if _origin(url) == self.provider.origin else other
        try:
            if client is other:
                check_url(url)
            timeout = httpx.Timeout(self.provider.timeout, read=None)
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
            async with client.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code != 200 or "text/event-stream" not in response.headers.get("content-type", ""):
                    return
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        wake.set()
                        if line[6:].strip() == "done":
                            return
        except (httpx.HTTPError, UnsafeURL) as exc:
            log.debug("upstream stream %s ended: %s", url, exc)
        finally:
            # Poll now: the stream ending early may mean the provider went away (or the prediction ended).
            wake.set()

    # --- outputs -----------------------------------------------------------------------------------------

    async def _outputs(self, api: httpx.AsyncClient, other: httpx.AsyncClient, output: Any, out_dir: Path) -> Any:
        """Download every file URL (and decode every data URI) in ``output``; keep the JSON shape."""
        names: set[str] = set()

        async def rehost(leaf: Any) -> Any:
            if isinstance(leaf, str) and leaf.startswith(("https://", "http://", "data:")):
                return await self._download(api, other, leaf, out_dir, names)
            return leaf

        return await amap_leaves(output, rehost)

    async def _download(
        self, api: httpx.AsyncClient, other: httpx.AsyncClient, url: str, out_dir: Path, names: set[str]
    ) -> Path:
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            mime = header[5:].split(";")[0]
            data = base64.b64decode(payload) if ";base64" in header else unquote(payload).encode()
            path = out_dir / _unique_name(f"output{extension_for_mime(mime) or '.bin'}", names)
            path.write_bytes(data)
            return path
        name = _unique_name(_SAFE_NAME.sub("_", unquote(urlsplit(url).path.rsplit("/", 1)[-1])) or "output", names)
        path = out_dir / name
        client = api if _origin(url) == self.provider.origin else other
        delay = 0.5
        for attempt in range(4):
            try:
                await self._fetch_to(client, url, path)
                return path
            except UpstreamError:
                raise
            except (httpx.HTTPError, OSError) as exc:
                if attempt == 3:
                    raise UpstreamError(
                        f"Could not download output {name} from {self.provider.name}: {type(exc).__name__}"
                    ) from exc
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _fetch_to(self, client: httpx.AsyncClient, url: str, path: Path) -> None:
        try:
            check_url(url)
        except UnsafeURL as exc:
            raise UpstreamError(f"{self.provider.name} returned an output URL that may not be fetched: {exc}") from exc
        size = 0
        async with client.stream("GET", url) as response:
            if response.status_code >= 500:
                raise httpx.HTTPStatusError("server error", request=response.request, response=response)
            if response.status_code != 200:
                raise UpstreamError(
                    f"Downloading output {path.name} from {self.provider.name} answered HTTP {response.status_code}"
                )
            with path.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_output_bytes:
                        raise UpstreamError(
                            f"Output {path.name} from {self.provider.name} is larger than {self.max_output_bytes} bytes"
                        )
                    out.write(chunk)


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


def _canceled(ctx: PredictContext) -> bool:
    """Whether the user (or a deadline) asked to stop, without raising."""
    try:
        ctx.check_canceled()
    except PredictionCanceled:
        return True
    return False


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _unique_name(name: str, names: set[str]) -> str:
    candidate, i = name, 1
    while candidate in names:
        stem, dot, ext = name.rpartition(".")
        candidate = f"{stem}-{i}.{ext}" if dot else f"{name}-{i}"
        i += 1
    names.add(candidate)
    return candidate


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _scrub(text: str, token: str) -> str:
    """Never show the provider token, even if a provider echoes it."""
    return text.replace(token, "[token]") if token else text
