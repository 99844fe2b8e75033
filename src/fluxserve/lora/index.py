"""The LoRA cache's bookkeeping on disk, shared by every process that uses the directory.

Layout of the cache directory::

    index.json        what each URL resolved to (sha256 + validators) and each blob's size, rank, last use
    index.lock        flock held while index.json is read-modified-written (replaced atomically)
    blobs/<sha>.safetensors   the files, content-addressed: two URLs with the same bytes share one
    leases/<sha>      a shared flock per user of a blob: eviction skips blobs it cannot lock exclusively
    locks/<key>.lock  one per URL: the process downloading it holds it, others wait and then read the index
    tmp/              downloads in progress, renamed into blobs/ only once complete and checked

flock locks go with the process: a crashed worker leaves no stale lock, a half-written download only a file
in tmp/ that the next start removes. Blocking: call from a thread (except the quick lease functions).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process locking, renames still keep files whole
    fcntl = None  # type: ignore[assignment]

_VERSION = 1


def _empty() -> dict[str, Any]:
    return {"version": _VERSION, "urls": {}, "blobs": {}, "hub": {}}


def lock_file(path: Path, *, shared: bool = False, blocking: bool = True) -> IO[bytes] | None:
    """Open ``path`` and flock it; the open file holds the lock (close it to release), None if busy.

    The lock is taken on the file that still has that name: one removed by :func:`remove_locked` while we
    waited is not ours, and we try again on its successor.
    """
    while True:
        fh = open(path, "a+b")  # noqa: SIM115 - the returned file holds the lock
        if fcntl is None:  # pragma: no cover
            return fh
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fh.fileno(), flags)
        except BlockingIOError:
            fh.close()
            return None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and current.st_ino == os.fstat(fh.fileno()).st_ino:
            return fh
        fh.close()


def remove_locked(path: Path, fh: IO[bytes]) -> None:
    """Remove a lock file we hold exclusively, then release it (waiters then retry on a new file)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fh.close()


class Index:
    """index.json under index.lock, and the blob files it describes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blobs = directory / "blobs"
        self.leases = directory / "leases"
        self.locks = directory / "locks"
        self.tmp = directory / "tmp"
        for folder in (self.blobs, self.leases, self.locks, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._file = directory / "index.json"
        self._lock = directory / "index.lock"

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this hash lives."""
        return self.blobs / f"{sha256}.safetensors"

    def lease(self, sha256: str) -> IO[bytes]:
        """A shared lock on a blob: while it is open, no process evicts the blob."""
        fh = lock_file(self.leases / sha256, shared=True)
        assert fh is not None
        return fh

    @contextlib.contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """The index, locked; what the block leaves in it is written back (atomically) when it ends normally."""
        fh = lock_file(self._lock)
        assert fh is not None
        try:
            data = self.read()
            yield data
            tmp = self._file.with_name(f".index.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self._file)
        finally:
            fh.close()

    def read(self) -> dict[str, Any]:
        """The index as last written (an empty one if none or unreadable)."""
        try:
            data = json.loads(self._file.read_text())
        except (FileNotFoundError, ValueError):
            return _empty()
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            return _empty()
        for section in ("urls", "blobs", "hub"):
            data.setdefault(section, {})
        return data

    def clean_tmp(self, older_than: float) -> None:
        """Remove downloads left in tmp/ by a process that died (none younger than ``older_than`` seconds)."""
        cutoff = time.time() - older_than
        for path in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def evict(self, data: dict[str, Any], budget: int) -> list[str]:
        """Remove least recently used blobs until the rest fit in ``budget`` bytes; blobs someone holds a lease
        on stay (even over budget). Call inside :meth:`edit`. The hashes removed."""
        blobs: dict[str, dict[str, Any]] = data["blobs"]
        for path in self.blobs.glob("*.safetensors"):  # files a crash left out of the index: adopt them
            sha = path.name.removesuffix(".safetensors")
            if sha not in blobs:
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    blobs[sha] = {"size": stat.st_size, "rank": None, "used": stat.st_mtime}
        for sha in [sha for sha in blobs if not self.blob_path(sha).is_file()]:
            del blobs[sha]
        total = sum(int(info["size"]) for info in blobs.values())
        removed = []
        for sha, info in sorted(blobs.items(), key=lambda item: float(item[1]["used"])):
            if total <= budget:
                break
            lease_path = self.leases / sha
            held = lock_file(lease_path, blocking=False)
            if held is None:
                continue  # in use by a running prediction
            try:
                with contextlib.suppress(FileNotFoundError):
                    self.blob_path(sha).unlink()
            finally:
                remove_locked(lease_path, held)
            total -= int(info["size"])
            removed.append(sha)
        for sha in removed:
            del blobs[sha]
        for url in [url for url, entry in data["urls"].items() if entry.get("sha256") not in blobs]:
            del data["urls"][url]
        return removed
