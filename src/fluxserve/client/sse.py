"""A server-sent events parser (the WHATWG event-stream format, as far as predictions use it).

One parser, fed line by line, serves both the synchronous client (:func:`iter_events`) and the
gateway, which follows an upstream's stream over an async httpx response (:func:`aiter_events`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerSentEvent:
    """One event: its name (``message`` when unnamed), its data and the last event id seen."""

    event: str
    data: str
    id: str | None = None


@dataclass
class EventParser:
    """Turns the lines of a stream (without their line endings) into events, one line at a time.

    Comments (``: ping``) are skipped; an event without data is not dispatched; the id persists
    across events until a new one arrives, as in browsers. An unfinished event at the end is dropped.
    """

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _last_id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line; return the event it completes (a blank line ends an event), if any."""
        if not line:
            done = (
                ServerSentEvent(self._event or "message", "\n".join(self._data), self._last_id) if self._data else None
            )
            self._event, self._data = "", []
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None


def iter_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Events from the lines of a stream (see :class:`EventParser`)."""
    parser = EventParser()
    for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event


async def aiter_events(lines: AsyncIterable[str]) -> AsyncIterator[ServerSentEvent]:
    """Events from the lines of an async stream, e.g. ``httpx.Response.aiter_lines()`` (see :class:`EventParser`)."""
    parser = EventParser()
    async for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event
