"""What the operator commands share: the data-dir and database options, settings, and a store to work on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from fluxserve.config import Settings

if TYPE_CHECKING:
    from fluxserve.store.store import Store

T = TypeVar("T")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (env FLUXSERVE_DATA_DIR).", show_default=False),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Database URL (env FLUXSERVE_DATABASE_URL); default SQLite in the data dir."),
]


def settings_with(**overrides: Any) -> Settings:
    """Settings from the environment, with the command-line options that were given on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


async def with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store (migrating it if needed), run ``fn``, close it."""
    from fluxserve.events.webhooks import terminal_delivery
    from fluxserve.store.store import Store

    store = Store.connect(settings.resolved_database_url(), on_terminal=terminal_delivery(settings.default_api_base()))
    try:
        await store.migrate()
        return await fn(store)
    finally:
        await store.close()
