"""FluxDevPredictor on a tiny random FLUX.1-dev-shaped pipeline (CPU, no network)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from fluxserve.catalog.flux import FLUX_DEV_INPUTS
from fluxserve.catalog.sizes import img2img_size
from fluxserve.predictors.base import PredictionCanceled, WeightsUnavailable
from fluxserve.predictors.flux_dev import FluxDevPredictor
from fluxserve.predictors.images import ImageInputError
from tests.predictors.support import RecordingContext, image_bytes, output_size, validated


def run(
    predictor: FluxDevPredictor, out: Path, image: bytes | None = None, **overrides: Any
) -> tuple[list[Path], RecordingContext]:
    out.mkdir(parents=True, exist_ok=True)
    ctx = RecordingContext(out)
    files = {"image": image} if image is not None else {}
    inputs = validated(FLUX_DEV_INPUTS, {"prompt": "a cool dog", **overrides}, **files)
    return predictor.predict(inputs, ctx), ctx


def test_text_to_image_size_follows_the_table_and_guidance_is_used(dev: FluxDevPredictor, tmp_path: Path) -> None:
    paths, ctx = run(dev, tmp_path / "a", seed=3, aspect_ratio="16:9", megapixels="0.25", num_inference_steps=2)
    assert [p.name for p in paths] == ["out-0.webp"]
    assert output_size(paths[0]) == (672, 384)
    assert ctx.steps == [(1, 2), (2, 2)]
    assert "Using seed: 3" in ctx.logs
    assert "go_fast has no effect on CPU; running in float32" in ctx.logs
    # guidance is embedded in the transformer: another value gives another image.
    (other,), _ = run(
        dev, tmp_path / "b", seed=3, aspect_ratio="16:9", megapixels="0.25", num_inference_steps=2, guidance=7
    )
    assert other.read_bytes() != paths[0].read_bytes()


def test_default_size_is_1024_square(dev: FluxDevPredictor, tmp_path: Path) -> None:
    start = time.perf_counter()
    (path,), _ = run(dev, tmp_path, seed=1, num_inference_steps=2, output_format="png")
    assert output_size(path) == (1024, 1024)
    assert time.perf_counter() - start < 30


def test_same_seed_same_bytes_different_seed_different_bytes(dev: FluxDevPredictor, tmp_path: Path) -> None:
    args: dict[str, Any] = {"megapixels": "0.25", "num_inference_steps": 2}
    (a,), _ = run(dev, tmp_path / "a", seed=1234, **args)
    (b,), _ = run(dev, tmp_path / "b", seed=1234, **args)
    (c,), _ = run(dev, tmp_path / "c", seed=1235, **args)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_img2img_size_rule() -> None:
    assert img2img_size(1000, 700) == (992, 704)  # 62.5 rounds to even: 992, as Python (and cog-flux) round
    assert img2img_size(1024, 1024) == (1024, 1024)
    assert img2img_size(2880, 1440) == (1440, 720)
    assert img2img_size(3000, 2000) == (1440, 960)
    assert img2img_size(500, 4000) == (176, 1440)  # 180 -> 176 (11.25 * 16)
    assert img2img_size(5000, 2) == (1440, 16)  # never 0


def test_img2img_output_follows_the_input_and_strength_sets_the_steps(dev: FluxDevPredictor, tmp_path: Path) -> None:
    image = image_bytes((1000, 700), "JPEG")
    paths, ctx = run(dev, tmp_path / "half", image=image, seed=5, num_inference_steps=4, prompt_strength=0.5)
    assert output_size(paths[0]) == (992, 704)
    assert ctx.steps == [(1, 2), (2, 2)]  # the last half of the schedule
    for line in ("Input image size: 1000x700", "Input image size set to: 992x704", "Using seed: 5"):
        assert line in ctx.logs
    # aspect_ratio and megapixels do not apply to img2img
    full, full_ctx = run(
        dev, tmp_path / "full", image=image, seed=5, num_inference_steps=4, prompt_strength=1.0, aspect_ratio="9:16"
    )
    assert output_size(full[0]) == (992, 704)
    assert [s for s, _ in full_ctx.steps] == [1, 2, 3, 4]
    assert full[0].read_bytes() != paths[0].read_bytes()

    again, _ = run(dev, tmp_path / "again", image=image, seed=5, num_inference_steps=4, prompt_strength=0.5)
    assert again[0].read_bytes() == paths[0].read_bytes()


def test_img2img_scales_large_inputs_down_and_makes_several_outputs(dev: FluxDevPredictor, tmp_path: Path) -> None:
    paths, _ = run(
        dev,
        tmp_path,
        image=image_bytes((2880, 1440), "WEBP"),
        seed=9,
        num_inference_steps=2,
        prompt_strength=0.5,
        num_outputs=2,
        output_format="jpg",
    )
    assert [p.name for p in paths] == ["out-0.jpg", "out-1.jpg"]
    assert [output_size(p) for p in paths] == [(1440, 720), (1440, 720)]
    assert paths[0].read_bytes() != paths[1].read_bytes()


def test_prompt_strength_zero_runs_one_step(dev: FluxDevPredictor, tmp_path: Path) -> None:
    paths, ctx = run(dev, tmp_path, image=image_bytes((256, 256)), seed=2, num_inference_steps=28, prompt_strength=0)
    assert output_size(paths[0]) == (256, 256)
    assert ctx.steps == [(1, 1)]
    assert any("prompt_strength 0" in line for line in ctx.logs)


def test_bad_image_fails_with_the_field_name(dev: FluxDevPredictor, tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match=r"^image: not a PNG, JPEG, WEBP or GIF image"):
        run(dev, tmp_path, image=b"GIF? no, a text file\n", num_inference_steps=1)
    assert list(tmp_path.iterdir()) == []


def test_cancel_within_one_step(dev: FluxDevPredictor, tmp_path: Path) -> None:
    ctx = RecordingContext(tmp_path, cancel_after=1)
    inputs = validated(
        FLUX_DEV_INPUTS, {"prompt": "p", "seed": 1, "num_inference_steps": 4}, image=image_bytes((64, 64))
    )
    with pytest.raises(PredictionCanceled):
        dev.predict(inputs, ctx)
    assert ctx.steps == [(1, 4)]  # strength 0.8 of 4 steps: int(4 * 0.2) = 0 skipped
    assert list(tmp_path.iterdir()) == []


def test_img2img_shares_the_text_to_image_modules(dev: FluxDevPredictor, tiny_dev: Path) -> None:
    from diffusers import FluxImg2ImgPipeline

    img2img = dev._img2img
    assert type(img2img).__name__ == "FluxImg2ImgPipeline"
    assert img2img.transformer is dev._pipe.transformer and img2img.vae is dev._pipe.vae
    assert img2img.scheduler is not dev._pipe.scheduler  # set_timesteps keeps state in it
    # The tiny dev checkout also loads as an img2img pipeline directly.
    assert isinstance(FluxImg2ImgPipeline.from_pretrained(str(tiny_dev)), FluxImg2ImgPipeline)
    transformer = json.loads((tiny_dev / "transformer" / "config.json").read_text())
    assert transformer["guidance_embeds"] is True


def test_missing_weights_say_how_to_get_them(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as info:
        FluxDevPredictor(str(tmp_path / "missing")).setup()
    assert time.monotonic() - start < 5
    message = str(info.value)
    for part in (
        "FLUXSERVE_FLUX_DEV_WEIGHTS",
        "--demo",
        "gated",
        "HF_TOKEN",
        "fluxserve pull black-forest-labs/flux-dev",
    ):
        assert part in message


def test_uncached_hub_id_without_network_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from fluxserve.predictors import loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "hub_reachable", lambda: False)
    with pytest.raises(WeightsUnavailable, match="cannot be reached") as info:
        FluxDevPredictor("fluxserve-tests/not-a-real-repo", device="cpu").setup()
    assert "https://huggingface.co/black-forest-labs/FLUX.1-dev" in str(info.value)


class FakePipe:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def enable_model_cpu_offload(self, device: str) -> None:
        self.calls.append(f"offload:{device}")

    def to(self, device: str) -> FakePipe:
        self.calls.append(f"to:{device}")
        return self

    def set_progress_bar_config(self, **_: Any) -> None:
        pass


@pytest.mark.parametrize(("gib", "expected"), [(24, "offload:cuda"), (80, "to:cuda")])
def test_cuda_is_bf16_and_offloads_below_48_gib(monkeypatch: pytest.MonkeyPatch, gib: int, expected: str) -> None:
    import torch

    import fluxserve.predictors.flux_dev as module
    from fluxserve.predictors import loading

    pipe = FakePipe()
    seen: dict[str, Any] = {}

    class Props:
        total_memory = gib * 1024**3

    monkeypatch.setattr(
        loading,
        "from_pretrained",
        lambda pipeline_class, source, dtype, local_files_only: seen.update(dtype=dtype, cls=pipeline_class) or pipe,
    )
    monkeypatch.setattr(module, "_img2img_from", lambda p: ("img2img of", p))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _device: Props())
    p = FluxDevPredictor("fluxserve-tests/cached-repo")
    p.setup()
    assert (p.device, p.dtype_name, seen["dtype"]) == ("cuda", "bfloat16", torch.bfloat16)
    assert seen["cls"] == "FluxPipeline"
    assert pipe.calls == [expected]
    assert p._img2img == ("img2img of", pipe)  # built after placement, on the same modules


@pytest.mark.parametrize(
    ("img2img", "line"),
    [
        (True, "img2img not supported with fp8 quantization; running with bf16"),
        (False, "go_fast is not available (the predictor is not set up); running in bfloat16"),
    ],
)
def test_go_fast_log_lines_on_a_gpu(tmp_path: Path, img2img: bool, line: str) -> None:
    from fluxserve.predictors.flux_dev import IMG2IMG_BF16_ONLY

    predictor = FluxDevPredictor("unused", device="cuda")  # only the logging, no model
    predictor.dtype_name = "bfloat16"
    ctx = RecordingContext(tmp_path)
    seed = predictor._log_preamble({"go_fast": True, "seed": 0}, ctx, bf16_only=IMG2IMG_BF16_ONLY if img2img else None)
    assert 0 <= seed < 2**16 and ctx.logs[0] == f"Using seed: {seed}"  # 0 means random, as in cog-flux
    assert any(entry.startswith(line) for entry in ctx.logs)
