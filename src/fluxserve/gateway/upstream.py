"""The provider's HTTP API as a forwarded prediction uses it: create, resume, poll, cancel, the event stream.

Requests that fail for a while are retried with backoff, honouring Retry-After up to
:data:`MAX_RETRY_AFTER_SECONDS`; a refused request becomes an :class:`UpstreamError` whose message names
the provider, the HTTP status, what the status means and the provider's own detail, never a token:
provider messages are scrubbed of the token before they are shown.

Polling builds ``{base}/predictions/{id}`` itself instead of trusting ``urls.get``: CometAPI passes
Replicate's objects through unchanged, so their ``urls`` point at api.replicate.com, which the CometAPI key
cannot read (reference/replicate-api.md §11). Predictions are read with the client's parser
(:func:`~fluxserve.client.client.prediction_fields`) and streams with its SSE parser.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx

from fluxserve.client.client import prediction_fields
from fluxserve.client.sse import aiter_events
from fluxserve.gateway.routes import Provider, UpstreamRoute
from fluxserve.net.guard import NetPolicy, UnsafeURL, check_url, guarded_client
from fluxserve.predictors.base import PredictContext, PredictionCanceled

log = logging.getLogger("fluxserve.gateway")

#: Longest Retry-After we honour inside one prediction; beyond it the prediction fails with the provider's answer.
MAX_RETRY_AFTER_SECONDS = 60.0


class UpstreamError(RuntimeError):
    """The provider refused or failed the prediction; the message is the prediction's ``error``."""


class Poll(NamedTuple):
    """One poll of an upstream prediction: its state, or why there is none this time and how long to wait."""

    #: The prediction as the provider answered it (HTTP 200), or None.
    state: dict[str, Any] | None
    #: Why the provider is not answering (a transport error's name or ``HTTP 5xx``); None when it answered.
    outage: str | None = None
    #: Seconds to wait before the next poll (backoff or Retry-After); None when ``state`` is set.
    wait: float | None = None


