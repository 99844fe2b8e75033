"""Operations endpoints, outside the API prefixes and unauthenticated: ``/ready`` and ``/metrics``.

``/health`` (liveness) stays in :mod:`fluxserve.api.app`: it answers without touching anything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from fluxserve.api.state import ApiState
from fluxserve.metrics.prometheus import CONTENT_TYPE
from fluxserve.modelstate import Availability

router = APIRouter(include_in_schema=False)
log = logging.getLogger("fluxserve.api")

#: Seconds the database may take to answer a readiness probe or a scrape's queue-depth query.
DATABASE_TIMEOUT = 2.0


async def readiness(state: ApiState) -> tuple[bool, dict[str, Any]]:
    """Whether this process can serve: the database answers and, if it runs a worker, the worker runs and
    its models have loaded."""
    problems: list[str] = []
    body: dict[str, Any] = {"status": "ready", "database": "ok"}
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            await state.store.ping()
            live = {spec.ref: await state.service.availability(spec.ref) for spec in state.registry}
    except Exception as exc:
        detail = "timed out" if isinstance(exc, TimeoutError) else (str(exc).splitlines() or [type(exc).__name__])[0]
        body["database"] = f"unreachable: {detail}"
        problems.append(f"the database is unreachable ({detail})")
        live = None
    worker = state.local_worker()
    if worker is None:
        body["worker"] = {"enabled": False}
    else:
        body["worker"] = {"enabled": True, "alive": worker.alive, "id": worker.id, "busy": worker.busy}
        if not worker.alive:
            problems.append("the worker of this process has stopped")
    body["models"] = [_model_readiness(spec.ref, None if live is None else live[spec.ref]) for spec in state.registry]
    if worker is not None:
        # This process's own worker is ready once its models have loaded (like a model server's readiness);
        # a model that failed is reported above, and makes the process unready only if nothing loaded.
        states = worker.model_states
        problems += [f"model {ref} is loading on this worker" for ref, s in states.items() if s["state"] == "loading"]
        failed = {ref: s["error"] for ref, s in states.items() if s["state"] == "failed"}
        if failed and len(failed) == len(states):
            problems += [f"model {ref} failed to load on this worker: {error}" for ref, error in failed.items()]
    if problems:
        body["status"] = "not ready"
        body["problems"] = problems
    return not problems, body


def _model_readiness(ref: str, available: Availability | None) -> dict[str, Any]:
    if available is None:
        return {"model": ref, "live_workers": None}
    entry: dict[str, Any] = {
        "model": ref,
        "live_workers": available.live_workers,
        "served": available.serving,
        "state": available.state,
        "workers": available.workers,
    }
    if available.error:
        entry["error"] = available.error
    return entry


@router.get("/ready")
async def ready(request: Request) -> Response:
    """Readiness for load balancers: 200 when ready, else 503 problem+json saying what is not."""
    ok, body = await readiness(request.app.state.api)
    headers = {"Cache-Control": "no-store"}
    if ok:
        return Response(orjson.dumps(body), media_type="application/json", headers=headers)
    # problem+json's ``status`` is the HTTP status; the checks follow as extension members.
    del body["status"]
    detail = "; ".join(body.pop("problems"))
    # Only the first letter: str.capitalize() would lower-case the model names that follow.
    problem = {"title": "Not ready", "detail": detail[:1].upper() + detail[1:] + ".", "status": 503}
    return Response(
        orjson.dumps(problem | body), status_code=503, media_type="application/problem+json", headers=headers
    )


async def _queue_depths(state: ApiState) -> dict[str, int]:
    return {spec.ref: await state.store.queued_count(spec.ref) for spec in state.registry}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """This process's metrics in the Prometheus text format (queue depth read from the database now)."""
    state: ApiState = request.app.state.api
    depths: dict[str, int] | None
    try:
        depths = await asyncio.wait_for(_queue_depths(state), DATABASE_TIMEOUT)
    except Exception as exc:
        log.warning("metrics: could not read the queue depth: %s", exc)
        depths = None
    return Response(state.metrics.render(depths), media_type=CONTENT_TYPE)
