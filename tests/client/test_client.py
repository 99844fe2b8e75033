"""The Python client's parsing, and the CLI's input typing, without a server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from fluxserve.catalog.registry import FLUX_SCHNELL
from fluxserve.cli.run import coerce, input_properties, parse_inputs
from fluxserve.client import Client, ClientError, StreamUnavailable, api_base, iter_events
from fluxserve.client.client import parse_prediction, prediction_fields
from fluxserve.client.sse import aiter_events
from fluxserve.progress import parse_progress
from fluxserve.schema import Model, Version


def test_sse_parser() -> None:
    lines = [
        ": ping",
        "event: logs",
        "id: 1:0:0",
        "data: a",
        "data: ",
        "",
        "",
        "data:no space",
        "",
        "event: done",
        "data: {}",
        "",
        "event: output",
        "data: unfinished",
    ]
    events = list(iter_events(lines))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("logs", "a\n", "1:0:0"),
        ("message", "no space", "1:0:0"),
        ("done", "{}", "1:0:0"),
    ]


async def test_sse_parser_reads_an_async_stream_alike() -> None:
    # The gateway follows its upstream's stream with the same parser, over httpx's aiter_lines().
    lines = ["event: logs", "data: a", "", ": ping", "event: done", "data: {}", "", "event: output", "data: x"]

    async def stream() -> AsyncIterator[str]:
        for line in lines:
            yield line

    events = [event async for event in aiter_events(stream())]
    assert [(e.event, e.data) for e in events] == [(e.event, e.data) for e in iter_events(lines)]
    assert [e.event for e in events] == ["logs", "done"]


def test_api_base_accepts_both_prefixes_and_bare_hosts() -> None:
    assert api_base("http://127.0.0.1:5000/v1") == "http://127.0.0.1:5000/v1"
    assert api_base("https://api.cometapi.com/replicate/v1/") == "https://api.cometapi.com/replicate/v1"
    assert api_base("https://api.replicate.com") == "https://api.replicate.com/v1"
    with pytest.raises(ValueError):
        api_base("localhost:5000")


def test_parse_prediction_takes_what_other_servers_send() -> None:
    # Replicate's creation response without output, data_removed or urls.stream; a newer status name.
    prediction = parse_prediction(
        {
            "id": "abc",
            "model": "o/n",
            "version": "hidden",
            "status": "aborted",
            "created_at": "2026-01-01T00:00:00.000Z",
            "urls": {"get": "https://api.replicate.com/v1/predictions/abc", "cancel": "c", "extra": None},
        }
    )
    assert prediction.status.value == "canceled"
    assert prediction.urls.stream == "" and prediction.urls.get.endswith("/abc")
    assert prediction.input == {} and prediction.logs == ""  # null or absent reads as empty, as we send it


def test_prediction_fields_fill_in_but_keep_the_status_as_sent() -> None:
    # What the gateway reads: a provider's own status names survive ("aborted" is not fluxserve's canceled).
    fields = prediction_fields({"id": "abc", "status": "aborted", "urls": {"get": "g", "stream": None}})
    assert fields["status"] == "aborted"
    assert fields["urls"] == {"get": "g", "cancel": "", "stream": "", "web": ""}
    assert fields["input"] is None and fields["logs"] is None
    with pytest.raises(ClientError):
        prediction_fields(["not", "an", "object"])


def test_progress_is_the_last_tqdm_line() -> None:
    logs = "Using seed: 1\n 10%|█         | 1/10 [00:00<?, ?it/s]\n 20%|██        | 2/10 [00:00<00:01,  9.9it/s]\n"
    progress = parse_progress(logs)
    assert progress is not None and (progress.percent, progress.current, progress.total) == (20, 2, 10)
    assert parse_progress("no bar here") is None


def test_inputs_are_typed_by_the_schema() -> None:
    model = Model(
        url="u",
        owner="black-forest-labs",
        name="flux-schnell",
        description=None,
        latest_version=Version(
            id="v", created_at="2026-01-01T00:00:00Z", cog_version="0", openapi_schema=FLUX_SCHNELL.openapi_schema
        ),
    )
    properties = input_properties(model)
    assert properties is not None and properties["aspect_ratio"]["enum"][0] == "1:1"
    values = parse_inputs(
        ["prompt=42", "num_outputs=2", "go_fast=no", "megapixels=0.25", "aspect_ratio=16:9", "seed=7"], properties
    )
    assert values == {
        "prompt": "42",  # a string field stays a string
        "num_outputs": 2,
        "go_fast": False,
        "megapixels": "0.25",
        "aspect_ratio": "16:9",
        "seed": 7,
    }
    with pytest.raises(typer.BadParameter, match="num_outputs must be an integer"):
        coerce("num_outputs", "two", properties)
    with pytest.raises(typer.BadParameter, match="NAME=VALUE"):
        parse_inputs(["prompt"], properties)


def test_without_a_schema_values_are_json_literals(tmp_path: Path) -> None:
    assert parse_inputs(["a=1", "b=0.5", "c=true", "d=16:9", 'e=["x"]', "f=hello"], None) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "16:9",
        "e": ["x"],
        "f": "hello",
    }
    image = tmp_path / "dot.png"
    image.write_bytes(b"\x89PNG")
    assert coerce("image", f"@{image}", None) == "data:image/png;base64,iVBORw=="


def _prediction(stream: str) -> Any:
    return parse_prediction(
        {"id": "p", "model": "o/n", "version": "hidden", "status": "processing", "created_at": "2026-01-01T00:00:00Z",
         "urls": {"stream": stream}}
    )  # fmt: skip


def test_stream_resumes_a_dropped_connection_with_last_event_id() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("last-event-id"))
        if len(seen) == 1:
            body = "event: logs\nid: 3:0:0\ndata: ab\ndata: \n\n"  # then the connection ends without done
        else:
            body = "event: output\nid: 3:1:0\ndata: x\n\nevent: done\nid: 3:1:2\ndata: {}\n\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)

    client = Client("http://h/v1", "t", transport=httpx.MockTransport(handler))
    events = list(client.stream(_prediction("http://h/v1/predictions/p/stream")))
    assert [e.event for e in events] == ["logs", "output", "done"]
    assert seen == [None, "3:0:0"]


def test_stream_that_is_not_an_event_stream_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"detail": "nope"})

    client = Client("http://h/v1", "t", transport=httpx.MockTransport(handler))
    with pytest.raises(StreamUnavailable):
        list(client.stream(_prediction("http://h/v1/predictions/p/stream")))
    with pytest.raises(StreamUnavailable):
        list(client.stream(_prediction("")))


def test_run_falls_back_to_polling_when_the_stream_fails() -> None:
    import io

    from rich.console import Console

    from fluxserve.cli.run import Display, follow

    polls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        if request.url.path.endswith("/stream"):
            return httpx.Response(502, text="bad gateway")
        polls += 1
        done = polls >= 2
        return httpx.Response(
            200,
            json={
                "id": "p", "model": "o/n", "version": "hidden", "created_at": "2026-01-01T00:00:00Z",
                "status": "succeeded" if done else "processing",
                "logs": "Using seed: 1\n100%|██████████| 4/4 [00:00<00:00]\n" if done else "Using seed: 1\n",
                "output": ["https://h/out-0.webp"] if done else None,
                "urls": {"stream": "http://h/v1/predictions/p/stream"},
            },
        )  # fmt: skip

    screen = io.StringIO()
    client = Client("http://h/v1", "t", transport=httpx.MockTransport(handler))
    with Display(Console(file=screen, width=120)) as display:
        final = follow(client, _prediction("http://h/v1/predictions/p/stream"), display)
    assert final.status.value == "succeeded" and final.output == ["https://h/out-0.webp"]
    text = screen.getvalue()
    assert "polling instead" in text and "Using seed: 1" in text and "4/4" in text
    assert text.count("Using seed: 1") == 1  # each log line shown once
