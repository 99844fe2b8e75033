"""``fluxserve predictions list|get|cancel|open``: the key's predictions on any Replicate-format server."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import orjson
import typer

from fluxserve.cli.remote import BaseUrl, Token, api_errors, err_console, open_client
from fluxserve.client import DEFAULT_BASE_URL
from fluxserve.schema import Prediction

predictions_app = typer.Typer(help="List, show, cancel and open predictions.", no_args_is_help=True)

PredictionId = Annotated[str, typer.Argument(help="The prediction id.", show_default=False)]


def _prompt(prediction: Prediction) -> str:
    prompt = (prediction.input or {}).get("prompt")
    text = prompt if isinstance(prompt, str) else ""
    return text if len(text) <= 48 else text[:47] + "…"


@predictions_app.command("list")
def list_predictions(
    base_url: BaseUrl = DEFAULT_BASE_URL,
    token: Token = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
) -> None:
    """The key's newest predictions."""
    client = open_client(base_url, token)
    with client, api_errors(client):
        page = client.list()
        results = list(page.results)
        while len(results) < limit and page.next:
            page = client.list(page.next)
            results.extend(page.results)
    results = results[:limit]
    if as_json:
        typer.echo(orjson.dumps([p.model_dump(mode="json") for p in results], option=orjson.OPT_INDENT_2).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("ID", "MODEL", "STATUS", "CREATED", "PROMPT"):
        table.add_column(column, no_wrap=column != "PROMPT")
    for p in results:
        created = p.created_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(p.id, p.model, p.status.value, created, _prompt(p))
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped: no terminal width to respect, so keep every cell whole.
        console = Console(highlight=False, width=240)
    console.print(table)


@predictions_app.command("get")
def get_prediction(prediction_id: PredictionId, base_url: BaseUrl = DEFAULT_BASE_URL, token: Token = None) -> None:
    """One prediction, as JSON."""
    client = open_client(base_url, token)
    with client, api_errors(client):
        prediction = client.get(prediction_id)
    typer.echo(orjson.dumps(prediction.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())


@predictions_app.command("cancel")
def cancel_prediction(prediction_id: PredictionId, base_url: BaseUrl = DEFAULT_BASE_URL, token: Token = None) -> None:
    """Cancel a prediction; print its id and status (a finished one stays as it is)."""
    client = open_client(base_url, token)
    with client, api_errors(client):
        prediction = client.cancel(prediction_id)
    typer.echo(f"{prediction.id} {prediction.status.value}")


@predictions_app.command("open")
def open_prediction(
    prediction_id: PredictionId,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    token: Token = None,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the page's URL.")] = False,
) -> None:
    """Print the prediction's web page URL and open it in a browser."""
    client = open_client(base_url, token)
    with client, api_errors(client):
        prediction = client.get(prediction_id)
    url = prediction.urls.web
    if not url:
        err_console().print(f"The server gives no web page for {prediction_id}.")
        raise typer.Exit(1)
    typer.echo(url)
    if not no_browser and not webbrowser.open(url):
        err_console().print("No browser could be opened; the URL is above.")
