"""A server-sent events parser (the WHATWG event-stream format, as far as predictions use it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One event: its name (``message`` when unnamed), its data and the last event id seen."""

    event: str
    data: str
    id: str | None = None


def iter_events(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Events from the lines of a stream (without their line endings).

    Comments (``: ping``) are skipped; an event without data is not dispatched; the id persists
    across events until a new one arrives, as in browsers. An unfinished event at the end is dropped.
    """
    event = ""
    data: list[str] = []
    last_id: str | None = None
    for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
