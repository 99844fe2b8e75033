"""``fluxserve models``: see each model's state on the workers, and load or unload it (operators)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from fluxserve.cli.options import DatabaseUrl, DataDir, settings_with, with_store
from fluxserve.hints import command

if TYPE_CHECKING:
    from fluxserve.store.rows import WorkerRow
    from fluxserve.store.store import Store

models_app = typer.Typer(help="See and manage the models on the workers.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The model, owner/name (e.g. black-forest-labs/flux-dev).")]


@models_app.command("list")
def models_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Every model on every live worker: its state, how long, its last load time and any error."""
    settings = settings_with(data_dir=data_dir, database_url=database_url)

    async def fetch(store: Store) -> list[WorkerRow]:
        from fluxserve.schema import utcnow

        return await store.workers.live(utcnow() - timedelta(seconds=settings.lease_seconds))

    workers = asyncio.run(with_store(settings, fetch))
    if not workers:
        typer.echo("No live worker.")
        return
    for worker in workers:
        typer.echo(f"worker {worker.id} (host {worker.hostname})")
        for model in worker.models:
            state = worker.model_states.get(model, {})
            load = f", loaded in {state['load_seconds']:.1f} s" if state.get("load_seconds") else ""
            error = f": {state['error']}" if state.get("error") else ""
            typer.echo(f"  {model}: {state.get('state', 'unknown')}{load}{error}")


def _request(action: str, model: str, data_dir: DataDir, database_url: DatabaseUrl) -> None:
    settings = settings_with(data_dir=data_dir, database_url=database_url)

    async def send(store: Store) -> list[str]:
        from fluxserve.schema import utcnow

        return await store.workers.request(model, action, utcnow() - timedelta(seconds=settings.lease_seconds))

    workers = asyncio.run(with_store(settings, send))
    if not workers:
        typer.echo(f"error: no live worker serves {model}", err=True)
        raise typer.Exit(1)
    # Workers read requests at their next heartbeat (a third of a lease at most).
    typer.echo(f"Asked {len(workers)} worker(s) to {action} {model}: {', '.join(workers)}")
    typer.echo(f"Follow it with: {command('models list')}")


@models_app.command("load")
def models_load(model: Name, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Load a model on every live worker serving it (also retries a failed load)."""
    _request("load", model, data_dir, database_url)


@models_app.command("unload")
def models_unload(model: Name, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Free a model's memory on every live worker serving it; it loads again at its next prediction."""
    _request("unload", model, data_dir, database_url)
