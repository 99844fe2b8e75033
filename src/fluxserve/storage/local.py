"""Blob storage in a local directory (also works on a volume shared by several hosts)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from fluxserve.formats import content_type_for
from fluxserve.storage import Blob

SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class LocalBlobStore:
    """Keys like ``<prediction id>/out-0.webp`` map to files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not SAFE_KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"unsafe blob key {key!r}")
        return self.root / key

    def put(self, key: str, source: Path) -> None:
        """Move ``source`` into the store as ``key`` (atomically: readers never see half a file)."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.partial")
        shutil.copyfile(source, staging)
        os.replace(staging, target)
        source.unlink(missing_ok=True)

    def open(self, key: str) -> Blob | None:
        """The file holding ``key``, or None if there is none (or the key is malformed)."""
        try:
            path = self._path(key)
        except ValueError:
            return None
        return Blob(content_type_for(key), path=path) if path.is_file() else None

    def delete(self, key: str) -> None:
        """Remove ``key`` (and its directory when it becomes empty)."""
        try:
            path = self._path(key)
        except ValueError:
            return
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()
