"""``GET {prefix}/predictions/{id}/stream``: a prediction's progress as server-sent events.

Events follow Replicate's stream: ``output`` (each output item as it appears), ``logs`` (new log
text), ``error`` (``{"detail": …}``) and ``done`` (``{}`` or ``{"reason": …}``), always last. Every
event carries an ``id:`` (the official Python client drops events without one) that records how much
has been sent, so a client that reconnects with ``Last-Event-ID`` gets only what it has not seen.

The URL is a capability URL: no key is needed (the JavaScript client sends none) and a Bearer
header is ignored (the Python client sends one).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from fluxserve.api.links import Links, links_for
from fluxserve.api.problems import problem_responses
from fluxserve.api.render import render_prediction
from fluxserve.api.state import ApiState
from fluxserve.errors import NotFound
from fluxserve.lifecycle import Status
from fluxserve.service.follow import find_prediction, follow
from fluxserve.store.rows import PredictionRow

router = APIRouter(tags=["predictions"])

EVENT_STREAM = "text/event-stream; charset=utf-8"
STREAM_HEADERS = {
    "Cache-Control": "no-store",
    # Proxies such as nginx buffer responses by default, which would hold events back.
    "X-Accel-Buffering": "no",
}
PING = ": ping\n\n"
# Stages of a stream's end, the third part of an event id.
_RUNNING, _ERROR_SENT, _DONE_SENT = 0, 1, 2


@dataclass
class Cursor:
    """How much of a prediction a client has been sent: log characters, output items, end stage.

    Written as the event id ``LOGS:OUTPUTS:STAGE``; each part only grows, so ids are monotonic.
    """

    logs: int = 0
    outputs: int = 0
    stage: int = _RUNNING

    def __str__(self) -> str:
        return f"{self.logs}:{self.outputs}:{self.stage}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        """The cursor an event id names; a missing or foreign id starts from the beginning."""
        parts = (text or "").strip().split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            return cls()
        logs, outputs, stage = (int(p) for p in parts)
        return cls(logs, outputs, min(stage, _DONE_SENT))

    @classmethod
    def after(cls, row: PredictionRow) -> Cursor:
        """The cursor of a client that has everything ``row`` holds so far (but not its end)."""
        output = row.output
        outputs = len(output) if isinstance(output, list) else int(output is not None)
        return cls(len(row.logs or ""), outputs, _RUNNING)


def format_event(event: str, data: str, event_id: Cursor) -> str:
    """One SSE message; multi-line data becomes several ``data:`` lines (joined by ``\\n`` on arrival)."""
    text = data.replace("\r\n", "\n").replace("\r", "\n")
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"event: {event}\nid: {event_id}\n{lines}\n"


def _output_text(item: Any) -> str:
    return item if isinstance(item, str) else orjson.dumps(item).decode()


def events_for(row: PredictionRow, cursor: Cursor, links: Links) -> list[str]:
    """The messages that take a client from ``cursor`` to ``row``; advances ``cursor``.

    Logs come before outputs; a terminal row adds ``error`` (when failed) and ``done``. A row older
    than the cursor (a stale snapshot) yields nothing.
    """
    messages: list[str] = []
    if cursor.stage == _DONE_SENT:
        return messages
    logs = row.logs or ""
    if len(logs) > cursor.logs:
        chunk = logs[cursor.logs :]
        cursor.logs = len(logs)
        messages.append(format_event("logs", chunk, cursor))
    output = render_prediction(row, links).output if row.output is not None else None
    if isinstance(output, list):
        # A list output grows while the model runs: send each new item.
        for item in output[cursor.outputs :]:
            cursor.outputs += 1
            messages.append(format_event("output", _output_text(item), cursor))
    elif output is not None and cursor.outputs == 0:
        cursor.outputs = 1
        messages.append(format_event("output", _output_text(output), cursor))
    if not row.status.is_terminal:
        return messages
    if row.status == Status.FAILED and cursor.stage < _ERROR_SENT:
        cursor.stage = _ERROR_SENT
        detail = row.error or "The prediction failed."
        messages.append(format_event("error", orjson.dumps({"detail": detail}).decode(), cursor))
    cursor.stage = _DONE_SENT
    done: dict[str, str] = {}
    if row.status == Status.CANCELED:
        done["reason"] = "canceled"
    elif row.status == Status.FAILED:
        done["reason"] = "error"
    messages.append(format_event("done", orjson.dumps(done).decode(), cursor))
    return messages


async def event_stream(
    rows: AsyncGenerator[PredictionRow | None, None], cursor: Cursor, links: Links
) -> AsyncIterator[str]:
    """SSE text for each state ``rows`` yields (``None``: a keep-alive comment)."""
    async with contextlib.aclosing(rows):
        async for row in rows:
            if row is None:
                yield PING
                continue
            for message in events_for(row, cursor, links):
                yield message
            if cursor.stage == _DONE_SENT:
                return


@router.get(
    "/predictions/{prediction_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events: output, logs, error, done"},
        **problem_responses({404: "No such prediction", 422: "Invalid request"}),
    },
    summary="Stream a prediction's logs and outputs (server-sent events)",
)
async def stream_prediction(
    prediction_id: str,
    request: Request,
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event (sent by reconnecting clients)")
    ] = None,
    last_event_id: Annotated[
        str | None, Query(description="Resume after this event, for clients that cannot set the header")
    ] = None,
) -> StreamingResponse:
    """Follow a prediction until it ends. No key is needed: the id is the credential."""
    rt: ApiState = request.app.state.api
    if await find_prediction(rt.service, prediction_id) is None:
        raise NotFound(f"Prediction {prediction_id} not found.")
    links = links_for(request, rt.settings)
    cursor = Cursor.parse(last_event_id_header or last_event_id)
    return StreamingResponse(
        event_stream(follow(rt.service, prediction_id), cursor, links),
        media_type=EVENT_STREAM,
        headers=STREAM_HEADERS,
    )
