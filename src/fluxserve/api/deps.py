"""FastAPI dependencies shared by the routers (async: sync ones would each cost a thread-pool hop)."""

from __future__ import annotations

from fastapi import Request

from fluxserve.api.links import Links, links_for
from fluxserve.runtime import Runtime
from fluxserve.service import PredictionService


async def service(request: Request) -> PredictionService:
    """The prediction service."""
    rt: Runtime = request.app.state.runtime
    return rt.service


async def links(request: Request) -> Links:
    """URL builder for this request."""
    rt: Runtime = request.app.state.runtime
    return links_for(request, rt.settings)
