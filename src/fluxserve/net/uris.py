"""Recognising what a client handed us as a file input: a ``data:`` URI, one of our own file or
output URLs (resolved without a network hop), or an external http(s) URL."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx

_OWN_FILE = re.compile(r"/v1/files/(?P<id>[a-z2-7]{26})(?:/download)?/?$")
_OWN_OUTPUT = re.compile(r"/v1/outputs/(?P<pid>[a-z2-7]{26})/(?P<name>[A-Za-z0-9._-]+)$")


class InputURIError(ValueError):
    """A file input is malformed, missing or cannot be fetched; the message names the input."""


@dataclass(frozen=True)
class OwnFile:
    """``…/v1/files/{id}``: an upload of the Files API."""

    file_id: str


@dataclass(frozen=True)
class OwnOutput:
    """``…/v1/outputs/{prediction}/{name}``: another prediction's output."""

    blob_key: str


def own_reference(url: str) -> OwnFile | OwnOutput | None:
    """Which of our resources ``url`` names, judged by its path (any host or prefix), if any."""
    path = urlsplit(url).path
    if match := _OWN_FILE.search(path):
        return OwnFile(match["id"])
    if match := _OWN_OUTPUT.search(path):
        return OwnOutput(f"{match['pid']}/{match['name']}")
    return None


def decode_data_uri(uri: str, field: str, limit: int) -> tuple[str, bytes]:
    """(media type, bytes) of a ``data:`` URI; :class:`InputURIError` naming ``field`` if malformed."""
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:"):
        raise InputURIError(f"{field}: malformed data URI (expected data:<type>;base64,<data>)")
    params = header[5:].split(";")
    media_type = params[0] or "text/plain"
    if len(payload) * 3 // 4 > limit:
        raise InputURIError(f"{field}: the data URI holds more than {limit} bytes")
    if "base64" in params[1:]:
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputURIError(f"{field}: the data URI is not valid base64") from exc
    else:
        data = unquote(payload).encode("latin-1", errors="replace")
    return media_type, data


def check_uri_syntax(uri: str, field: str) -> None:
    """Refuse anything but ``data:`` and http(s) URLs (checked at create time)."""
    if uri.startswith("data:"):
        return
    try:
        parts = urlsplit(uri)
        hostname, _port = parts.hostname, parts.port
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket, a port over 65535
        raise InputURIError(f"{field}: is not a valid URL: {exc} (got {uri[:60]!r})") from exc
    if parts.scheme not in ("http", "https") or not hostname:
        raise InputURIError(
            f"{field}: must be an http(s) URL, a data: URI or the URL of a file uploaded to /v1/files "
            f"(got {uri[:60]!r})"
        )
    try:
        httpx.URL(uri)  # what fetches it: a URL it cannot parse would fail at run time instead
    except (httpx.InvalidURL, ValueError) as exc:
        raise InputURIError(f"{field}: is not a valid URL: {exc} (got {uri[:60]!r})") from exc
