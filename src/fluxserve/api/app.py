"""``create_app(settings)``: composition only."""

from __future__ import annotations

import logging
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from fluxserve import __version__
from fluxserve.api import (
    deployments,
    directory,
    files,
    keys,
    models,
    openai_images,
    ops,
    outputs,
    pages,
    predictions,
    problems,
    stream,
    webhooks,
)
from fluxserve.api.auth import KeyCache
from fluxserve.api.hygiene import RequestHygiene
from fluxserve.api.ratelimit import RateLimiter
from fluxserve.api.state import StateOpener
from fluxserve.config import Settings
from fluxserve.hints import command
from fluxserve.metrics.middleware import HttpMetricsMiddleware
from fluxserve.wire import API_PREFIXES

log = logging.getLogger("fluxserve")


def create_app(settings: Settings, open_state: StateOpener) -> FastAPI:
    """The ASGI app: the Replicate API under ``/v1`` and ``/replicate/v1``. ``open_state`` opens what it serves
    from for the app's lifespan (the runtime passes one that also runs the worker, if enabled)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_state(settings) as state:
            app.state.api = state
            app.state.key_cache = KeyCache(state.store)
            app.state.rate_limiter = RateLimiter(
                settings.rate_limit_create, settings.rate_limit_other, settings.rate_limit_storage
            )
            if await state.store.count_keys() == 0:
                log.warning(
                    "No API keys yet. Create one with:  %s",
                    command(f"keys create --data-dir {shlex.quote(str(settings.data_dir))}"),
                )
            log.info(
                "fluxserve %s: models %s; database %s; worker %s",
                __version__,
                ", ".join(spec.ref for spec in state.registry),
                state.store.dialect,
                "in-process" if settings.worker else "off",
            )
            yield

    app = FastAPI(
        title="fluxserve",
        version=__version__,
        description="Self-hosted FLUX image predictions behind the Replicate HTTP API.",
        lifespan=lifespan,
        # pages.py serves /docs and /redoc with their assets from this server, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    for prefix in API_PREFIXES:
        routers = (predictions, models, directory, deployments, outputs, webhooks, files, keys)
        for router in (module.router for module in routers):
            app.include_router(router, prefix=prefix)
        app.include_router(stream.router, prefix=prefix)
    for prefix in openai_images.OPENAI_PREFIXES:
        app.include_router(openai_images.router, prefix=prefix)
    app.include_router(pages.router)
    app.include_router(ops.router)
    app.add_middleware(RequestHygiene, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(HttpMetricsMiddleware, prefixes=API_PREFIXES)
    app.state.templates = pages.templates()
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.mount(pages.DOCS_ASSETS_PATH, StaticFiles(directory=pages.DOCS_ASSETS_DIR), name="docs-assets")

    @app.get("/health", include_in_schema=False)
    async def health() -> Response:
        return Response('{"status":"ok"}', media_type="application/json")

    return app
