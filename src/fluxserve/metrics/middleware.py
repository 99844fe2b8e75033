"""The ASGI middleware that times every HTTP request by route template."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fluxserve.metrics.prometheus import UNMATCHED_ROUTE, Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HttpMetricsMiddleware:
    """Pure ASGI middleware timing each HTTP request, labelled by its route template (never the raw path).

    The metrics come from ``app.state.api`` once the lifespan has set it; until then requests are not timed.
    """

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.prefixes = prefixes

    def route_template(self, scope: Scope) -> str:
        """The matched route's path template, with the router prefix (``prefixes``) it was included under."""
        route = scope.get("route")
        template = getattr(route, "path", None)
        if not template:
            return UNMATCHED_ROUTE
        regex = getattr(route, "path_regex", None)
        path = scope.get("path", "")
        if regex is None or regex.match(path):
            return str(template)
        # Included routers may keep their routes unprefixed (FastAPI ≥ 0.16x): find the prefix that fits.
        for prefix in self.prefixes:
            if path.startswith(prefix) and regex.match(path[len(prefix) :]):
                return prefix + str(template)
        return str(template)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = getattr(scope["app"].state, "api", None) if "app" in scope else None
        metrics: Metrics | None = getattr(api, "metrics", None)
        if metrics is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.observe_http(scope["method"], self.route_template(scope), status, time.perf_counter() - start)
