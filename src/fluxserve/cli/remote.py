"""What the commands that talk to a server share: the ``--base-url``/``--token`` options and error reporting.

The same commands drive fluxserve, Replicate (``https://api.replicate.com/v1``) and CometAPI
(``https://api.cometapi.com/replicate/v1``): only the base URL and the token change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from fluxserve.client import DEFAULT_BASE_URL, Client, ClientError
from fluxserve.hints import command

BaseUrl = Annotated[
    str,
    typer.Option(
        "--base-url",
        envvar="FLUXSERVE_BASE_URL",
        help="API base URL, ending in /v1 or /replicate/v1 (a bare host gets /v1).",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar=["FLUXSERVE_API_TOKEN", "REPLICATE_API_TOKEN"],
        help="API key.",
        show_default=False,
    ),
]


def err_console() -> Console:
    """Where progress, notes and errors go (stdout stays for results)."""
    # No hard wrapping: error details and URLs stay whole when piped or logged.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def open_client(base_url: str, token: str | None) -> Client:
    """A client for ``base_url``; exits with a hint when there is no token."""
    if not token:
        err_console().print(
            "[red]No API key.[/] Pass --token, or set FLUXSERVE_API_TOKEN (or REPLICATE_API_TOKEN). "
            f"Create a key with: {escape(command('keys create'))}"
        )
        raise typer.Exit(2)
    try:
        return Client(base_url or DEFAULT_BASE_URL, token)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--base-url'") from exc


@contextmanager
def api_errors(client: Client) -> Iterator[None]:
    """Turn API and connection errors into one readable line on stderr and exit status 1."""
    try:
        yield
    except ClientError as exc:
        console = err_console()
        detail = exc.detail.strip()
        if detail.startswith("- "):
            # A 422 lists every refused field on its own line.
            console.print(f"[red]Error[/] ({exc.status}): {escape(exc.title)}")
            console.print(detail, markup=False)
        else:
            console.print(f"[red]Error[/] ({exc.status or 'client'}): {escape(str(exc))}")
        raise typer.Exit(1) from exc
    except httpx.HTTPError as exc:
        err_console().print(
            f"[red]Could not reach {escape(client.base_url)}[/]: {escape(str(exc) or type(exc).__name__)}"
        )
        raise typer.Exit(1) from exc
