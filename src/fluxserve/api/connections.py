"""Connection hygiene for ``fluxserve serve``: uvicorn's HTTP/1.1 protocol with the deadlines it lacks.

uvicorn closes idle keep-alive connections, but a connection that never finishes its request head (slowloris:
one header line every few seconds), or declares a body and stops sending it, is held open forever, and enough of
them exhaust the process's file descriptors. This protocol closes a connection whose request head has not fully
arrived within ``header_timeout`` seconds of the connection (or of the previous response), or whose body has sent
nothing for ``body_idle_timeout`` seconds. A body that keeps arriving, however slowly, is not cut off: a large
upload over a slow link is legitimate.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("fluxserve.connections")


class GuardedH11Protocol(H11Protocol):
    """:class:`H11Protocol` with a request-head deadline and a body idle timeout."""

    header_timeout = 10.0
    body_idle_timeout = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request head."""
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def data_received(self, data: bytes) -> None:
        """Feed h11, then re-arm: body bytes reset the idle timer; head bytes do not move the head deadline."""
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.body_idle_timeout)
        elif state is h11.IDLE:
            if self._deadline is None:
                self._arm(self.header_timeout)
        else:
            self._disarm()  # the whole request is in: the app takes it from here

    def on_response_complete(self) -> None:
        """The next request's head gets the same deadline as the first."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        part = "body" if self.conn.their_state is h11.SEND_BODY else "head"
        log.debug("closing %s: request %s too slow", self.client, part)
        self.transport.close()


def guarded_protocol(header_timeout: float, body_idle_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn should use, with these deadlines."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": header_timeout, "body_idle_timeout": body_idle_timeout},
    )
