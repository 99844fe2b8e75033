"""The one FastAPI dependency of the authenticated routes.

Everything a handler needs (the caller's key, the service, the URL builder) comes from one
dependency: FastAPI's dependency solving costs about as much per dependency as a SQLite read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from fluxserve.api.auth import current_key
from fluxserve.api.links import Links, links_for
from fluxserve.api.ratelimit import RateLimiter
from fluxserve.api.state import ApiState
from fluxserve.service.predictions import PredictionService
from fluxserve.store.rows import KeyRow


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated API call: who calls, the service, and the links for this request."""

    key: KeyRow
    svc: PredictionService
    links: Links


async def call(request: Request) -> Call:
    """Authenticate the request (401 without a valid key) and bundle what handlers need."""
    key = await current_key(request)
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        path = request.url.path
        # OpenAI image calls create predictions too: they count against the create limit.
        creating = request.method == "POST" and (path.endswith("/predictions") or "/images/" in path)
        await limiter.check(key.id, creating=creating)
    rt: ApiState = request.app.state.api
    return Call(key, rt.service, links_for(request, rt.settings))


CallDep = Annotated[Call, Depends(call)]
