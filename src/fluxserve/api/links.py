"""Absolute URLs built from the scheme, host and prefix each request came in on."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from fluxserve.config import Settings


@dataclass(frozen=True)
class Links:
    """URL builder for one request. ``origin`` has no trailing slash; ``api`` ends in ``/v1``."""

    origin: str
    api: str

    def prediction(self, prediction_id: str) -> str:
        """``urls.get``."""
        return f"{self.api}/predictions/{prediction_id}"

    def prediction_urls(self, prediction_id: str) -> dict[str, str]:
        """The four ``urls`` of a prediction."""
        get = self.prediction(prediction_id)
        return {
            "get": get,
            "cancel": f"{get}/cancel",
            "stream": f"{get}/stream",
            "web": f"{self.origin}/p/{prediction_id}",
        }

    def output(self, key: str) -> str:
        """Where the output blob ``key`` is served."""
        return f"{self.api}/outputs/{key}"


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
