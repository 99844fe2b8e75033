"""Shared helpers of the predictor tests: a recording PredictContext and image bytes made in memory."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from fluxserve.catalog.fields import InputField, validate_input
from fluxserve.predictors.base import PredictionCanceled


class RecordingContext:
    """A PredictContext that keeps logs and progress in memory; cancels after ``cancel_after`` steps."""

    def __init__(self, output_dir: Path, cancel_after: int | None = None) -> None:
        self._output_dir = output_dir
        self.cancel_after = cancel_after
        self.logs: list[str] = []
        self.steps: list[tuple[int, int]] = []
        self._start = time.monotonic()

    @property
    def output_dir(self) -> Path:
        return self._output_dir

    def log(self, line: str) -> None:
        self.logs.append(line)

    def progress(self, step: int, total: int) -> None:
        self.steps.append((step, total))
        self.log(tqdm.format_meter(step, total, time.monotonic() - self._start))
        self.check_canceled()

    def check_canceled(self) -> None:
        if self.cancel_after is not None and len(self.steps) >= self.cancel_after:
            raise PredictionCanceled()


def validated(fields: tuple[InputField, ...], raw: dict[str, Any], **files: Any) -> dict[str, Any]:
    """Validated inputs with defaults filled in, then file inputs replaced by bytes as the worker does.

    ``files`` maps a uri/uri_array field to its content (bytes or a list of bytes); the validator sees
    placeholder URIs for them.
    """
    placeholders = {
        name: [f"https://example.com/{name}/{i}.png" for i in range(len(v))]
        if isinstance(v, list)
        else f"https://example.com/{name}.png"
        for name, v in files.items()
    }
    validation = validate_input(fields, {**raw, **placeholders})
    assert not validation.errors, validation.errors
    return {**validation.values, **files}


def image_bytes(size: tuple[int, int], fmt: str = "PNG", seed: int = 0) -> bytes:
    """A smooth RGB gradient image of ``size`` encoded as ``fmt`` (varies with ``seed``)."""
    gradient = Image.linear_gradient("L").resize(size)
    flat = Image.new("L", size, 40 * seed % 256)
    image = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), flat))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def output_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size
