"""What the service reads from a request besides the input: list cursors, ``Cancel-After`` durations and
webhook URLs; each malformed value is a 422 naming it."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx

from fluxserve.errors import InvalidField, InvalidRequest
from fluxserve.store.rows import PredictionRow


@dataclass(frozen=True)
class Page:
    """One page of a key's predictions, with the cursors of its neighbours."""

    results: list[PredictionRow]
    next_cursor: str | None
    previous_cursor: str | None


_ID = re.compile(r"[a-z0-9]{1,32}")


def encode_cursor(direction: str, row: PredictionRow) -> str:
    """An opaque cursor for the page after (``n``) or before (``p``) ``row``."""
    raw = f"{direction}|{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, datetime, str]:
    """(direction, created_at, id) of a cursor made by :func:`encode_cursor`; 422 if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        direction, ts, pid = raw.split("|")
        created = datetime.fromisoformat(ts)
        # Only what encode_cursor makes: an aware time (a naive one cannot be compared) and an id of ours.
        if direction not in ("n", "p") or created.tzinfo is None or not _ID.fullmatch(pid):
            raise ValueError(raw)
        return direction, created.astimezone(UTC), pid
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            "cursor is not valid: pass the next or previous URL of a page as it is",
            invalid_fields=[InvalidField("invalid", "cursor", "malformed cursor")],
        ) from exc


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|m|s)")
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_BARE_SECONDS = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)$")
#: Replicate's minimum ``Cancel-After``.
MIN_CANCEL_AFTER_SECONDS = 5.0
#: Longer than anything can sensibly wait; beyond it a deadline could overflow the calendar.
MAX_CANCEL_AFTER_SECONDS = 365 * 24 * 3600.0


def parse_duration(text: str) -> float:
    """Seconds in a ``Cancel-After`` duration: a bare number of seconds (``90``), or h/m/s parts that
    combine (``30s``, ``5m``, ``1h30m45s``, ``1.5h``); ValueError if malformed."""
    text = text.strip()
    if _BARE_SECONDS.match(text):
        return float(text)
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match[1]) * _DURATION_UNITS[match[2]]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"{text!r} is not a duration such as 90, 30s, 5m or 1h30m")
    return total


def deadline_from_header(value: str | None, created_at: datetime) -> datetime | None:
    """The ``deadline`` a ``Cancel-After`` header sets; 422 naming the header if it is malformed, under
    Replicate's 5 s minimum or absurdly far away."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise InvalidRequest(
            f"Cancel-After: {exc}",
            invalid_fields=[InvalidField("format", "Cancel-After", str(exc))],
        ) from exc
    if not MIN_CANCEL_AFTER_SECONDS <= seconds <= MAX_CANCEL_AFTER_SECONDS:
        message = f"must be from 5s to {int(MAX_CANCEL_AFTER_SECONDS // 3600)}h, got {value.strip()!r}"
        raise InvalidRequest(
            f"Cancel-After {message}", invalid_fields=[InvalidField("out_of_range", "Cancel-After", message)]
        )
    return created_at + timedelta(seconds=seconds)


#: Longer than any real endpoint needs (Cog's schema allows 65,536, which httpx refuses to send).
MAX_WEBHOOK_CHARS = 2048


def check_webhook(url: str | None) -> None:
    """422 unless ``url`` is absent or an absolute http(s) URL the sender can parse (where it may point is checked
    when sending): one that would fail at every delivery attempt is refused now, naming the field."""
    if url is None:
        return
    shown = url if len(url) <= 100 else url[:100] + "…"
    reason = None
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = urlsplit("")
    if len(url) > MAX_WEBHOOK_CHARS:
        reason = f"must be at most {MAX_WEBHOOK_CHARS} characters"
    elif parts.scheme not in ("http", "https") or not parts.netloc:
        reason = "must be an absolute http(s) URL"
    elif any(c.isspace() or not c.isprintable() for c in url):
        reason = "must not contain spaces or control characters"
    else:
        try:
            parsed = httpx.URL(url)
            if not parsed.host or (parsed.port is not None and not 0 < parsed.port < 65536):
                reason = "must name a host and a port from 1 to 65535"
        except (httpx.InvalidURL, ValueError) as exc:
            reason = f"is not a valid URL ({exc})"
    if reason is not None:
        raise InvalidRequest(
            f"webhook {reason}, got {shown!r}", invalid_fields=[InvalidField("format", "webhook", reason)]
        )
