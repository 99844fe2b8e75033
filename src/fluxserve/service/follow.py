"""Following one prediction as it changes: the shared core of the SSE stream and the web page.

Both are capability URLs: the prediction id (128 random bits) is the credential, so a prediction is
looked up by id alone, whoever owns it. Following is event-driven through the event hub; a
periodic re-read is only a safety net for a lost notification (across processes the hub becomes
LISTEN/NOTIFY, whose notifications carry no row and can be missed while a connection is re-made).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from fluxserve.events.hub import PREDICTION
from fluxserve.service.predictions import PredictionService
from fluxserve.store.rows import PredictionRow

#: A keep-alive is due this often; the official Python client reads with a 30 s timeout.
KEEPALIVE_SECONDS = 10.0
#: Re-read the row this often even without a notification.
REREAD_SECONDS = 5.0


async def find_prediction(svc: PredictionService, prediction_id: str) -> PredictionRow | None:
    """The prediction ``prediction_id`` of any key, or None (for capability URLs only)."""
    return await svc.find(prediction_id)


async def follow(
    svc: PredictionService,
    prediction_id: str,
    *,
    keepalive: float = KEEPALIVE_SECONDS,
    reread: float = REREAD_SECONDS,
) -> AsyncGenerator[PredictionRow | None, None]:
    """Yield the prediction now and after every change, until it is terminal.

    ``None`` is yielded every ``keepalive`` seconds (whatever else happens), so a consumer can keep
    an idle connection open. A row may repeat an earlier state: consumers keep their own cursor.
    The generator ends after the first terminal row, or when the prediction does not exist.
    """
    loop = asyncio.get_running_loop()
    # Subscribe before the first read, so no change can fall between the read and the wait.
    with svc.hub.subscribe(PREDICTION, prediction_id) as changes:
        row = await find_prediction(svc, prediction_id)
        next_ping = loop.time() + keepalive
        next_read = loop.time() + reread
        while row is not None:
            yield row
            if row.status.is_terminal:
                return
            fresh: PredictionRow | None = None
            read = False
            while not read:
                now = loop.time()
                if now >= next_ping:
                    next_ping = now + keepalive
                    yield None
                if changes.event.is_set():
                    payload = changes.take()
                    # In-process publishers may attach the new row; otherwise (and across processes) re-read.
                    fresh = payload if isinstance(payload, PredictionRow) else await find_prediction(svc, prediction_id)
                    read = True
                elif now >= next_read:
                    fresh = await find_prediction(svc, prediction_id)
                    read = True
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changes.event.wait(), min(next_ping, next_read) - now)
            next_read = loop.time() + reread
            row = fresh
