"""Hugging Face repos as LoRA weights, through ``huggingface_hub``.

Files land in the standard Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``), where the base models live
too, and are read from it without a network when ``HF_HUB_OFFLINE=1``; ``HF_TOKEN`` opens private and
gated repos. That cache is the operator's (``hf cache``): the LoRA cache's size budget does not cover it.

:func:`list_files` and :func:`download` are the only calls to the hub: tests replace them (the hub is
not reachable from tests). Both block; callers run them in a thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fluxserve.lora.files import Checked, human_size, lora_rank, sha256_file
from fluxserve.lora.index import Index
from fluxserve.lora.refs import HubRef, LoraError

#: File names taken first when a repo holds several ``.safetensors`` files (diffusers, Replicate, kohya).
PREFERRED_NAMES = ("lora.safetensors", "pytorch_lora_weights.safetensors")


@dataclass(frozen=True)
class HubFile:
    """One file of a repo, with its size when the hub said it."""

    path: str
    size: int | None = None


def list_files(repo_id: str, revision: str | None) -> list[HubFile]:
    """The files of a model repo at ``revision``; from the local cache when offline or the hub is unreachable."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.hf_api import RepoFile

    if constants.HF_HUB_OFFLINE:
        return _cached_files(repo_id, revision)
    try:
        tree = HfApi().list_repo_tree(repo_id, revision=revision, recursive=True)
        return [HubFile(entry.path, entry.size) for entry in tree if isinstance(entry, RepoFile)]
    except Exception as exc:
        if not _is_network_error(exc):
            raise
        try:
            return _cached_files(repo_id, revision)
        except Exception:
            raise exc from None


def _cached_files(repo_id: str, revision: str | None) -> list[HubFile]:
    from huggingface_hub import snapshot_download

    folder = Path(str(snapshot_download(repo_id, revision=revision, local_files_only=True)))
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            found.append(HubFile(path.relative_to(folder).as_posix(), path.stat().st_size))
    return found


def download(repo_id: str, filename: str, revision: str | None) -> tuple[Path, bool]:
    """(local path of ``filename``, whether it was in the Hugging Face cache already)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    before = try_to_load_from_cache(repo_id, filename, revision=revision)
    path = hf_hub_download(repo_id, filename, revision=revision)
    cached = isinstance(before, str) and os.path.realpath(before) == os.path.realpath(str(path))
    return Path(str(path)), cached


@dataclass(frozen=True)
class Fetched:
    """A repo's LoRA file, checked: whether it was downloaded now, in how long, and its hub URL."""

    checked: Checked
    downloaded: bool
    seconds: float
    source: str


async def fetch(ref: HubRef, field: str, *, index: Index, max_bytes: int, time_limit: float) -> Fetched:
    """The LoRA file of a repo reference, from the Hugging Face cache or downloaded into it."""
    try:
        files = await asyncio.to_thread(list_files, ref.repo_id, ref.revision)
        chosen = choose_file(ref, files, field)
    except Exception as exc:
        raise hub_error(exc, ref, field) from exc
    file_ref = dataclasses.replace(ref, filename=chosen.path)
    if chosen.size is not None and chosen.size > max_bytes:
        raise _too_large(file_ref, field, max_bytes)
    started = time.monotonic()
    try:
        async with asyncio.timeout(time_limit):
            # A timed-out download goes on in its thread (huggingface_hub cannot be interrupted) and finishes
            # into the Hugging Face cache, or fails, on its own.
            path, was_cached = await asyncio.to_thread(download, ref.repo_id, chosen.path, ref.revision)
    except TimeoutError as exc:
        raise LoraError(field, f"downloading {file_ref.display} took longer than {time_limit:g} s") from exc
    except Exception as exc:
        raise hub_error(exc, file_ref, field) from exc
    seconds = time.monotonic() - started
    checked = await asyncio.to_thread(_check, Path(path), file_ref, field, index, max_bytes)
    return Fetched(checked, not was_cached, seconds, file_ref.display)


def _too_large(ref: HubRef, field: str, max_bytes: int) -> LoraError:
    return LoraError(
        field, f"{ref.display} is larger than the {human_size(max_bytes)} limit (FLUXSERVE_MAX_LORA_BYTES)"
    )


