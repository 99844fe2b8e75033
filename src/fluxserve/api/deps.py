"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from fastapi import Request

from fluxserve.api.links import Links, links_for
from fluxserve.runtime import Runtime
from fluxserve.service import PredictionService


def runtime(request: Request) -> Runtime:
    """The process's :class:`Runtime`."""
    rt: Runtime = request.app.state.runtime
    return rt


def service(request: Request) -> PredictionService:
    """The prediction service."""
    return runtime(request).service


def links(request: Request) -> Links:
    """URL builder for this request."""
    return links_for(request, runtime(request).settings)
