"""``Client``: create, get, list, cancel, stream and wait for predictions over HTTP (httpx, sync).

Responses are parsed with the wire classes of :mod:`fluxserve.schema`, so the client and the server
agree by construction. Other Replicate-format servers (Replicate, CometAPI) may leave out fields
fluxserve always sends; :func:`parse_prediction` fills those in before validation.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from fluxserve import __version__
from fluxserve.client.sse import ServerSentEvent, iter_events
from fluxserve.formats import extension_for_mime
from fluxserve.lifecycle import Status
from fluxserve.refs import parse_model_ref
from fluxserve.schema import Model, ModelPage, Prediction, PredictionPage

DEFAULT_BASE_URL = "http://127.0.0.1:5000/v1"
# A version id alone (``POST /predictions {"version": id}``).
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
_KNOWN_STATUSES = frozenset(status.value for status in Status)


class ClientError(Exception):
    """An error answer (problem+json when the server sends one) or a response that makes no sense."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}" if detail and detail != title else title)
        self.status = status
        self.title = title
        self.detail = detail


class StreamUnavailable(ClientError):
    """The prediction offers no event stream, or its URL does not answer with one."""


def api_base(base_url: str) -> str:
    """The API root for ``base_url``: kept when it ends in ``/v1`` (``…/replicate/v1`` too), else ``/v1`` is added."""
    base = base_url.strip().rstrip("/")
    if not re.match(r"^https?://", base):
        raise ValueError(f"base URL must start with http:// or https://, got {base_url!r}")
    return base if base.endswith("/v1") else base + "/v1"


def prediction_fields(data: Any) -> dict[str, Any]:
    """Any Replicate-format server's prediction JSON with what fluxserve always sends filled in.

    ``input`` and ``logs`` default to None, and ``urls`` holds every link as a string (empty when the server
    sent none: an empty stream URL means no stream is offered). The status is kept as sent. The gateway reads
    its upstream's predictions through this; :func:`parse_prediction` validates the result.
    """
    if not isinstance(data, dict):
        raise ClientError(0, "Unexpected response", f"expected a prediction object, got {type(data).__name__}")
    fields: dict[str, Any] = dict(data)
    fields.setdefault("input", None)
    fields.setdefault("logs", None)
    urls = {k: v for k, v in (fields.get("urls") or {}).items() if isinstance(v, str)}
    fields["urls"] = {"get": "", "cancel": "", "stream": "", "web": "", **urls}
    return fields


def parse_prediction(data: Any) -> Prediction:
    """A :class:`Prediction` from any Replicate-format server's JSON."""
    data = prediction_fields(data)
    # Replicate's newer "aborted" (deadline passed before start) reads as canceled, as fluxserve reports it.
    if data.get("status") not in _KNOWN_STATUSES:
        data["status"] = "canceled" if data.get("status") == "aborted" else data.get("status")
    return Prediction.model_validate(data)


def _problem(response: httpx.Response) -> ClientError:
    title, detail = response.reason_phrase or "Error", ""
    try:
        body = response.json()
    except ValueError:
        detail = response.text[:500]
    else:
        if isinstance(body, dict):
            title = str(body.get("title") or title)
            detail = str(body.get("detail") or "")
    return ClientError(response.status_code, title, detail)


