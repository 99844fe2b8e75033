"""The gateway's HTTP side without a server: polling, the event stream and output downloads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from fluxserve.gateway.routes import Provider, UpstreamRoute
from fluxserve.gateway.transfer import rehost_outputs
from fluxserve.gateway.upstream import Poll, Upstream, UpstreamError

TOKEN = "r8_secret-token"
BASE = "https://up.example/v1"
Handler = Callable[[httpx.Request], httpx.Response]


@asynccontextmanager
async def _upstream(monkeypatch: pytest.MonkeyPatch, handler: Handler) -> AsyncIterator[Upstream]:
    monkeypatch.setenv("TEST_UP_TOKEN", TOKEN)
    route = UpstreamRoute("gw/m", Provider("up", BASE, "TEST_UP_TOKEN"), "o/m")
    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport) as api, httpx.AsyncClient(transport=transport) as other:
        yield Upstream(route, api, other)


async def test_poll_reads_the_prediction_with_the_clients_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == f"{BASE}/predictions/p1"
        return httpx.Response(200, json={"id": "p1", "status": "processing", "urls": {"get": "g"}})

    async with _upstream(monkeypatch, handler) as upstream:
        poll = await upstream.poll("p1", 0.2)
    assert poll.state is not None and poll.state["status"] == "processing"
    assert poll.state["urls"]["stream"] == "" and poll.state["logs"] is None


@pytest.mark.parametrize(
    ("response", "delay", "expected"),
    [
        (httpx.Response(503, headers={"Retry-After": "3"}), 0.2, Poll(None, "HTTP 503", 3.0)),
        (httpx.Response(500), 0.2, Poll(None, "HTTP 500", 1.0)),
        (httpx.Response(429), 4.0, Poll(None, None, 8.0)),
        (httpx.Response(429, headers={"Retry-After": "600"}), 0.2, Poll(None, None, 60.0)),
    ],
)
async def test_poll_backs_off_on_throttling_and_outages(
    monkeypatch: pytest.MonkeyPatch, response: httpx.Response, delay: float, expected: Poll
) -> None:
    async with _upstream(monkeypatch, lambda _: response) as upstream:
        assert await upstream.poll("p1", delay) == expected


async def test_poll_counts_a_transport_error_as_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with _upstream(monkeypatch, handler) as upstream:
        assert await upstream.poll("p1", 4.0) == Poll(None, "ConnectError", 5.0)


async def test_a_refused_poll_is_a_readable_error_without_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    async with _upstream(monkeypatch, lambda _: httpx.Response(401, json={"detail": f"bad {TOKEN}"})) as upstream:
        with pytest.raises(UpstreamError) as caught:
            await upstream.poll("p1", 0.2)
    assert str(caught.value) == (
        f"Upstream provider up ({BASE}) answered HTTP 401 when reading prediction p1 "
        "(the operator's provider token (TEST_UP_TOKEN) was refused): bad [token]"
    )


async def test_every_event_of_the_stream_wakes_the_poller_until_done(monkeypatch: pytest.MonkeyPatch) -> None:
    body = ": ping\n\nevent: logs\ndata: a\n\nevent: done\ndata: {}\n\nevent: logs\ndata: after\n\n"
    wakes: list[bool] = []

    async with _upstream(
        monkeypatch,
        lambda _: httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body),
    ) as upstream:
        wake = asyncio.Event()
        original = wake.set

        def count() -> None:
            wakes.append(True)
            original()

        wake.set = count  # type: ignore[method-assign]
        await upstream.watch_stream(f"{BASE}/predictions/p1/stream", wake)
    # logs, done, and the final wake-up when the stream ends.
    assert len(wakes) == 3


async def test_outputs_are_downloaded_into_our_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with _upstream(monkeypatch, lambda _: httpx.Response(200, content=b"png!")) as upstream:
        output = await rehost_outputs(
            upstream,
            [f"{BASE}/files/a.png", "https://cdn.example/x/a.png", "data:image/png;base64,aGk=", 3],
            tmp_path,
            10,
        )
    assert output == [tmp_path / "a.png", tmp_path / "a-1.png", tmp_path / "output.png", 3]
    assert [p.read_bytes() for p in output[:3]] == [b"png!", b"png!", b"hi"]


@pytest.mark.parametrize(
    ("url", "response", "message"),
    [
        ("https://cdn.example/a.png", httpx.Response(404), "Downloading output a.png from up answered HTTP 404"),
        ("https://cdn.example/a.png", httpx.Response(200, content=b"x" * 11),
         "Output a.png from up is larger than 10 bytes"),
        ("http://", httpx.Response(200), "up returned an output URL that may not be fetched: only http and https"),
    ],
)  # fmt: skip
async def test_output_download_errors_name_the_file_and_the_provider(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, response: httpx.Response, message: str
) -> None:
    async with _upstream(monkeypatch, lambda _: response) as upstream:
        with pytest.raises(UpstreamError) as caught:
            await rehost_outputs(upstream, {"image": url}, tmp_path, 10)
    assert str(caught.value).startswith(message)
