"""The SSE event builder and the follow loop, without a server."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from fluxserve.api.links import Links
from fluxserve.api.stream import Cursor, event_stream, events_for, format_event
from fluxserve.events.hub import PREDICTION, EventHub
from fluxserve.lifecycle import Status
from fluxserve.service.follow import follow
from fluxserve.store.rows import PredictionRow


def row(**changes: Any) -> PredictionRow:
    base = PredictionRow(
        id="p1",
        key_id="k",
        model="o/n",
        version="hidden",
        input={},
        status=Status.PROCESSING,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return replace(base, **changes)


LINKS = Links(origin="http://h", api="http://h/v1")


def parse(messages: list[str]) -> list[tuple[str, str, str]]:
    """(event, id, data) of each message."""
    parsed = []
    for message in messages:
        fields: dict[str, list[str]] = {}
        for line in message.strip("\n").split("\n"):
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        parsed.append((fields["event"][0], fields["id"][0], "\n".join(fields["data"])))
    return parsed


def test_cursor_round_trip_and_foreign_ids() -> None:
    assert str(Cursor(12, 3, 0)) == "12:3:0"
    assert Cursor.parse("12:3:0") == Cursor(12, 3, 0)
    for foreign in (None, "", "1690212292:0", "a:b:c", "1:2:3:4", "-1:0:0"):
        assert Cursor.parse(foreign) == Cursor()
    assert Cursor.parse("1:2:9").stage == 2


def test_format_event_splits_lines_and_normalises_carriage_returns() -> None:
    text = format_event("logs", "a\r\nb\rc\n", Cursor(1, 0, 0))
    assert text == "event: logs\nid: 1:0:0\ndata: a\ndata: b\ndata: c\ndata: \n\n"


def test_events_follow_logs_then_new_outputs_then_done() -> None:
    cursor = Cursor()
    first = parse(events_for(row(logs="seed\n", output=None), cursor, LINKS))
    assert first == [("logs", "5:0:0", "seed\n")]
    second = parse(events_for(row(logs="seed\nstep\n", output=["fluxserve-blob:p1/out-0.png"]), cursor, LINKS))
    assert second == [("logs", "10:0:0", "step\n"), ("output", "10:1:0", "http://h/v1/outputs/p1/out-0.png")]
    # A stale snapshot (fewer logs) sends nothing.
    assert events_for(row(logs="seed\n"), cursor, LINKS) == []
    final = row(
        logs="seed\nstep\n",
        output=["fluxserve-blob:p1/out-0.png", "fluxserve-blob:p1/out-1.png"],
        status=Status.SUCCEEDED,
    )
    assert parse(events_for(final, cursor, LINKS)) == [
        ("output", "10:2:0", "http://h/v1/outputs/p1/out-1.png"),
        ("done", "10:2:2", "{}"),
    ]
    assert events_for(final, cursor, LINKS) == []


def test_string_output_once_and_other_outputs_as_json() -> None:
    cursor = Cursor()
    assert parse(events_for(row(output="hi"), cursor, LINKS)) == [("output", "0:1:0", "hi")]
    assert events_for(row(output="hi"), cursor, LINKS) == []
    assert parse(events_for(row(output={"a": 1}), Cursor(), LINKS)) == [("output", "0:1:0", '{"a":1}')]
    assert parse(events_for(row(output=[{"b": 2}]), Cursor(), LINKS)) == [("output", "0:1:0", '{"b":2}')]


def test_failed_and_canceled_endings() -> None:
    failed = parse(events_for(row(status=Status.FAILED, error="boom"), Cursor(), LINKS))
    assert failed == [("error", "0:0:1", '{"detail":"boom"}'), ("done", "0:0:2", '{"reason":"error"}')]
    # Resuming after the error sends only done.
    assert parse(events_for(row(status=Status.FAILED, error="boom"), Cursor(0, 0, 1), LINKS)) == [
        ("done", "0:0:2", '{"reason":"error"}')
    ]
    canceled = parse(events_for(row(status=Status.CANCELED), Cursor(), LINKS))
    assert canceled == [("done", "0:0:2", '{"reason":"canceled"}')]


class FakeStore:
    def __init__(self, current: PredictionRow | None) -> None:
        self.current = current
        self.reads = 0

    async def get_prediction(self, prediction_id: str, key_id: str | None = None) -> PredictionRow | None:
        self.reads += 1
        return self.current


async def test_follow_is_event_driven_pings_when_idle_and_ends_when_terminal() -> None:
    store = FakeStore(row(logs=""))
    hub = EventHub()
    svc: Any = SimpleNamespace(find=store.get_prediction, hub=hub)
    got: list[PredictionRow | None] = []

    async def consume() -> None:
        async for item in follow(svc, "p1", keepalive=0.1, reread=60):
            got.append(item)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.35)
    assert got[0] is not None and got.count(None) >= 2  # keep-alives while nothing happens
    assert store.reads == 1  # and no polling
    store.current = row(logs="a\n")
    hub.publish(PREDICTION, "p1")  # no payload: re-read
    await asyncio.sleep(0.02)
    assert store.reads == 2 and got[-1] is not None and got[-1].logs == "a\n"
    hub.publish(PREDICTION, "p1", row(logs="a\n", status=Status.SUCCEEDED))  # a snapshot: no read
    await asyncio.wait_for(task, 1)
    assert store.reads == 2
    last = got[-1]
    assert last is not None and last.status == Status.SUCCEEDED


async def test_follow_rereads_as_a_safety_net() -> None:
    store = FakeStore(row())
    svc: Any = SimpleNamespace(find=store.get_prediction, hub=EventHub())
    stream = event_stream(follow(svc, "p1", keepalive=60, reread=0.05), Cursor(), LINKS)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.01)
    store.current = row(status=Status.SUCCEEDED)  # changed without a notification
    assert await asyncio.wait_for(first, 1) == "event: done\nid: 0:0:2\ndata: {}\n\n"
    assert store.reads >= 2


async def test_event_stream_sends_pings() -> None:
    svc: Any = SimpleNamespace(find=FakeStore(row()).get_prediction, hub=EventHub())
    stream = event_stream(follow(svc, "p1", keepalive=0.02, reread=60), Cursor(), LINKS)
    assert await asyncio.wait_for(anext(stream), 1) == ": ping\n\n"
    await stream.aclose()


async def test_follow_of_a_missing_prediction_yields_nothing() -> None:
    svc: Any = SimpleNamespace(find=FakeStore(None).get_prediction, hub=EventHub())
    assert [item async for item in follow(svc, "p1")] == []