class Client:
    """A Replicate-format API at ``base_url`` (``…/v1`` or ``…/replicate/v1``), authenticated with ``token``."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = api_base(base_url)
        headers = {"User-Agent": f"fluxserve-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Replicate never redirects and the official clients do not follow redirects either.
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=10), transport=transport)
        # Output files are capability URLs, possibly on another host: they are fetched without the key.
        self._files = httpx.Client(
            headers={"User-Agent": headers["User-Agent"]}, timeout=httpx.Timeout(300, connect=10), transport=transport
        )

    def close(self) -> None:
        """Close the connections."""
        self._http.close()
        self._files.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, self._url(path), **kwargs)
        if response.status_code >= 400:
            raise _problem(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ClientError(response.status_code, "Unexpected response", "the body is not JSON") from exc

    # --- predictions --------------------------------------------------------------------------

    def create(
        self,
        ref: str,
        input: dict[str, Any],
        *,
        wait: int | None = None,
        webhook: str | None = None,
        stream: bool | None = None,
    ) -> Prediction:
        """Create a prediction of ``owner/name`` (model route), ``owner/name:version`` or a version id.

        ``wait`` sends ``Prefer: wait=N``: the answer may then already be terminal.
        """
        body: dict[str, Any] = {"input": input}
        if webhook is not None:
            body["webhook"] = webhook
        if stream is not None:
            body["stream"] = stream
        headers = {"Prefer": f"wait={wait}"} if wait else {}
        timeout = httpx.Timeout(30.0 + (wait or 0), connect=10)
        parsed = parse_model_ref(ref)
        if parsed and not parsed.version:
            path = f"/models/{parsed.owner}/{parsed.name}/predictions"
        elif parsed or _VERSION_ID.match(ref):
            path = "/predictions"
            body["version"] = parsed.version if parsed else ref
        else:
            raise ValueError(f"model must look like owner/name, owner/name:version or a version id, got {ref!r}")
        return parse_prediction(self._call("POST", path, json=body, headers=headers, timeout=timeout))

    def get(self, prediction_id: str) -> Prediction:
        """The prediction ``prediction_id``."""
        return parse_prediction(self._call("GET", f"/predictions/{prediction_id}"))

    def list(self, url: str | None = None) -> PredictionPage:
        """A page of predictions, newest first; pass a page's ``next`` to go on."""
        body = self._call("GET", url or "/predictions")
        return PredictionPage(
            next=body.get("next"),
            previous=body.get("previous"),
            results=[parse_prediction(item) for item in body.get("results", [])],
        )

    def cancel(self, prediction_id: str) -> Prediction:
        """Cancel ``prediction_id``; a finished prediction comes back unchanged."""
        return parse_prediction(self._call("POST", f"/predictions/{prediction_id}/cancel"))

    def wait(self, prediction: Prediction, *, interval: float = 0.5, timeout: float | None = None) -> Prediction:
        """Poll until ``prediction`` is terminal (or ``timeout`` seconds pass); return its latest state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not prediction.status.is_terminal:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(interval)
            prediction = self.get(prediction.id)
        return prediction

    def stream(
        self, prediction: Prediction, *, last_event_id: str | None = None, reconnects: int = 3
    ) -> Iterator[ServerSentEvent]:
        """The prediction's events (``output``, ``logs``, ``error``, ``done``) until ``done``.

        A dropped connection is resumed with ``Last-Event-ID`` up to ``reconnects`` times. Raises
        :class:`StreamUnavailable` when there is no stream to read.
        """
        url = prediction.urls.stream
        if not url:
            raise StreamUnavailable(0, "No stream", "this prediction offers no event stream")
        attempt = 0
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            try:
                with self._http.stream("GET", url, headers=headers) as response:
                    if response.status_code >= 400:
                        response.read()
                        problem = _problem(response)
                        raise StreamUnavailable(problem.status, problem.title, problem.detail)
                    kind = response.headers.get("content-type", "").split(";")[0].strip()
                    if kind != "text/event-stream":
                        raise StreamUnavailable(response.status_code, "No stream", f"the stream URL answered {kind!r}")
                    for event in iter_events(response.iter_lines()):
                        last_event_id = event.id or last_event_id
                        yield event
                        if event.event == "done":
                            return
            except httpx.TransportError as exc:
                if attempt >= reconnects:
                    raise StreamUnavailable(0, "Stream lost", str(exc) or type(exc).__name__) from exc
            else:
                # The server closed the stream before "done": resume where it stopped.
                if attempt >= reconnects:
                    raise StreamUnavailable(0, "Stream ended", "the event stream kept ending before done")
            attempt += 1
            time.sleep(min(0.5 * attempt, 2.0))

    # --- models -------------------------------------------------------------------------------

    def model(self, ref: str) -> Model:
        """The model ``owner/name`` with its latest version's schema."""
        owner, _, name = ref.partition(":")[0].partition("/")
        return Model.model_validate(self._call("GET", f"/models/{owner}/{name}"))

    def models(self) -> ModelPage:
        """The models the server lists."""
        return ModelPage.model_validate(self._call("GET", "/models"))

    # --- files --------------------------------------------------------------------------------

    def download(self, url: str, directory: Path, *, default_name: str = "output") -> Path:
        """Save an output (an ``http(s)`` URL or a ``data:`` URI) into ``directory``; never overwrites a file."""
        directory.mkdir(parents=True, exist_ok=True)
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            mime = header[5:].split(";")[0] or "application/octet-stream"
            try:
                content = base64.b64decode(payload) if ";base64" in header else unquote(payload).encode()
            except binascii.Error as exc:
                raise ClientError(0, "Bad data URI", str(exc)) from exc
            name = default_name + _extension(mime)
            return _write_new(directory, name, content)
        name = Path(unquote(urlsplit(url).path)).name or default_name
        with self._files.stream("GET", url) as response:
            if response.status_code >= 400:
                response.read()
                raise _problem(response)
            path = _free_path(directory, name)
            with path.open("xb") as file:
                for chunk in response.iter_bytes():
                    file.write(chunk)
        return path


def _extension(mime: str) -> str:
    return extension_for_mime(mime) or mimetypes.guess_extension(mime) or ""


def _free_path(directory: Path, name: str) -> Path:
    """``directory/name``, or ``name-1``, ``name-2``… before the suffix when it is taken."""
    candidate = directory / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 0
    while candidate.exists():
        n += 1
        candidate = directory / f"{stem}-{n}{suffix}"
    return candidate


def _write_new(directory: Path, name: str, content: bytes) -> Path:
    path = _free_path(directory, name)
    path.write_bytes(content)
    return path
