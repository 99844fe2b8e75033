"""Web pages: the playground (``/``), one prediction's page (``/p/{id}``) and the API docs (``/docs``, ``/redoc``).

The prediction page is a capability URL, like the stream it follows: anyone with the link can watch
the prediction, and the page shows nothing beyond the prediction itself (not its key, not its
webhook). Changing anything (cancel, create) goes through the API with a key the user pastes into
the page, which keeps it in the browser's localStorage.

The API docs are FastAPI's Swagger UI and ReDoc pages with their scripts and styles served from this
server (``/docs/assets``, from the ``fastapi-offline`` package), not from a CDN: they work offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import DBAPIError

from fluxserve.api.links import Links, links_for
from fluxserve.api.render import render_prediction
from fluxserve.api.state import ApiState
from fluxserve.api.stream import Cursor
from fluxserve.catalog.registry import PipelineFactory
from fluxserve.errors import NotFound
from fluxserve.hints import command
from fluxserve.progress import Progress, parse_progress
from fluxserve.schema import format_timestamp
from fluxserve.service.follow import find_prediction
from fluxserve.store.rows import PredictionRow

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
#: Swagger UI's and ReDoc's scripts and styles (and a favicon), as the fastapi-offline package ships them.
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
#: Where :data:`DOCS_ASSETS_DIR` is mounted (not under ``/static``, whose mount would shadow it).
DOCS_ASSETS_PATH = "/docs/assets"

router = APIRouter(include_in_schema=False)

_IMAGE_SUFFIXES = (".webp", ".png", ".jpg", ".jpeg", ".gif")
# Long input values (data URIs) are cut to this many characters on the page.
_INPUT_PREVIEW_CHARS = 200


def templates() -> Jinja2Templates:
    """The page templates (HTML-escaped by default)."""
    return Jinja2Templates(directory=TEMPLATES_DIR)


def _security_headers(links: Links) -> dict[str, str]:
    return {
        # The page's URL is its credential: never send it on as a Referer (images, links).
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Robots-Tag": "noindex, nofollow",
        # Scripts and styles only from this server (so no injected markup can run); images from anywhere,
        # as output files may live in S3-compatible storage on another host.
        "Content-Security-Policy": (
            f"default-src 'self' {links.origin}; img-src * data: blob:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
        ),
    }


def is_image_url(value: Any) -> bool:
    """Whether an output or input value is an image the page can show."""
    if not isinstance(value, str):
        return False
    if value.startswith("data:image/"):
        return True
    return value.startswith(("http://", "https://")) and value.split("?", 1)[0].lower().endswith(_IMAGE_SUFFIXES)


@dataclass
class InputItem:
    """One input as the page shows it."""

    name: str
    text: str
    image: str | None = None


@dataclass
class PredictionView:
    """What the prediction templates render (already mapped to URLs, already cut to size)."""

    id: str
    model: str
    status: str
    terminal: bool
    prompt: str | None
    inputs: list[InputItem]
    logs: str
    images: list[str]
    texts: list[str]
    error: str | None
    progress: Progress | None
    created_at: tuple[str, str]
    started_at: tuple[str, str] | None
    completed_at: tuple[str, str] | None
    metrics: list[tuple[str, str]] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    #: Whether the model runs tiny random demo weights here (``--demo``): its images are noise.
    demo: bool = False
    #: The command that downloads the model's real weights, when ``fluxserve pull`` knows them.
    demo_pull: str | None = None


def _input_items(values: dict[str, Any] | None) -> list[InputItem]:
    items = []
    for name, value in (values or {}).items():
        if name == "prompt" or value is None:
            continue
        text = value if isinstance(value, str) else repr(value).lower() if isinstance(value, bool) else str(value)
        image = value if isinstance(value, str) and value.startswith("data:image/") else None
        if len(text) > _INPUT_PREVIEW_CHARS:
            text = text[:_INPUT_PREVIEW_CHARS] + f"… ({len(text):,} characters)"
        items.append(InputItem(name, text, image))
    return items


def _metrics(metrics: dict[str, Any] | None) -> list[tuple[str, str]]:
    shown: list[tuple[str, str]] = []
    for key, label in (("predict_time", "Predict time"), ("total_time", "Total time"), ("image_count", "Images")):
        value = (metrics or {}).get(key)
        if isinstance(value, float):
            shown.append((label, f"{value:.2f} s"))
        elif value is not None:
            shown.append((label, str(value)))
    return shown


def _time(value: datetime) -> tuple[str, str]:
    """(machine-readable, human-readable) forms of a timestamp."""
    utc = value.astimezone(UTC) if value.tzinfo else value
    return format_timestamp(value), utc.strftime("%Y-%m-%d %H:%M:%S UTC")


def prediction_view(row: PredictionRow, links: Links) -> PredictionView:
    """The view of ``row`` with URLs for the request's host."""
    output = render_prediction(row, links).output
    items = output if isinstance(output, list) else [] if output is None else [output]
    prompt = (row.input or {}).get("prompt")
    api_urls = links.prediction_urls(row.id)
    # The page resumes the stream where its own rendering ends, so nothing arrives twice.
    stream = f"{api_urls['stream']}?last_event_id={Cursor.after(row)}"
    return PredictionView(
        id=row.id,
        model=row.model,
        status=row.status.value,
        terminal=row.status.is_terminal,
        prompt=prompt if isinstance(prompt, str) else None,
        inputs=_input_items(row.input),
        logs=row.logs or "",
        images=[i for i in items if is_image_url(i)],
        texts=[i if isinstance(i, str) else repr(i) for i in items if not is_image_url(i)],
        error=row.error,
        progress=parse_progress(row.logs),
        created_at=_time(row.created_at),
        started_at=_time(row.started_at) if row.started_at else None,
        completed_at=_time(row.completed_at) if row.completed_at else None,
        metrics=_metrics(row.metrics),
        urls={
            "web": api_urls["web"],
            "cancel": api_urls["cancel"],
            "stream": stream,
            "fragment": f"{api_urls['web']}/fragment",
        },
    )


