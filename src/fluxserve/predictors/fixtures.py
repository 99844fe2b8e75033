"""Fixture models for tests and benchmarks, named for the behaviour they provoke. No torch.

Served only when named in ``FLUXSERVE_EXTRA_MODELS`` (e.g. ``fluxserve.predictors.fixtures:ALL``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from fluxserve.catalog.fields import InputField
from fluxserve.catalog.flux import URI_LIST_OUTPUT
from fluxserve.catalog.registry import ModelSpec
from fluxserve.predictors.base import PredictContext, Predictor

_TEXT = InputField("prompt", "string", "Any text; echoed back", default="")


class Noop:
    """Returns its prompt at once: measures pure serving overhead."""

    def setup(self) -> None:
        """Nothing to load."""

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """Echo the prompt."""
        return inputs["prompt"]


class SlowSteps:
    """Sleeps ``steps`` × ``step_seconds``, reporting progress (and so noticing cancel) each step."""

    def setup(self) -> None:
        """Nothing to load."""

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """Sleep step by step; return the number of steps done."""
        ctx.log(f"Using seed: {inputs['seed'] or 0}")
        for step in range(1, inputs["steps"] + 1):
            time.sleep(inputs["step_seconds"])
            ctx.progress(step, inputs["steps"])
        return [f"done {inputs['steps']} steps"]


class RaisesInPredict:
    """Raises inside predict with the given message."""

    def setup(self) -> None:
        """Nothing to load."""

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """Fail."""
        ctx.log("about to fail")
        raise RuntimeError(inputs["message"])


class RaisesInSetup:
    """Fails to load, like a model whose weights are missing."""

    def setup(self) -> None:
        """Fail."""
        raise RuntimeError("fixture weights are missing on purpose")

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """Never reached."""
        raise AssertionError("setup failed")


class WritesImage:
    """Writes ``count`` small PNG files with Pillow: exercises output storage without torch."""

    def setup(self) -> None:
        """Nothing to load."""

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """Write the images and return their paths."""
        from PIL import Image

        paths: list[Path] = []
        for i in range(inputs["count"]):
            path = ctx.output_dir / f"out-{i}.png"
            Image.new("RGB", (inputs["size"], inputs["size"]), (40 * i % 256, 120, 200)).save(path)
            paths.append(path)
        return paths


class ImageInfo:
    """Decodes its ``image`` input (bytes, as the worker resolves file inputs) and describes it."""

    def setup(self) -> None:
        """Nothing to load."""

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """``"<width>x<height> <FORMAT> <n> bytes"``."""
        import io

        from PIL import Image

        data: bytes = inputs["image"]
        with Image.open(io.BytesIO(data)) as image:
            return f"{image.width}x{image.height} {image.format} {len(data)} bytes"


def _spec(name: str, predictor: type[Predictor], inputs: tuple[InputField, ...], output: dict[str, Any]) -> ModelSpec:
    return ModelSpec(
        owner="fluxserve-fixtures",
        name=name,
        description=f"Test fixture: {predictor.__doc__}",
        inputs=inputs,
        output_schema=output,
        predictor_factory=lambda _settings: predictor(),
    )


NOOP = _spec("noop", Noop, (_TEXT,), {"type": "string", "title": "Output"})
SLOW_STEPS = _spec(
    "slow-steps",
    SlowSteps,
    (
        InputField("steps", "integer", "Number of steps", default=10, minimum=1, maximum=10_000),
        InputField("step_seconds", "number", "Seconds per step", default=0.1, minimum=0, maximum=60),
        InputField("seed", "integer", "Logged like a real model's seed"),
    ),
    {"type": "array", "items": {"type": "string"}, "title": "Output"},
)
RAISES_IN_PREDICT = _spec(
    "raises-in-predict",
    RaisesInPredict,
    (InputField("message", "string", "The error message", default="the fixture failed on purpose"),),
    {"type": "string", "title": "Output"},
)
RAISES_IN_SETUP = _spec("raises-in-setup", RaisesInSetup, (_TEXT,), {"type": "string", "title": "Output"})
WRITES_IMAGE = _spec(
    "writes-image",
    WritesImage,
    (
        InputField("count", "integer", "How many images", default=1, minimum=0, maximum=8),
        InputField("size", "integer", "Side in pixels", default=64, minimum=1, maximum=2048),
    ),
    URI_LIST_OUTPUT,
)

IMAGE_INFO = _spec(
    "image-info",
    ImageInfo,
    (InputField("image", "uri", "An image (URL, data: URI or uploaded file)", required=True),),
    {"type": "string", "title": "Output"},
)

ALL: tuple[ModelSpec, ...] = (NOOP, SLOW_STEPS, RAISES_IN_PREDICT, RAISES_IN_SETUP, WRITES_IMAGE, IMAGE_INFO)


# --- model lifecycle at real-model timings (served with ``fluxserve.predictors.fixtures:LIFECYCLE``) ---------

#: A real FLUX pipeline takes 30 s to minutes to load; ten seconds is enough to outlast a short test lease.
SLOW_SETUP_SECONDS = 10.0
#: What each "big model" fixture says it holds in device memory (it allocates nothing).
BIG_MODEL_BYTES = 1024**3


class SlowSetup:
    """Takes ``SLOW_SETUP_SECONDS`` to set up, like a real model loading its weights; then echoes its prompt."""

    def setup(self) -> None:
        """Sleep like a slow load."""
        time.sleep(SLOW_SETUP_SECONDS)

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """Echo the prompt."""
        return inputs["prompt"]


class BigModel:
    """Reports a 1 GiB footprint so residency policies can be tested on any host (it allocates nothing).

    ``offloadable`` models can be "moved to CPU RAM" and back (a 1 s swap-in); the others are dropped.
    """

    def __init__(self, offloadable: bool) -> None:
        self.offloadable = offloadable
        self.on_device = False

    def setup(self) -> None:
        """A one-second load."""
        time.sleep(1.0)
        self.on_device = True

    def memory_bytes(self) -> int:
        """The declared footprint."""
        return BIG_MODEL_BYTES

    def offload(self) -> bool:
        """Pretend to move to CPU RAM (only if offloadable)."""
        if self.offloadable:
            self.on_device = False
        return self.offloadable

    def onload(self) -> None:
        """A one-second swap back in."""
        time.sleep(1.0)
        self.on_device = True

    def predict(self, inputs: dict[str, Any], ctx: PredictContext) -> Any:
        """Say where it ran."""
        if not self.on_device:
            raise RuntimeError("predict ran on a model that is not on the device")
        return inputs["prompt"]


SLOW_SETUP = _spec("slow-setup", SlowSetup, (_TEXT,), {"type": "string", "title": "Output"})
BIG_MODEL_A = replace(
    _spec("big-model-a", BigModel, (_TEXT,), {"type": "string", "title": "Output"}),
    description="Test fixture: a 1 GiB model (declared) that can be moved to CPU RAM",
    predictor_factory=lambda _settings: BigModel(offloadable=True),
)
BIG_MODEL_B = replace(
    _spec("big-model-b", BigModel, (_TEXT,), {"type": "string", "title": "Output"}),
    description="Test fixture: a 1 GiB model (declared) that is dropped when evicted",
    predictor_factory=lambda _settings: BigModel(offloadable=False),
)

LIFECYCLE: tuple[ModelSpec, ...] = (SLOW_SETUP, BIG_MODEL_A, BIG_MODEL_B)
