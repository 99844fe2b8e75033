"""What the API says about models besides predicting: hardware, collections, search, readmes and
examples. Everything comes from the registry, the models file and the worker records."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fluxserve.catalog.fields import InputField
from fluxserve.catalog.registry import Collection, ModelSpec
from fluxserve.errors import InvalidField, InvalidRequest, NotFound
from fluxserve.lifecycle import Status
from fluxserve.service.predictions import PredictionService
from fluxserve.store.rows import PredictionRow

#: Examples listed per model (Replicate shows a handful).
EXAMPLES_LIMIT = 50
_WORD = re.compile(r"[a-z0-9]+")


async def hardware(svc: PredictionService) -> list[dict[str, str]]:
    """The kinds of hardware live workers run on, one entry per ``sku``."""
    kinds: dict[str, dict[str, str]] = {}
    for worker in await svc.live_workers():
        sku, name = worker.hardware.get("sku"), worker.hardware.get("name")
        if sku and name and sku not in kinds:
            kinds[sku] = {"sku": sku, "name": name}
    return sorted(kinds.values(), key=lambda k: k["sku"])


def collection(svc: PredictionService, slug: str) -> Collection:
    """The collection ``slug`` or :class:`NotFound`."""
    found = svc.registry.collections.get(slug)
    if found is None:
        known = ", ".join(sorted(svc.registry.collections)) or "none"
        raise NotFound(f"Collection {slug} not found. Collections: {known}.")
    return found


@dataclass(frozen=True)
class SearchHit:
    """A model that matches a query, with how well (share of the query's words it contains)."""

    spec: ModelSpec
    score: float


def search(svc: PredictionService, query: str, limit: int) -> tuple[list[SearchHit], list[Collection]]:
    """Served models and collections whose names or descriptions contain the query's words, best first."""
    words = set(_WORD.findall(query.lower()))
    if not words:
        return [], []  # nothing to look for matches nothing

    def score(*texts: str | None) -> float:
        found = set(_WORD.findall(" ".join(t for t in texts if t).lower()))
        return len(words & found) / len(words)

    hits = [SearchHit(spec, score(spec.ref, spec.description)) for spec in svc.registry]
    models = sorted((h for h in hits if h.score > 0), key=lambda h: (-h.score, h.spec.ref))[:limit]
    collections = [c for c in svc.registry.collections.values() if score(c.slug, c.name, c.description) > 0][:limit]
    return models, collections


def readme(svc: PredictionService, spec: ModelSpec) -> str:
    """The operator's readme for the model (models file), or a card written from its schema."""
    written = svc.registry.readmes.get(spec.ref)
    if written is not None:
        return written
    lines = [f"# {spec.ref}", "", spec.description or "", ""]
    if spec.inputs:
        lines += ["## Inputs", "", "| name | type | default | description |", "|---|---|---|---|"]
        lines += [_input_row(f) for f in spec.inputs]
        lines.append("")
    lines += [
        "## Run it",
        "",
        "```sh",
        f"curl -s -X POST $FLUXSERVE/v1/models/{spec.ref}/predictions \\",
        '  -H "Authorization: Bearer $FLUXSERVE_API_TOKEN" -H "Prefer: wait" \\',
        '  -d \'{"input": {"prompt": "a paper boat on a pond"}}\'',
        "```",
        "",
    ]
    return "\n".join(lines)


def _input_row(f: InputField) -> str:
    kind = f"one of {', '.join(map(str, f.choices))}" if f.choices else f.type
    default = "required" if f.required else (repr(f.default) if f.has_default else "")
    return f"| `{f.name}` | {kind} | {default} | {f.description.replace('|', '/')} |"


async def examples(svc: PredictionService, spec: ModelSpec) -> list[PredictionRow]:
    """The model's example predictions, its default example first."""
    return await svc.store.examples(spec.ref, EXAMPLES_LIMIT)


async def default_example(svc: PredictionService, spec: ModelSpec) -> PredictionRow | None:
    """The model's default example, if an operator chose one."""
    rows = await svc.store.examples(spec.ref, 1)
    return rows[0] if rows and rows[0].example == "default" else None


def cover_image(output: Any) -> str | None:
    """The first image of a prediction's (rendered) output: a URL, or the first of a list of them."""
    first = output[0] if isinstance(output, list) and output else output
    return first if isinstance(first, str) else None


async def set_example(svc: PredictionService, spec: ModelSpec, prediction_id: str, kind: str | None) -> PredictionRow:
    """Make one of the model's succeeded predictions an example (``kind`` "example" or "default"), or with
    None an ordinary prediction again (admin only: checked by the caller's route)."""
    row = await svc.store.get_prediction(prediction_id)
    if row is None or row.model != spec.ref:
        raise NotFound(f"Prediction {prediction_id} of {spec.ref} not found.")
    if kind is not None and (row.status is not Status.SUCCEEDED or row.data_removed):
        reason = "its data was removed" if row.data_removed else f"it is {row.status.value}"
        raise InvalidRequest(
            f"Prediction {prediction_id} cannot be an example: {reason}; pick a succeeded prediction",
            invalid_fields=[InvalidField("invalid", "prediction", "must be a succeeded prediction with its data")],
        )
    updated = await svc.store.set_example(prediction_id, kind)
    assert updated is not None  # it existed a moment ago and predictions are never deleted
    return updated
