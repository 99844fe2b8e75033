"""Events across processes: PostgreSQL ``LISTEN/NOTIFY`` bridged to the local :class:`EventHub`.

Each process keeps one dedicated asyncpg connection. Local publications are sent as
``pg_notify(channel, "<origin>|<key>")`` after the row change committed; notifications from other
processes are delivered to local subscribers with no payload, so they re-read the row. When the
connection drops (database restart), the bridge reconnects with backoff, LISTENs again, and wakes
every local subscriber once, since notifications sent meanwhile are lost. Publications made while
disconnected are queued (bounded) and sent after reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from fluxserve.events.hub import CANCEL, PREDICTION, WORK, EventHub

log = logging.getLogger("fluxserve.events")

CHANNELS = {PREDICTION: "fluxserve_prediction", CANCEL: "fluxserve_cancel", WORK: "fluxserve_work"}
_LOCAL = {pg: local for local, pg in CHANNELS.items()}
_MAX_PENDING = 10_000


def asyncpg_dsn(url: str) -> str:
    """A libpq-style DSN for asyncpg from a SQLAlchemy URL (drops the ``+driver`` part)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgNotifyBridge:
    """Carries :class:`EventHub` publications between processes sharing one PostgreSQL database."""

    def __init__(self, url: str, hub: EventHub) -> None:
        self._dsn = asyncpg_dsn(url)
        self._hub = hub
        self._origin = uuid.uuid4().hex[:12]
        self._pending: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=_MAX_PENDING)
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self, connect_wait: float = 10.0) -> None:
        """Connect (waiting up to ``connect_wait`` s for the first connection) and keep the bridge running."""
        self._hub.forward = self.send
        self._task = asyncio.create_task(self._run(), name="fluxserve-pgnotify")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), connect_wait)

    async def stop(self) -> None:
        """Stop forwarding and close the connection."""
        self._hub.forward = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def send(self, channel: str, key: str) -> None:
        """Queue a notification (called synchronously by :meth:`EventHub.publish`)."""
        if channel not in CHANNELS:
            return
        try:
            self._pending.put_nowait((CHANNELS[channel], f"{self._origin}|{key}"))
        except asyncio.QueueFull:
            # Subscribers elsewhere fall back to their periodic re-reads; never block a publisher.
            log.warning("notification queue full; dropping a %s event", channel)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        origin, _, key = payload.partition("|")
        if origin != self._origin and channel in _LOCAL:
            self._hub.deliver(_LOCAL[channel], key)

    async def _run(self) -> None:
        backoff = 0.1
        first = True
        while True:
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())  # type: ignore[misc]
                for channel in CHANNELS.values():
                    await conn.add_listener(channel, self._on_notify)
                self.connected.set()
                if not first:
                    log.info("LISTEN connection restored")
                    self._hub.wake_all()
                first = False
                backoff = 0.1
                await self._send_loop(conn, lost)
            except asyncio.CancelledError:
                if conn is not None:
                    conn.terminate()
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
            self.connected.clear()
            if conn is not None:
                conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _send_loop(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        lost_wait = asyncio.ensure_future(lost.wait())
        try:
            while True:
                get = asyncio.ensure_future(self._pending.get())
                await asyncio.wait({get, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    raise ConnectionError("connection closed")
                channel, payload = get.result()
                try:
                    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
                except BaseException:
                    # Keep it for the next connection (order among retries is not guaranteed).
                    with contextlib.suppress(asyncio.QueueFull):
                        self._pending.put_nowait((channel, payload))
                    raise
        finally:
            lost_wait.cancel()