class Upstream:
    """One forwarded model's provider, over the two clients :meth:`open` makes (see the module docstring)."""

    def __init__(self, route: UpstreamRoute, api: httpx.AsyncClient, other: httpx.AsyncClient) -> None:
        self.route = route
        self.provider: Provider = route.provider
        #: Carries the token; used only for URLs on the provider's origin.
        self.api = api
        #: No token, SSRF-guarded: for URLs elsewhere (output and stream URLs come from the provider's answers).
        self.other = other

    @classmethod
    @asynccontextmanager
    async def open(cls, route: UpstreamRoute, *, allow_loopback: bool) -> AsyncIterator[Upstream]:
        """The provider's API client and the client for everything else, closed on exit."""
        provider = route.provider
        timeout = httpx.Timeout(provider.timeout, connect=min(10.0, provider.timeout))
        api = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {provider.token()}", "User-Agent": "fluxserve-gateway"},
            timeout=timeout,
        )
        other = guarded_client(NetPolicy(allow_loopback=allow_loopback), timeout=timeout, follow_redirects=True)
        try:
            yield cls(route, api, other)
        finally:
            await api.aclose()
            await other.aclose()

    @property
    def name(self) -> str:
        """How errors name the provider: ``Upstream provider NAME (BASE_URL)``."""
        return f"Upstream provider {self.provider.name} ({self.provider.base_url})"

    def client_for(self, url: str) -> httpx.AsyncClient:
        """The token-carrying client for URLs on the provider's origin, the guarded one for any other."""
        return self.api if _origin(url) == self.provider.origin else self.other

    def scrub(self, text: str) -> str:
        """``text`` with the provider token blanked out, for when a provider echoes it."""
        token = self.provider.token()
        return text.replace(token, "[token]") if token else text

    def describe(self, response: httpx.Response, action: str) -> str:
        """A readable error for a refused request: provider, status, its detail, and what to do."""
        detail = ""
        try:
            body = response.json()
            if isinstance(body, dict):
                detail = str(body.get("detail") or body.get("title") or body.get("error") or "")
        except ValueError:
            detail = response.text[:300]
        detail = self.scrub(detail.strip()[:500])
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
        text = f"{self.name} answered HTTP {code} when {action}"
        if hint:
            text += f" ({hint})"
        return text + (f": {detail}" if detail else "")

    # --- create or resume --------------------------------------------------------------------------------

    async def resume(self, ctx: PredictContext) -> dict[str, Any] | None:
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
                response = await self.api.get(url)
            except httpx.HTTPError as exc:
                if time.monotonic() + delay > give_up:
                    raise UpstreamError(
                        f"{self.name} could not be reached to resume prediction {upstream_id}: {type(exc).__name__}"
                    ) from exc
                await pause(delay, ctx)
                delay = min(delay * 2, 10.0)
                continue
            if response.status_code != 200:
                raise UpstreamError(self.describe(response, f"resuming prediction {upstream_id}"))
            state = prediction_fields(response.json())
            log.info("resuming upstream prediction %s at %s", upstream_id, self.provider.name)
            return state

    async def create(self, payload: dict[str, Any], ctx: PredictContext) -> dict[str, Any]:
        """Create the prediction upstream (model route, or version route when the models file pins a version)."""
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
                response = await self.api.post(url, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent, so trying again cannot create a second prediction upstream.
                if time.monotonic() + delay > give_up:
                    raise UpstreamError(f"{self.name} could not be reached: {type(exc).__name__}") from exc
                await pause(delay, ctx)
                delay = min(delay * 2, 10.0)
                continue
            except httpx.HTTPError as exc:
                # Sent, but no answer: it may exist upstream, so it is not re-sent (that could charge twice).
                raise UpstreamError(
                    f"{self.name} did not answer the request creating the prediction ({type(exc).__name__})"
                ) from exc
            if response.status_code in (200, 201, 202):
                created = response.json()
                if not isinstance(created, dict) or not created.get("id"):
                    raise UpstreamError(f"{self.name} answered the create request without a prediction id")
                return prediction_fields(created)
            if response.status_code == 429 or response.status_code >= 500:
                wait = retry_after(response) if response.status_code == 429 else None
                wait = delay if wait is None else wait
                if wait > MAX_RETRY_AFTER_SECONDS or time.monotonic() + wait > give_up:
                    raise UpstreamError(self.describe(response, "creating the prediction"))
                if response.status_code == 429:
                    ctx.log(f"The upstream provider's rate limit was reached; retrying in {wait:.1f} s")
                await pause(wait, ctx)
                delay = min(delay * 2, 10.0)
                continue
            raise UpstreamError(self.describe(response, "creating the prediction"))

    # --- follow ------------------------------------------------------------------------------------------

    async def poll(self, upstream_id: str, delay: float) -> Poll:
        """Read the prediction once; on failure say why and how long to wait (``delay`` was the last wait).

        A refused read (4xx but 429) raises :class:`UpstreamError`: it will not get better by asking again.
        """
        try:
            response = await self.api.get(f"{self.provider.base_url}/predictions/{upstream_id}")
        except httpx.HTTPError as exc:
            return Poll(None, type(exc).__name__, min(max(delay, 0.5) * 2, 5.0))
        code = response.status_code
        if code == 429 or code >= 500:
            retry = retry_after(response)
            wait = min(MAX_RETRY_AFTER_SECONDS, retry if retry is not None else max(delay, 0.5) * 2)
            # A 429 is the provider answering (slow down); a 5xx counts towards it being unreachable.
            return Poll(None, f"HTTP {code}" if code >= 500 else None, wait)
        if code != 200:
            raise UpstreamError(self.describe(response, f"reading prediction {upstream_id}"))
        return Poll(prediction_fields(response.json()))

    async def cancel(self, upstream_id: str) -> None:
        """Forward a cancel; a failure is logged only (the follow loop stops waiting for it after a while)."""
        try:
            response = await self.api.post(f"{self.provider.base_url}/predictions/{upstream_id}/cancel")
            if response.status_code >= 400:
                log.warning("%s answered HTTP %d to cancel %s", self.provider.name, response.status_code, upstream_id)
        except httpx.HTTPError as exc:
            log.warning("could not forward cancel of %s to %s: %s", upstream_id, self.provider.name, exc)

    async def watch_stream(self, url: str, wake: asyncio.Event) -> None:
        """Set ``wake`` on every server-sent event; return when the stream ends or fails (polling goes on)."""
        client = self.client_for(url)
        try:
            if client is self.other:
                check_url(url)
            timeout = httpx.Timeout(self.provider.timeout, read=None)
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
            async with client.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code != 200 or "text/event-stream" not in response.headers.get("content-type", ""):
                    return
                async for event in aiter_events(response.aiter_lines()):
                    wake.set()
                    if event.event == "done":
                        return
        except (httpx.HTTPError, UnsafeURL) as exc:
            log.debug("upstream stream %s ended: %s", url, exc)
        finally:
            # Poll now: the stream ending early may mean the provider went away (or the prediction ended).
            wake.set()


def canceled(ctx: PredictContext) -> bool:
    """Whether the user (or a deadline) asked to stop, without raising."""
    try:
        ctx.check_canceled()
    except PredictionCanceled:
        return True
    return False


async def pause(seconds: float, ctx: PredictContext, wake: asyncio.Event | None = None) -> None:
    """Sleep, but return early on cancel or when ``wake`` is set (checked every 100 ms)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if canceled(ctx) or (wake is not None and wake.is_set()):
            return
        if wake is None:
            await asyncio.sleep(min(0.1, left))
        else:
            with suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(0.1, left))


def retry_after(response: httpx.Response) -> float | None:
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


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
