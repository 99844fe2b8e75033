"""Webhooks: event filter, throttling, Standard Webhooks signatures, and delivery from an outbox.

* ``start``, ``output`` and ``logs`` are sent once, best effort, by the process that changed the
  prediction (``output``/``logs`` at most one per 500 ms per prediction, the last one always sent).
* ``completed`` goes through the persisted outbox: its row is written in the same transaction as the
  terminal status, and a delivery loop in every process retries it with backoff, so a restart loses
  none. The message id (``webhook-id``) stays the same across retries; 3xx counts as a failure.
* Every request is signed per Standard Webhooks with the key's secret (``GET /v1/webhooks/default/secret``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, get_args

import httpx

from fluxserve.net.guard import NetPolicy, UnsafeURL, check_url, guarded_client
from fluxserve.schema import WebhookEvent, utcnow
from fluxserve.store.rows import PredictionRow
from fluxserve.store.store import Store
from fluxserve.wire import Links, render_prediction

if TYPE_CHECKING:
    from fluxserve.metrics.prometheus import Metrics

log = logging.getLogger("fluxserve.webhooks")

#: Cog's webhook events, as the wire schema defines them.
EVENTS: tuple[str, ...] = get_args(WebhookEvent)
#: Replicate's default: "whenever there are new outputs or the prediction has finished".
DEFAULT_EVENTS = ("output", "completed")
THROTTLE_SECONDS = 0.5
#: Seconds after each failed attempt of a terminal delivery (11 tries over about 3 hours).
RETRY_DELAYS = (1, 2, 5, 10, 30, 60, 300, 900, 1800, 7200)
TIMEOUT = httpx.Timeout(15.0, connect=5.0)
#: How long a process owns a claimed delivery before another may retry it.
DELIVERY_LEASE_SECONDS = 60.0


def new_secret() -> str:
    """A signing secret in the ``whsec_<base64>`` form the clients expect."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_message_id() -> str:
    """A Standard Webhooks message id."""
    return "msg_" + secrets.token_urlsafe(18)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}`` with the decoded secret."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def wants(row: PredictionRow, event: str) -> bool:
    """Whether ``row``'s webhook subscribed to ``event``."""
    if not row.webhook:
        return False
    chosen = row.webhook_events_filter or DEFAULT_EVENTS
    return event in chosen


def render_body(row: PredictionRow, default_api_base: str) -> str:
    """The webhook body: the prediction as GET returns it, with the creating request's URLs."""
    return render_prediction(row, Links.from_api_base(row.api_base or default_api_base)).model_dump_json()


def terminal_delivery(default_api_base: str) -> Callable[[PredictionRow], dict[str, Any] | None]:
    """The store hook that turns a prediction reaching a terminal state into an outbox row."""

    def delivery(row: PredictionRow) -> dict[str, Any] | None:
        if not wants(row, "completed") or row.webhook is None:
            return None
        now = utcnow()
        return {
            "id": new_message_id(),
            "prediction_id": row.id,
            "key_id": row.key_id,
            "url": row.webhook,
            "body": render_body(row, default_api_base),
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }

    return delivery


