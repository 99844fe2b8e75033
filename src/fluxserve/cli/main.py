"""``fluxserve``: serve the API, manage keys."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from fluxserve.cli.predictions import predictions_app
from fluxserve.cli.pull import pull
from fluxserve.cli.run import run
from fluxserve.config import Settings

if TYPE_CHECKING:
    from fluxserve.store.rows import KeyRow
    from fluxserve.store.store import Store

T = TypeVar("T")

app = typer.Typer(help="fluxserve: self-hosted FLUX predictions behind the Replicate HTTP API.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.command("run")(run)
app.add_typer(predictions_app, name="predictions")
app.command("pull")(pull)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (env FLUXSERVE_DATA_DIR).", show_default=False),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Database URL (env FLUXSERVE_DATABASE_URL); default SQLite in the data dir."),
]


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the command-line options that were given on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _configure_logging(level: str, log_format: str = "text") -> None:
    if log_format == "json":
        from fluxserve.metrics import JsonLogFormatter

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

    settings = _settings(
        host=host,
        port=port,
        data_dir=data_dir,
        demo=True if demo else None,
        database_url=database_url,
        worker=False if no_worker else None,
    )
    _configure_logging(settings.log_level, settings.log_format)
    if settings.demo:
        logging.getLogger("fluxserve").warning(
            "Demo mode: models run tiny random pipelines; the images are noise, not FLUX output."
        )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # JSON logs: uvicorn's loggers propagate to the root handler instead of printing text.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
        server_header=False,
        # X-Forwarded-* is honoured by our URL builder only when trust_forwarded_headers is set.
        proxy_headers=False,
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
) -> None:
    """Run a worker process: claim predictions of its models from the database and run them.

    Point every worker and API replica at the same PostgreSQL URL and the same blob storage.
    """
    settings = _settings(data_dir=data_dir, demo=True if demo else None, database_url=database_url)
    _configure_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        from fluxserve.runtime import Runtime

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runtime = await Runtime.open(settings, with_worker=True, worker_models=model or None)
        assert runtime.worker is not None
        logging.getLogger("fluxserve").info(
            "worker %s serving %s (database %s)",
            runtime.worker.worker_id,
            ", ".join(runtime.worker.models),
            runtime.store.dialect,
        )
        try:
            await stop.wait()
        finally:
            await runtime.close()

    try:
        asyncio.run(run())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


async def _with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store (migrating it if needed), run ``fn``, close it."""
    from fluxserve.store.store import Store

    store = Store.connect(settings.resolved_database_url())
    try:
        await store.migrate()
        return await fn(store)
    finally:
        await store.close()


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "default",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key and print it (alone, on the last line). It is shown only this once."""
    row, token = asyncio.run(_with_store(_settings(data_dir=data_dir, database_url=database_url), _create_key(name)))
    typer.echo(f"Created API key {row.id} ({row.name}). It is shown only once; store it now:")
    typer.echo(token)


def _create_key(name: str) -> Callable[[Store], Awaitable[tuple[KeyRow, str]]]:
    async def create(store: Store) -> tuple[KeyRow, str]:
        return await store.create_key(name)

    return create


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List API keys (ids and names; the keys themselves are not stored)."""

    async def fetch(store: Store) -> list[KeyRow]:
        return await store.list_keys()

    for key in asyncio.run(_with_store(_settings(data_dir=data_dir, database_url=database_url), fetch)):
        state = "revoked" if key.revoked_at else "active"
        typer.echo(f"{key.id}  {key.name}  created {key.created_at:%Y-%m-%d %H:%M}Z  {state}")


def main() -> None:
    """Entry point of the ``fluxserve`` script."""
    app()
