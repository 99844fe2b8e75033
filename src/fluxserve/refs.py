"""Model references as clients write them: ``owner/name`` or ``owner/name:version`` (one definition, shared by
the service and the client)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_MODEL_REF = re.compile(r"^(?P<owner>[^/:]+)/(?P<name>[^/:]+)(:(?P<version>.+))?$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference; ``version`` is None for ``owner/name``."""

    owner: str
    name: str
    version: str | None = None


def parse_model_ref(text: str) -> ModelRef | None:
    """``owner/name[:version]`` parsed, or None for anything else (e.g. a bare version id)."""
    match = _MODEL_REF.match(text)
    if match is None:
        return None
    return ModelRef(match["owner"], match["name"], match["version"])
