"""``fluxserve``: serve the API, manage keys."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from fluxserve.cli.models import models_app
from fluxserve.cli.options import DatabaseUrl, DataDir, settings_with, with_store
from fluxserve.cli.predictions import predictions_app
from fluxserve.cli.pull import pull
from fluxserve.cli.run import run
from fluxserve.hints import command

if TYPE_CHECKING:
    from fluxserve.config import Settings
    from fluxserve.runtime import Runtime
    from fluxserve.store.rows import KeyRow, UsageRow
    from fluxserve.store.store import Store

T = TypeVar("T")

app = typer.Typer(help="fluxserve: self-hosted FLUX predictions behind the Replicate HTTP API.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.command("run")(run)
app.add_typer(predictions_app, name="predictions")
app.command("pull")(pull)
app.add_typer(models_app, name="models")

_settings = settings_with
_with_store = with_store


def _require_model_stack(settings: Settings, models: list[str] | None = None) -> None:
    """Exit 2 with what to install when the worker this process would run needs the model stack and lacks it."""
    from fluxserve.gateway.served import build_registry
    from fluxserve.modelstack import model_stack_problem

    registry = build_registry(settings)
    unknown = [m for m in models or [] if registry.get(m) is None]
    if unknown:
        known = ", ".join(spec.ref for spec in registry)
        typer.echo(f"error: unknown model(s) {', '.join(unknown)} for the worker; this build serves {known}", err=True)
        raise typer.Exit(2)
    specs = [spec for spec in registry if models is None or spec.ref in models]
    problem = model_stack_problem(specs)
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)


def _configure_logging(level: str, log_format: str = "text") -> None:
    if level.lower() != "debug":
        # httpx logs every request at INFO; a worker following forwarded predictions polls, which would flood logs.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if log_format == "json":
        from fluxserve.logs import JsonLogFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonLogFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler])
        return
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1].", show_default=False)] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 5000].", show_default=False)] = None,
    data_dir: DataDir = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Serve tiny random FLUX pipelines built locally: images are noise.")
    ] = False,
    database_url: DatabaseUrl = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="API only; workers run elsewhere.")] = False,
) -> None:
    """Run the API and the in-process worker."""
    import uvicorn

    from fluxserve.api.app import create_app
    from fluxserve.api.connections import guarded_protocol
    from fluxserve.runtime import open_api_state

    settings = _settings(
        host=host,
        port=port,
        data_dir=data_dir,
        demo=True if demo else None,
        database_url=database_url,
        worker=False if no_worker else None,
    )
    _configure_logging(settings.log_level, settings.log_format)
    if settings.worker:
        _require_model_stack(settings, settings.worker_models)
    if settings.demo:
        logging.getLogger("fluxserve").warning(
            "Demo mode: models run tiny random pipelines; the images are noise, not FLUX output. For real images, "
            "download the weights (%s) and start without --demo.",
            command("pull black-forest-labs/flux-schnell"),
        )
    config = uvicorn.Config(
        create_app(settings, open_api_state),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # JSON logs: uvicorn's loggers propagate to the root handler instead of printing text.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
        server_header=False,
        # X-Forwarded-* is honoured by our URL builder only when trust_forwarded_headers is set.
        proxy_headers=False,
        # Slow or silent connections are closed (uvicorn alone would hold them forever); beyond max_connections
        # a request gets a fast 503 instead of a slot.
        http=guarded_protocol(settings.header_timeout_seconds, settings.body_idle_timeout_seconds),
        timeout_keep_alive=int(settings.keep_alive_seconds),
        limit_concurrency=settings.max_connections,
    )
    uvicorn.Server(config).run()


@app.command()
def worker(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", help="A model to serve (repeat for several); default: every model.", show_default=False
        ),
    ] = None,
    data_dir: DataDir = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Serve tiny random FLUX pipelines built locally: images are noise.")
    ] = False,
    database_url: DatabaseUrl = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve /metrics and /health on this port (env FLUXSERVE_WORKER_METRICS_PORT); default: none.",
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            "--metrics-host",
            help="Address for --metrics-port (env FLUXSERVE_WORKER_METRICS_HOST); default 127.0.0.1.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a worker process: claim predictions of its models from the database and run them.

    Point every worker and API replica at the same PostgreSQL URL and the same blob storage.
    """
    settings = _settings(
        data_dir=data_dir,
        demo=True if demo else None,
        database_url=database_url,
        worker_metrics_port=metrics_port,
        worker_metrics_host=metrics_host,
    )
    _configure_logging(settings.log_level, settings.log_format)
    models = model or settings.worker_models
    _require_model_stack(settings, models)

    async def run() -> None:
        from fluxserve.runtime import Runtime

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runtime = await Runtime.open(settings, with_worker=True, worker_models=models, exit_if_nothing_loads=True)
        assert runtime.worker is not None
        listener = None
        if settings.worker_metrics_port is not None:
            from fluxserve.metrics.listener import MetricsListener

            listener = MetricsListener(
                runtime.metrics,
                lambda: _worker_health(runtime),
                host=settings.worker_metrics_host,
                port=settings.worker_metrics_port,
            )
            try:
                await listener.start()
            except OSError as exc:
                await runtime.close()
                raise ValueError(f"cannot serve metrics on {settings.worker_metrics_host}: {exc}") from exc
            logging.getLogger("fluxserve").info("worker metrics on %s", listener.url)
        logging.getLogger("fluxserve").info(
            "worker %s serving %s (database %s)",
            runtime.worker.worker_id,
            ", ".join(runtime.worker.models),
            runtime.store.dialect,
        )
        stopped = asyncio.create_task(stop.wait())
        ended = asyncio.create_task(runtime.worker_ended())
        try:
            await asyncio.wait({stopped, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if listener is not None:
                await listener.close()
            await runtime.close()
        if ended.done() and ended.result() is not None:
            # Nothing could be loaded (or the loop broke): exit non-zero with the reason, not a crash loop of traces.
            raise ValueError(f"the worker stopped: {ended.result()}")

    try:
        asyncio.run(run())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _worker_health(runtime: Runtime) -> tuple[bool, dict[str, Any]]:
    """Liveness of a worker process (no database query: a probe must not fail when the database blinks)."""
    assert runtime.worker is not None
    alive = bool(runtime.worker_alive)
    worker = runtime.worker
    return alive, {"status": "ok" if alive else "worker stopped", "worker": worker.worker_id, "busy": worker.busy}


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "default",
    admin: Annotated[bool, typer.Option("--admin", help="The key may also load and unload models.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key and print it (alone, on the last line). It is shown only this once."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    row, token = asyncio.run(_with_store(settings, _create_key(name, admin)))
    kind = "admin key" if admin else "API key"
    typer.echo(f"Created {kind} {row.id} ({row.name}). It is shown only once; store it now:")
    typer.echo(token)


def _create_key(name: str, admin: bool) -> Callable[[Store], Awaitable[tuple[KeyRow, str]]]:
    async def create(store: Store) -> tuple[KeyRow, str]:
        return await store.create_key(name, admin=admin)

    return create


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id, or a name (every live key with that name).")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: every API replica refuses it within seconds (their key caches last 5 s)."""

    async def revoke(store: Store) -> list[KeyRow]:
        return await store.revoke_keys(key)

    revoked = asyncio.run(_with_store(_settings(data_dir=data_dir, database_url=database_url), revoke))
    if not revoked:
        typer.echo(f"No live key has the id or name {key!r} ({command('keys list')} shows them).", err=True)
        raise typer.Exit(1)
    for row in revoked:
        typer.echo(f"Revoked key {row.id} ({row.name}).")


def _timestamp(value: str | None) -> datetime | None:
    """An ISO-8601 option (UTC when it has no offset)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"expected an ISO-8601 timestamp such as 2026-01-31T12:00:00Z, got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@keys_app.command("list")
def keys_list(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    created_after: Annotated[
        str | None,
        typer.Option(
            "--created-after", help="ISO-8601: count usage of predictions created after this.", show_default=False
        ),
    ] = None,
    created_before: Annotated[
        str | None,
        typer.Option(
            "--created-before", help="ISO-8601: count usage of predictions created before this.", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
) -> None:
    """List API keys (ids and names; the keys themselves are not stored) with their usage.

    Usage is what each key's predictions (created in the window; default all time) ran: how many,
    by status, output images and predict seconds, as GET /v1/account reports it to the key.
    """
    from fluxserve.store.rows import UsageRow

    after, before = _timestamp(created_after), _timestamp(created_before)

    async def fetch(store: Store) -> tuple[list[KeyRow], dict[str, UsageRow]]:
        return await store.list_keys(), await store.usage(created_after=after, created_before=before)

    keys, usage = asyncio.run(_with_store(_settings(data_dir=data_dir, database_url=database_url), fetch))
    rows = [(key, usage.get(key.id, UsageRow())) for key in keys]
    if as_json:
        import orjson

        typer.echo(orjson.dumps([_key_json(key, used) for key, used in rows], option=orjson.OPT_INDENT_2).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "CREATED", "STATE"):
        table.add_column(column, no_wrap=True)
    for column in ("PREDICTIONS", "SUCCEEDED", "FAILED", "CANCELED", "IMAGES", "PREDICT_TIME"):
        table.add_column(column, justify="right", no_wrap=True)
    for key, used in rows:
        table.add_row(
            key.id,
            key.name,
            f"{key.created_at:%Y-%m-%d %H:%M}Z",
            "revoked" if key.revoked_at else "active",
            str(used.predictions),
            str(used.succeeded),
            str(used.failed),
            str(used.canceled),
            str(used.image_count),
            f"{used.predict_time:.3f}",
        )
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped: no terminal width to respect, so keep every cell whole.
        console = Console(highlight=False, width=240)
    console.print(table)


def _key_json(key: KeyRow, used: UsageRow) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "created_at": key.created_at.isoformat(),
        "revoked": key.revoked_at is not None,
        "usage": {
            "predictions": used.predictions,
            "succeeded": used.succeeded,
            "failed": used.failed,
            "canceled": used.canceled,
            "in_progress": used.in_progress,
            "image_count": used.image_count,
            "predict_time": round(used.predict_time, 6),
        },
    }


def main() -> None:
    """Entry point of the ``fluxserve`` script."""
    app()
