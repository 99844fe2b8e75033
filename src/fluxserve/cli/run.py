"""``fluxserve run OWNER/NAME -i NAME=VALUE …``: run a model, show its progress, save its outputs.

Progress comes from the prediction's event stream (polling when there is none); on a terminal it is
a progress bar, elsewhere (pipes, CI logs) the log lines themselves. Ctrl-C cancels the prediction.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.markup import escape

from fluxserve.cli.remote import BaseUrl, Token, api_errors, err_console, open_client
from fluxserve.client import DEFAULT_BASE_URL, Client, ClientError
from fluxserve.progress import is_progress_line, parse_progress
from fluxserve.schema import Model, Prediction

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

EXIT_INTERRUPTED = 130
POLL_SECONDS = 0.5
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})


# --- inputs -------------------------------------------------------------------------------------


def input_properties(model: Model | None) -> dict[str, dict[str, Any]] | None:
    """The model's input properties (enums resolved from Cog's ``allOf`` refs), or None without a schema."""
    if model is None or model.latest_version is None:
        return None
    try:
        schemas = model.latest_version.openapi_schema["components"]["schemas"]
        properties = schemas["Input"]["properties"]
    except (KeyError, TypeError):
        return None
    resolved: dict[str, dict[str, Any]] = {}
    for name, prop in properties.items():
        ref = ((prop.get("allOf") or [{}])[0] or {}).get("$ref")
        if ref:
            target = schemas.get(ref.rsplit("/", 1)[-1], {})
            prop = {**target, **{k: v for k, v in prop.items() if k != "allOf"}}
        resolved[name] = prop
    return resolved


def file_data_uri(path: Path) -> str:
    """The file at ``path`` as a ``data:`` URI (there is no Files API to upload it to)."""
    try:
        content = path.expanduser().read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="'-i'") from exc
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


def _json_literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def coerce(name: str, text: str, properties: dict[str, dict[str, Any]] | None) -> Any:
    """The JSON value for ``-i name=text``: typed by the schema when known, else read as a JSON literal."""
    if text.startswith("@"):
        return file_data_uri(Path(text[1:]))
    prop = properties.get(name) if properties is not None else None
    if prop is None:
        return _json_literal(text)
    kind = prop.get("type")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError as exc:
        article = "an integer" if kind == "integer" else "a number"
        raise typer.BadParameter(f"{name} must be {article}, got {text!r}", param_hint="'-i'") from exc
    if kind == "boolean":
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise typer.BadParameter(f"{name} must be true or false, got {text!r}", param_hint="'-i'")
    if kind in ("array", "object"):
        return _json_literal(text)
    return text


def parse_inputs(pairs: list[str], properties: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """``["prompt=a fox", "seed=3"]`` → ``{"prompt": "a fox", "seed": 3}``."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="'-i'")
        values[name.strip()] = coerce(name.strip(), text, properties)
    return values


# --- progress -----------------------------------------------------------------------------------


class Display:
    """Progress on stderr: a rich bar on a terminal; the log lines themselves anywhere else."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.plain = not console.is_terminal
        self._printed = 0
        self._status = ""
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Display:
        if not self.plain:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task("starting", total=None)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def status(self, status: str) -> None:
        """Show the prediction's status."""
        if status == self._status:
            return
        self._status = status
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=status)
        else:
            self.console.print(f"status: {status}")

    def logs(self, logs: str) -> None:
        """Show what is new in ``logs`` (the whole log so far): complete lines, and the progress bar."""
        new = logs[self._printed :]
        end = new.rfind("\n")
        if end >= 0:
            self._printed += end + 1
            for line in new[:end].split("\n"):
                if self._progress is None:
                    self.console.print(line, markup=False, highlight=False)
                elif not is_progress_line(line):
                    self._progress.console.print(line, markup=False, highlight=False)
        progress = parse_progress(logs)
        if progress is not None and self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=progress.total, completed=progress.current)


def follow(client: Client, prediction: Prediction, display: Display, *, use_stream: bool = True) -> Prediction:
    """Show the prediction's progress until it ends; return its final state."""
    display.status(prediction.status.value)
    if use_stream and prediction.urls.stream:
        logs = ""
        try:
            for event in client.stream(prediction):
                if event.event == "logs":
                    logs += event.data
                    display.status("processing")
                    display.logs(logs)
                elif event.event == "done":
                    break
        except (ClientError, httpx.HTTPError) as exc:
            display.console.print(f"[yellow]The event stream failed ({escape(str(exc))}); polling instead.[/]")
    # Polling: the fallback, and the final state (status, output URLs, metrics) after the stream.
    while True:
        prediction = client.get(prediction.id)
        display.status(prediction.status.value)
        display.logs(prediction.logs or "")
        if prediction.status.is_terminal:
            return prediction
        time.sleep(POLL_SECONDS)


# --- the command --------------------------------------------------------------------------------


def _outputs(output: Any) -> list[Any]:
    return output if isinstance(output, list) else [] if output is None else [output]


def _save_outputs(client: Client, prediction: Prediction, directory: Path) -> None:
    for i, item in enumerate(_outputs(prediction.output)):
        if isinstance(item, str) and item.startswith(("http://", "https://", "data:")):
            path = client.download(item, directory, default_name=f"output-{i}")
            typer.echo(str(path))
        else:
            typer.echo(item if isinstance(item, str) else orjson.dumps(item).decode())


def run(
    model: Annotated[str, typer.Argument(help="owner/name, or owner/name:version.", show_default=False)],
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="An input as NAME=VALUE (repeat it). Typed by the model's schema; VALUE @path sends a file.",
            show_default=False,
        ),
    ] = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Where output files are saved.")] = Path("."),
    base_url: BaseUrl = DEFAULT_BASE_URL,
    token: Token = None,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Poll instead of reading the event stream.")] = False,
) -> None:
    """Run a model: show its progress, save its output files, print their paths. Ctrl-C cancels it."""
    console = err_console()
    client = open_client(base_url, token)
    with client, api_errors(client):
        try:
            properties = input_properties(client.model(model))
        except (ClientError, httpx.HTTPError, ValueError):
            # Without a schema (a server with no models route), inputs are read as JSON literals.
            properties = None
        prediction = client.create(model, parse_inputs(inputs or [], properties))
        console.print(f"Prediction [bold]{prediction.id}[/] ({prediction.model})")
        if prediction.urls.web:
            console.print(f"  {prediction.urls.web}", markup=False)
        try:
            with Display(console) as display:
                prediction = follow(client, prediction, display, use_stream=not no_stream)
        except KeyboardInterrupt:
            console.print(f"Canceling {prediction.id} …")
            try:
                canceled = client.cancel(prediction.id)
                console.print(f"Prediction {prediction.id}: {canceled.status.value}")
            except (ClientError, httpx.HTTPError) as exc:
                console.print(f"[red]Could not cancel {prediction.id}[/]: {escape(str(exc))}")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        _finish(client, prediction, output_dir, console)


def _finish(client: Client, prediction: Prediction, output_dir: Path, console: Console) -> None:
    took = prediction.metrics.predict_time if prediction.metrics else None
    timing = f" in {took:.2f} s" if took is not None else ""
    if prediction.status.value == "succeeded":
        console.print(f"Prediction {prediction.id} [green]succeeded[/]{timing}")
        _save_outputs(client, prediction, output_dir)
        return
    if prediction.status.value == "failed":
        console.print(f"Prediction {prediction.id} [red]failed[/]: {escape(prediction.error or 'no error message')}")
    else:
        console.print(f"Prediction {prediction.id} was [yellow]canceled[/]")
    raise typer.Exit(1)
