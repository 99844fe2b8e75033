"""Checking a downloaded file: a safetensors file whose tensors are LoRA matrices (its rank read from their
shapes), or a tar (Replicate's trainer output) holding one, extracted. Blocking: run in a thread."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fluxserve.lora.refs import LoraError

#: A safetensors header larger than this is refused unread (real LoRAs have a few hundred kB at most).
MAX_HEADER_BYTES = 100 * 1024 * 1024
_CHUNK = 1024 * 1024

# The down (A) and up (B) matrices of the LoRA formats diffusers loads for FLUX: PEFT/diffusers
# (``…lora_A.weight``), kohya (``…lora_down.weight`` with ``….alpha``), XLabs (``…proj_lora1.down.weight``).
_DOWN = re.compile(r"(lora_a|lora_down|lora\.down|lora\d*\.down)(\.[a-z_]+)?\.weight$|lora_a$|lora_down$")
_UP = re.compile(r"(lora_b|lora_up|lora\.up|lora\d*\.up)(\.[a-z_]+)?\.weight$|lora_b$|lora_up$")


@dataclass(frozen=True)
class Checked:
    """A file that passed: its path, size, content hash and LoRA rank (None when no shape says it)."""

    path: Path
    size: int
    sha256: str
    rank: int | None


def megabytes(size: int) -> str:
    """``12.3 MB`` (decimal units, as download sizes are usually given)."""
    return f"{size / 1e6:.1f} MB"


def human_size(size: int) -> str:
    """``2.0 GB`` or ``12.3 MB``."""
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else megabytes(size)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_header(path: Path) -> dict[str, object] | str:
    """The parsed safetensors header, or why the file is not one."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"it is only {size} bytes long"
        (length,) = struct.unpack("<Q", head)
        if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
            return "it does not start with a safetensors header"
        raw = fh.read(length)
    if raw[:1] != b"{":
        return "it does not start with a safetensors header"
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"its header is not valid JSON ({exc})"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(info, dict) and isinstance(info.get("shape"), list) and isinstance(offsets, list)):
            return f"its header entry {name!r} is malformed"
        if len(offsets) != 2 or not all(isinstance(o, int) for o in offsets) or not 0 <= offsets[0] <= offsets[1]:
            return f"its header entry {name!r} has bad data offsets"
        end = max(end, offsets[1])
    if 8 + length + end > size:
        return f"it is truncated ({size} bytes, its header promises {8 + length + end})"
    return header


def looks_like_safetensors(path: Path) -> bool:
    """Whether ``path`` starts with a well-formed safetensors header."""
    return isinstance(_read_header(path), dict)


def lora_rank(path: Path, field: str, source: str) -> int | None:
    """The LoRA rank of a safetensors file (largest first dimension of its down matrices); :class:`LoraError`
    when it is not a safetensors file or its tensors are not LoRA matrices."""
    header = _read_header(path)
    if isinstance(header, str):
        raise LoraError(field, f"{source} is not a safetensors file (nor a .tar holding one): {header}")
    names = [name for name in header if name != "__metadata__"]
    downs = [name for name in names if _DOWN.search(name.lower())]
    ups = [name for name in names if _UP.search(name.lower())]
    if not downs or not ups:
        sample = ", ".join(names[:3]) or "none"
        raise LoraError(
            field,
            f"{source} is not a LoRA: none of its {len(names)} tensors is a pair of LoRA matrices "
            f"(lora_A/lora_B, lora_down/lora_up); it has {sample}{', …' if len(names) > 3 else ''}",
        )
    ranks = []
    for name in downs:
        info = header[name]
        shape = info.get("shape") if isinstance(info, dict) else None
        if isinstance(shape, list) and len(shape) >= 2 and isinstance(shape[0], int):
            ranks.append(shape[0])
    return max(ranks) if ranks else None


def check_lora(path: Path, sha256: str, field: str, source: str) -> Checked:
    """:func:`lora_rank` for a file whose hash is known."""
    rank = lora_rank(path, field, source)
    return Checked(path, path.stat().st_size, sha256, rank)


def is_tar(path: Path) -> bool:
    """Whether ``path`` is a (possibly compressed) tar archive."""
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _unsafe_name(name: str) -> bool:
    pure = PurePosixPath(name.replace("\\", "/"))
    return pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":")


def extract_lora(archive: Path, into: Path, *, field: str, source: str, max_bytes: int) -> tuple[Path, str]:
    """Copy the one LoRA ``.safetensors`` member of a tar to ``into``; (``into``, its sha256).

    Replicate's trainer emits ``output/flux_train_replicate/lora.safetensors`` next to a config and samples.
    Several ``.safetensors`` files are refused unless exactly one is named ``lora.safetensors``; so is a tar
    with a member that climbs out of it (absolute or ``..``), a link in place of the file, or a file over
    ``max_bytes``. Only that file is written, under a name we choose: nothing else is unpacked.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            bad = [m.name for m in members if _unsafe_name(m.name)]
            if bad:
                raise LoraError(field, f"the tar at {source} is refused: member {bad[0]!r} points outside the archive")
            named = [m for m in members if m.name.lower().endswith(".safetensors")]
            links = [m.name for m in named if not m.isreg()]
            if links:
                raise LoraError(field, f"the tar at {source} is refused: {links[0]!r} is a link, not a file")
            member = _choose(named, field, source)
            if member.size > max_bytes:
                raise LoraError(
                    field,
                    f"{member.name} in the tar at {source} is larger than the {human_size(max_bytes)} limit "
                    "(FLUXSERVE_MAX_LORA_BYTES)",
                )
            stream = tar.extractfile(member)
            if stream is None:  # pragma: no cover - isreg() members always have a stream
                raise LoraError(field, f"the tar at {source} has no data for {member.name}")
            digest = hashlib.sha256()
            written = 0
            with stream, open(into, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise LoraError(field, f"{member.name} in the tar at {source} is larger than its header says")
                    digest.update(chunk)
                    out.write(chunk)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise LoraError(field, f"the tar at {source} cannot be read ({exc})") from exc
    return into, digest.hexdigest()


def _choose(named: list[tarfile.TarInfo], field: str, source: str) -> tarfile.TarInfo:
    if len(named) == 1:
        return named[0]
    if not named:
        raise LoraError(field, f"the tar at {source} holds no .safetensors file")
    preferred = [m for m in named if PurePosixPath(m.name).name == "lora.safetensors"]
    if len(preferred) == 1:
        return preferred[0]
    listed = ", ".join(m.name for m in named[:5])
    raise LoraError(
        field, f"the tar at {source} holds several .safetensors files ({listed}); give the URL of the one to use"
    )