class WebhookSender:
    """Sends webhooks from one process: best-effort events now, and the outbox in a loop."""

    def __init__(
        self, store: Store, policy: NetPolicy, default_api_base: str, *, metrics: Metrics | None = None
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.default_api_base = default_api_base
        self._client = guarded_client(policy, timeout=TIMEOUT)
        self._secrets: dict[str, str] = {}
        self._last_sent: dict[str, float] = {}
        self._trailing: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, PredictionRow] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        #: Outbox claims made so far: each is a query, so the tests hold it to one per wake or poll.
        self.claims = 0

    async def close(self) -> None:
        """Stop pending sends and close connections."""
        for task in [*self._tasks, *self._trailing.values()]:
            task.cancel()
        await self._client.aclose()

    async def _secret(self, key_id: str) -> str:
        if key_id not in self._secrets:
            self._secrets[key_id] = await self.store.webhook_secret(key_id, new_secret())
        return self._secrets[key_id]

    async def post(self, url: str, key_id: str, message_id: str, body: str) -> httpx.Response:
        """POST one signed message (raises on network errors and unsafe URLs)."""
        check_url(url)
        timestamp = int(time.time())
        data = body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "fluxserve-webhooks",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(await self._secret(key_id), message_id, timestamp, data),
        }
        return await self._client.post(url, content=data, headers=headers)

    # --- best-effort events ------------------------------------------------------------------------

    def event(self, row: PredictionRow, event: str) -> None:
        """Send ``start``/``output``/``logs`` for ``row`` if its filter asks for it (never blocks)."""
        if not wants(row, event):
            return
        if event in ("output", "logs"):
            key = f"{row.id}:{event}"
            wait = self._last_sent.get(key, 0.0) + THROTTLE_SECONDS - time.monotonic()
            if wait > 0:
                # Throttled: send the newest state once the window has passed.
                if key not in self._trailing:
                    self._trailing[key] = asyncio.create_task(self._send_later(key, wait))
                self._pending[key] = row
                return
            self._last_sent[key] = time.monotonic()
        self._spawn(self._send_once(row, event))

    async def _send_later(self, key: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self._trailing.pop(key, None)
        row = self._pending.pop(key, None)
        if row is not None:
            self._last_sent[key] = time.monotonic()
            await self._send_once(row, key.rsplit(":", 1)[1])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_once(self, row: PredictionRow, event: str) -> None:
        assert row.webhook is not None
        try:
            response = await self.post(
                row.webhook, row.key_id, new_message_id(), render_body(row, self.default_api_base)
            )
            if not response.is_success:
                log.info("webhook %s for %s answered %s", event, row.id, response.status_code)
            outcome = "success" if response.is_success else "http_error"
        except (httpx.HTTPError, httpx.InvalidURL, UnsafeURL, OSError, ValueError) as exc:
            log.info("webhook %s for %s failed: %s", event, row.id, exc)
            outcome = "network_error" if isinstance(exc, httpx.HTTPError | OSError) else "unsafe_url"
        except Exception:  # a spawned task: nothing may escape it unretrieved
            log.exception("webhook %s for %s failed", event, row.id)
            outcome = "network_error"
        self._count("event", outcome)

    def _count(self, kind: str, outcome: str, *, gave_up: bool = False) -> None:
        """Record one webhook request (``gave_up``: it will not be retried) in the metrics, if any."""
        if self.metrics is None:
            return
        self.metrics.webhook_sent(kind, outcome)
        if gave_up or (kind == "event" and outcome != "success"):
            self.metrics.webhook_failed(kind)

    def forget(self, prediction_id: str) -> None:
        """Drop throttling state of a finished prediction."""
        for event in ("output", "logs"):
            key = f"{prediction_id}:{event}"
            self._last_sent.pop(key, None)
            task = self._trailing.pop(key, None)
            if task is not None:
                task.cancel()
            self._pending.pop(key, None)

    # --- the outbox ---------------------------------------------------------------------------------

    async def run(self, poll_seconds: float = 1.0) -> None:
        """Deliver due outbox rows forever (safe in every process: rows are claimed with a lease)."""
        limit = 20
        while True:
            # Cleared before claiming, so a wake that arrives while this claim runs is not lost.
            self.wake.clear()
            self.claims += 1
            try:
                due = await self.store.claim_deliveries(limit=limit, lease_seconds=DELIVERY_LEASE_SECONDS)
                if due:
                    await asyncio.gather(*(self._deliver(d) for d in due))
                    if len(due) == limit:
                        continue  # maybe more are due; a short batch means the outbox is drained
            except Exception as exc:
                log.warning("webhook outbox: %s (will retry)", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), poll_seconds)

    async def _deliver(self, delivery: dict[str, Any]) -> None:
        attempts = int(delivery["attempts"]) + 1
        retry_after: float | None = None
        try:
            response = await self.post(delivery["url"], delivery["key_id"], delivery["id"], delivery["body"])
            if response.is_success:
                self._count("completed", "success")
                await self.store.delivery_done(delivery["id"], attempts)
                return
            error = f"HTTP {response.status_code}"
            outcome = "http_error"
            if response.status_code == 410:
                # The receiver says it is gone for good.
                self._count("completed", outcome, gave_up=True)
                await self.store.delivery_failed(delivery["id"], attempts, error)
                return
            if response.status_code == 429:
                with contextlib.suppress(ValueError):
                    retry_after = min(float(response.headers.get("retry-after", "")), 3600.0)
        except (UnsafeURL, httpx.InvalidURL, ValueError) as exc:
            # No retry can succeed: the URL itself is refused (or cannot even be sent). Say why, once.
            log.warning("webhook %s for %s: giving up: %s", delivery["id"], delivery["prediction_id"], exc)
            self._count("completed", "unsafe_url", gave_up=True)
            await self.store.delivery_failed(delivery["id"], attempts, f"{type(exc).__name__}: {exc}")
            return
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            outcome = "network_error"
        gave_up = attempts > len(RETRY_DELAYS)
        self._count("completed", outcome, gave_up=gave_up)
        if gave_up:
            log.warning("webhook %s for %s: giving up after %d attempts (%s)", delivery["id"],
                        delivery["prediction_id"], attempts, error)  # fmt: skip
            await self.store.delivery_failed(delivery["id"], attempts, error)
            return
        delay = retry_after if retry_after is not None else RETRY_DELAYS[attempts - 1]
        await self.store.delivery_retry(delivery["id"], attempts, utcnow() + timedelta(seconds=delay), error)