def _check(path: Path, ref: HubRef, field: str, index: Index, max_bytes: int) -> Checked:
    """Check a file of the Hugging Face cache; its hash and rank are remembered while it does not change."""
    assert ref.filename is not None
    key = ref.file_key(ref.filename)
    stat = path.stat()
    if stat.st_size > max_bytes:
        raise _too_large(ref, field, max_bytes)
    known = index.read()["hub"].get(key)
    same = known and (known["path"], known["size"], known["mtime"]) == (str(path), stat.st_size, stat.st_mtime_ns)
    if known and same:
        return Checked(path, stat.st_size, known["sha256"], known["rank"])
    rank = lora_rank(path, field, ref.display)
    sha = sha256_file(path)
    with index.edit() as data:
        data["hub"][key] = {
            "path": str(path),
            "size": stat.st_size,
            "mtime": stat.st_mtime_ns,
            "sha256": sha,
            "rank": rank,
        }
    return Checked(path, stat.st_size, sha, rank)


def choose_file(ref: HubRef, files: list[HubFile], field: str) -> HubFile:
    """The file ``ref`` names, else the repo's one ``.safetensors`` file, else the one with a preferred name."""
    if ref.filename is not None:
        for file in files:
            if file.path == ref.filename:
                return file
        raise LoraError(field, f"the Hugging Face repo {ref.repo_id} has no file {ref.filename}{_at(ref)}")
    candidates = [f for f in files if f.path.endswith(".safetensors")]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise LoraError(field, f"the Hugging Face repo {ref.repo_id}{_at(ref)} holds no .safetensors file")
    for name in PREFERRED_NAMES:
        preferred = [f for f in candidates if PurePosixPath(f.path).name == name]
        top = [f for f in preferred if "/" not in f.path]
        if len(top) == 1 or len(preferred) == 1:
            return (top or preferred)[0]
    listed = ", ".join(f.path for f in candidates[:5])
    raise LoraError(
        field,
        f"the Hugging Face repo {ref.repo_id}{_at(ref)} holds several .safetensors files ({listed}); name one, as "
        f"https://huggingface.co/{ref.repo_id}/blob/{ref.revision or 'main'}/<file>.safetensors",
    )


def _at(ref: HubRef) -> str:
    return f" at revision {ref.revision}" if ref.revision else ""


def _is_network_error(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and getattr(exc, "response", None) is not None:
        return False  # the hub answered
    return isinstance(exc, ConnectionError | TimeoutError) or any(
        word in type(exc).__name__ for word in ("Connect", "Timeout", "Network", "Offline")
    )


def hub_error(exc: Exception, ref: HubRef, field: str) -> LoraError:
    """What went wrong with a hub call, worded for the client: which repo, and what to do."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo = f"the Hugging Face repo {ref.repo_id}"
    if isinstance(exc, LoraError):
        return exc
    if isinstance(exc, GatedRepoError):
        return LoraError(
            field,
            f"{repo} is gated: accept its terms at https://huggingface.co/{ref.repo_id} with the account whose "
            "token the server has (HF_TOKEN), or use another repo",
        )
    if isinstance(exc, RepositoryNotFoundError):
        return LoraError(
            field,
            f"{repo} does not exist or is private: check the id, or give the server a token that can read it "
            "(HF_TOKEN)",
        )
    if isinstance(exc, RevisionNotFoundError):
        return LoraError(field, f"{repo} has no revision {ref.revision}")
    if isinstance(exc, LocalEntryNotFoundError) or (_is_network_error(exc) and not isinstance(exc, HfHubHTTPError)):
        from huggingface_hub import constants

        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"no network: {type(exc).__name__}"
        return LoraError(
            field,
            f"{repo}{_at(ref)} is not in this server's Hugging Face cache and the hub cannot be reached ({why}); "
            f"download it there first (hf download {ref.repo_id}) or give a URL of the .safetensors file",
        )
    if isinstance(exc, EntryNotFoundError):
        return LoraError(field, f"{repo}{_at(ref)} has no file {ref.filename or ''}".rstrip())
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return LoraError(field, f"the Hugging Face hub answered HTTP {status} for {ref.repo_id}: {exc}")
    return LoraError(field, f"fetching {repo} failed ({type(exc).__name__}: {exc})")