def demo_weights(rt: ApiState, model: str) -> PipelineFactory | None:
    """The pipeline of ``model`` if it runs the tiny random weights of ``--demo`` here (its images are noise)."""
    spec = rt.registry.get(model)
    if not rt.settings.demo or spec is None or not isinstance(spec.predictor_factory, PipelineFactory):
        return None
    return spec.predictor_factory


def _pull_command(model: str, pipeline: PipelineFactory) -> str | None:
    """``fluxserve pull …`` for the weights ``model`` runs without ``--demo``; None when pull does not know them
    (weights a models file names)."""
    if pipeline.weights_override is not None or not model.startswith("black-forest-labs/"):
        return None
    # The LoRA models run their base model's weights (flux-dev-lora: flux-dev's), which is what pull knows.
    return command(f"pull {model.removesuffix('-lora')}")


async def _view(request: Request, prediction_id: str) -> tuple[PredictionView, Links]:
    rt: ApiState = request.app.state.api
    row = await find_prediction(rt.service, prediction_id)
    if row is None:
        raise NotFound(f"Prediction {prediction_id} not found.")
    links = links_for(request, rt.settings)
    view = prediction_view(row, links)
    pipeline = demo_weights(rt, row.model)
    if pipeline is not None:
        view.demo, view.demo_pull = True, _pull_command(row.model, pipeline)
    return view, links


def _render(request: Request, name: str, links: Links, context: dict[str, Any]) -> Response:
    tpl: Jinja2Templates = request.app.state.templates
    response = tpl.TemplateResponse(request, name, {"links": links, **context})
    response.headers.update(_security_headers(links))
    return response


@router.get("/p/{prediction_id}", response_class=HTMLResponse)
async def prediction_page(prediction_id: str, request: Request) -> Response:
    """A prediction's page: inputs, status, progress, logs, images and metrics, kept live by its stream."""
    view, links = await _view(request, prediction_id)
    return _render(request, "prediction.html", links, {"p": view})


@router.get("/p/{prediction_id}/fragment", response_class=HTMLResponse)
async def prediction_fragment(prediction_id: str, request: Request) -> Response:
    """The prediction view alone, for the playground to embed (and the page to refresh when it ends)."""
    view, links = await _view(request, prediction_id)
    return _render(request, "_prediction.html", links, {"p": view})


@router.get("/", response_class=HTMLResponse)
async def playground(request: Request) -> Response:
    """The playground: pick a model, fill in its form, run it, watch it; the key's recent predictions."""
    rt: ApiState = request.app.state.api
    try:
        # What the empty gallery says: a server without any key yet needs one created before anything works.
        has_keys = await rt.store.count_keys() > 0
    except DBAPIError:
        has_keys = True  # the database does not answer: the page still renders, as for a server with keys
    context = {"has_keys": has_keys, "keys_create": command("keys create --name me")}
    return _render(request, "playground.html", links_for(request, rt.settings), context)


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> Response:
    """FastAPI's Swagger UI, its assets served from this server."""
    rt: ApiState = request.app.state.api
    origin = links_for(request, rt.settings).origin
    return get_swagger_ui_html(
        openapi_url=f"{origin}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{origin}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{origin}{DOCS_ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{origin}{DOCS_ASSETS_PATH}/favicon.png",
    )


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> Response:
    """FastAPI's ReDoc page, its script served from this server (and no web fonts)."""
    rt: ApiState = request.app.state.api
    origin = links_for(request, rt.settings).origin
    return get_redoc_html(
        openapi_url=f"{origin}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{origin}{DOCS_ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{origin}{DOCS_ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )
