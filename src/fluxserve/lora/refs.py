"""What a client may pass as LoRA weights, parsed: an http(s) URL (of a ``.safetensors`` file or of a ``.tar``
from a Replicate training) or a Hugging Face repo (``owner/repo``, ``huggingface.co/owner/repo``,
``https://huggingface.co/owner/repo[/blob|resolve/<rev>/<file>.safetensors]``).

Unlike Replicate, ``owner/repo`` always means a Hugging Face repo here (Replicate reads it as one of its own
models first); CivitAI model pages are not understood, but a direct download URL of a file works as any URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import httpx

#: The hosts whose URLs are read as Hugging Face repos (and fetched with ``huggingface_hub``).
HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO_ID = re.compile(rf"^(?P<repo>{_NAME}/{_NAME})(?:/(?P<file>[^?#]+\.safetensors))?$")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")

ACCEPTED_FORMS = (
    "an https URL of a .safetensors file or of a .tar from a Replicate training, or a Hugging Face repo "
    "(owner/repo, huggingface.co/owner/repo or https://huggingface.co/owner/repo/blob/<revision>/<file>.safetensors)"
)


class LoraError(ValueError):
    """LoRA weights that cannot be used; ``str()`` is ``"<field>: <message>"``, ready for a prediction's error."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class UrlRef:
    """An http(s) URL; ``tar`` when its name says it is an archive (the content decides in the end)."""

    url: str
    tar: bool = False

    @property
    def key(self) -> str:
        """What the cache files it under."""
        return f"url:{self.url}"

    @property
    def display(self) -> str:
        """How logs and errors name it."""
        return self.url


@dataclass(frozen=True)
class HubRef:
    """A Hugging Face model repo, at ``revision`` (default: main), with the file to take (default: chosen)."""

    repo_id: str
    revision: str | None = None
    filename: str | None = None

    @property
    def key(self) -> str:
        """What the cache files it under (with the file, once chosen, in :meth:`file_key`)."""
        return f"hf:{self.repo_id}@{self.revision or 'main'}:{self.filename or ''}"

    def file_key(self, filename: str) -> str:
        """The key of one file of the repo."""
        return f"hf:{self.repo_id}@{self.revision or 'main'}:{filename}"

    def file_url(self, filename: str) -> str:
        """The hub's download URL of ``filename`` (what logs show)."""
        revision = quote(self.revision or "main", safe="")
        return f"https://huggingface.co/{self.repo_id}/resolve/{revision}/{quote(filename)}"

    @property
    def display(self) -> str:
        """How logs and errors name it."""
        if self.filename:
            return self.file_url(self.filename)
        suffix = f" (revision {self.revision})" if self.revision else ""
        return f"huggingface.co/{self.repo_id}{suffix}"


LoraRef = UrlRef | HubRef


def parse_lora_ref(text: str, field: str = "lora_weights") -> LoraRef:
    """Classify ``text``; :class:`LoraError` naming ``field`` for anything not in :data:`ACCEPTED_FORMS`."""
    value = text.strip()
    shown = repr(value[:80])
    if not value:
        raise LoraError(field, f"is empty; give {ACCEPTED_FORMS}")
    if value[:5].lower() == "data:":
        raise LoraError(field, f"data: URIs are not accepted for LoRA weights; give {ACCEPTED_FORMS}")
    lowered = value.lower()
    if any(lowered.startswith(host + "/") for host in HF_HOSTS):
        value = "https://" + value
    elif "://" not in value:
        if "." in value.split("/", 1)[0]:  # Hugging Face owners have no dots; host names do
            raise LoraError(field, f"{shown} looks like a URL without its scheme: write https://{value[:60]}")
        match = _REPO_ID.match(value)
        if match is None:
            raise LoraError(field, f"{shown} is not a LoRA reference; give {ACCEPTED_FORMS}")
        return HubRef(match["repo"], filename=match["file"])
    try:
        parts = urlsplit(value)
        hostname, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise LoraError(field, f"{shown} is not a valid URL ({exc})") from exc
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        raise LoraError(field, f"{shown} is not a LoRA reference (only http and https URLs); give {ACCEPTED_FORMS}")
    if hostname.lower() in HF_HOSTS:
        return _parse_hub_url(parts.path, field, shown)
    try:
        httpx.URL(value)  # what fetches it: refuse now what it could not parse later
    except (httpx.InvalidURL, ValueError) as exc:
        raise LoraError(field, f"{shown} is not a valid URL ({exc})") from exc
    return UrlRef(value, tar=unquote(parts.path).lower().endswith(_TAR_SUFFIXES))


def _parse_hub_url(path: str, field: str, shown: str) -> HubRef:
    """``/owner/repo``, ``/owner/repo/tree/<rev>`` or ``/owner/repo/(blob|resolve)/<rev>/<file>.safetensors``."""
    segments = [unquote(s) for s in path.strip("/").split("/") if s]
    usage = (
        "give https://huggingface.co/owner/repo (its single .safetensors file is taken) or "
        "https://huggingface.co/owner/repo/blob/<revision>/<file>.safetensors"
    )
    if len(segments) < 2 or segments[0] in ("datasets", "spaces", "api") or not _REPO_ID.match("/".join(segments[:2])):
        raise LoraError(field, f"{shown} is not a Hugging Face model repo; {usage}")
    repo_id = "/".join(segments[:2])
    rest = segments[2:]
    if not rest:
        return HubRef(repo_id)
    if rest[0] == "tree" and len(rest) == 2:
        return HubRef(repo_id, revision=rest[1])
    if rest[0] in ("blob", "resolve") and len(rest) >= 3:
        filename = "/".join(rest[2:])
        if not filename.endswith(".safetensors"):
            raise LoraError(field, f"{shown} is not a .safetensors file; {usage}")
        return HubRef(repo_id, revision=rest[1], filename=filename)
    raise LoraError(field, f"{shown} is not a Hugging Face repo or file URL; {usage}")
