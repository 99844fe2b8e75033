"""Absolute URLs built from the scheme, host and prefix each request came in on."""

from __future__ import annotations

from fastapi import Request

from fluxserve.config import Settings
from fluxserve.wire import Links

__all__ = ["Links", "links_for"]


def _api_prefix(request: Request) -> str:
    # The first "/v1" segment of the path is the mount point ("/v1" or "/replicate/v1"): ids and
    # model names come after it.
    path = str(request.scope.get("root_path", "")) + str(request.scope["path"])
    head, sep, _ = path.partition("/v1/")
    if sep:
        return head + "/v1"
    return path[:-3] + "/v1" if path.endswith("/v1") else "/v1"


def links_for(request: Request, settings: Settings) -> Links:
    """The :class:`Links` for ``request``: honours ``public_url`` and, when trusted, X-Forwarded-*."""
    prefix = _api_prefix(request)
    if settings.public_url:
        origin = settings.public_url.rstrip("/")
    else:
        headers = request.headers
        scheme = request.url.scheme
        host = headers.get("host") or request.url.netloc
        external_prefix = ""
        if settings.trust_forwarded_headers:
            scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
            host = headers.get("x-forwarded-host", host).split(",")[0].strip()
            external_prefix = headers.get("x-forwarded-prefix", "").split(",")[0].strip().rstrip("/")
        origin = f"{scheme}://{host}{external_prefix}"
    return Links(origin=origin, api=origin + prefix)
