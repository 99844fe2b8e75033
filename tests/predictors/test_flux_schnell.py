"""FluxSchnellPredictor on a tiny random FLUX pipeline built locally (no network, CPU)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import fluxserve
from fluxserve.catalog.fields import validate_input
from fluxserve.catalog.flux import FLUX_SCHNELL_INPUTS
from fluxserve.predictors.base import PredictionCanceled, WeightsUnavailable
from fluxserve.predictors.flux_schnell import FluxSchnellPredictor
from fluxserve.predictors.tiny import build_tiny_pipeline
from tests.predictors.support import RecordingContext

#: replicate-python's progress regex (replicate/prediction.py ``Progress.parse``).
TQDM_PROGRESS = re.compile(r"^\s*(\d+)%\s*\|.+?\|\s*(\d+)\/(\d+)")


def schnell_inputs(**overrides: Any) -> dict[str, Any]:
    """Validated inputs with the catalog's defaults filled in, as the worker passes them."""
    validation = validate_input(FLUX_SCHNELL_INPUTS, {"prompt": "a cool dog", **overrides})
    assert not validation.errors, validation.errors
    return validation.values


@pytest.fixture(scope="session")
def tiny_schnell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("weights") / "schnell")


@pytest.fixture(scope="session")
def predictor(tiny_schnell: Path) -> FluxSchnellPredictor:
    p = FluxSchnellPredictor(str(tiny_schnell))
    p.setup()
    return p


def run(predictor: FluxSchnellPredictor, out: Path, **overrides: Any) -> tuple[list[Path], RecordingContext]:
    out.mkdir(parents=True, exist_ok=True)
    ctx = RecordingContext(out)
    return predictor.predict(schnell_inputs(**overrides), ctx), ctx


def test_default_output_is_one_1024_webp(predictor: FluxSchnellPredictor, tmp_path: Path) -> None:
    paths, _ = run(predictor, tmp_path, seed=1)
    assert paths == [tmp_path / "out-0.webp"]
    with Image.open(paths[0]) as im:
        assert im.format == "WEBP"
        assert im.size == (1024, 1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-0.webp"]


def test_same_seed_same_bytes_different_seed_different_bytes(predictor: FluxSchnellPredictor, tmp_path: Path) -> None:
    (a,), _ = run(predictor, tmp_path / "a", seed=1234)
    (b,), _ = run(predictor, tmp_path / "b", seed=1234)
    (c,), _ = run(predictor, tmp_path / "c", seed=1235)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_two_png_outputs_at_16_9_quarter_megapixel(predictor: FluxSchnellPredictor, tmp_path: Path) -> None:
    paths, _ = run(
        predictor,
        tmp_path,
        seed=7,
        num_outputs=2,
        aspect_ratio="16:9",
        megapixels="0.25",
        output_format="png",
    )
    assert [p.name for p in paths] == ["out-0.png", "out-1.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG"
            assert im.size == (672, 384)
    assert paths[0].read_bytes() != paths[1].read_bytes()  # one noise draw per image


def test_jpg_output(predictor: FluxSchnellPredictor, tmp_path: Path) -> None:
    (path,), _ = run(predictor, tmp_path, seed=3, megapixels="0.25", output_format="jpg", output_quality=50)
    assert path.name == "out-0.jpg"
    with Image.open(path) as im:
        assert im.format == "JPEG"
        assert im.size == (512, 512)


def test_logs_seed_and_tqdm_progress(predictor: FluxSchnellPredictor, tmp_path: Path) -> None:
    _, ctx = run(predictor, tmp_path, seed=42, megapixels="0.25")
    assert "Using seed: 42" in ctx.logs
    assert ctx.steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    parsed = [m.groups() for line in ctx.logs if (m := TQDM_PROGRESS.match(line))]
    assert len(parsed) == 4
    assert parsed[-1] == ("100", "4", "4")
    assert "go_fast has no effect on CPU; running in float32" in ctx.logs
    assert "No safety checker is configured; images are not filtered." in ctx.logs


def test_random_seed_and_disabled_safety_checker(predictor: FluxSchnellPredictor, tmp_path: Path) -> None:
    _, ctx = run(
        predictor,
        tmp_path,
        megapixels="0.25",
        num_inference_steps=1,
        disable_safety_checker=True,
        go_fast=False,
    )
    seeds = [int(line.removeprefix("Using seed: ")) for line in ctx.logs if line.startswith("Using seed: ")]
    assert len(seeds) == 1 and 0 <= seeds[0] < 2**16  # cog-flux: os.urandom(2)
    assert not any("safety" in line or "go_fast" in line for line in ctx.logs)
    assert ctx.steps == [(1, 1)]


def test_cancel_after_first_step_writes_nothing(predictor: FluxSchnellPredictor, tmp_path: Path) -> None:
    ctx = RecordingContext(tmp_path, cancel_after=1)
    with pytest.raises(PredictionCanceled):
        predictor.predict(schnell_inputs(seed=5, megapixels="0.25"), ctx)
    assert ctx.steps == [(1, 4)]
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_dir_fails_fast(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as info:
        FluxSchnellPredictor(str(tmp_path / "missing")).setup()
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "--demo" in message
    assert "FLUXSERVE_FLUX_SCHNELL_WEIGHTS" in message
    assert str(tmp_path / "missing") in message


def test_dir_without_model_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match=r"model_index\.json"):
        FluxSchnellPredictor(str(tmp_path)).setup()


def test_build_is_idempotent_and_dev_has_guidance_embeds(tiny_schnell: Path, tmp_path: Path) -> None:
    index = tiny_schnell / "model_index.json"
    before = index.stat().st_mtime_ns
    assert build_tiny_pipeline(tiny_schnell) == tiny_schnell
    assert index.stat().st_mtime_ns == before
    assert not [p.name for p in tiny_schnell.parent.iterdir() if ".tmp-" in p.name]

    schnell_transformer = json.loads((tiny_schnell / "transformer" / "config.json").read_text())
    schnell_scheduler = json.loads((tiny_schnell / "scheduler" / "scheduler_config.json").read_text())
    assert schnell_transformer["guidance_embeds"] is False
    assert (schnell_scheduler["shift"], schnell_scheduler["use_dynamic_shifting"]) == (1.0, False)

    dev = build_tiny_pipeline(tmp_path / "dev", kind="dev")
    dev_transformer = json.loads((dev / "transformer" / "config.json").read_text())
    dev_scheduler = json.loads((dev / "scheduler" / "scheduler_config.json").read_text())
    assert dev_transformer["guidance_embeds"] is True
    assert (dev_scheduler["shift"], dev_scheduler["use_dynamic_shifting"]) == (3.0, True)


def test_modules_import_without_torch() -> None:
    code = (
        "import sys, fluxserve.predictors.flux_schnell, fluxserve.predictors.tiny; "
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'torch imported'"
    )
    src = str(Path(fluxserve.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)


def test_uncached_hub_id_without_network_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from fluxserve.predictors import loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "hub_reachable", lambda: False)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="cannot be reached") as info:
        FluxSchnellPredictor("fluxserve-tests/not-a-real-repo", device="cpu").setup()
    assert time.monotonic() - start < 5
    assert "huggingface-cli download black-forest-labs/FLUX.1-schnell" in str(info.value)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE"):
        FluxSchnellPredictor("fluxserve-tests/not-a-real-repo", device="cpu").setup()


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
def test_cuda_offloads_below_48_gib(
    monkeypatch: pytest.MonkeyPatch, tiny_schnell: Path, gib: int, expected: str
) -> None:
    import torch

    from fluxserve.predictors import loading

    pipe = FakePipe()
    seen: dict[str, Any] = {}

    def fake_from_pretrained(pipeline_class: str, source: str, dtype: Any, *, local_files_only: bool) -> FakePipe:
        seen["dtype"], seen["class"] = dtype, pipeline_class
        return pipe

    class Props:
        total_memory = gib * 1024**3

    monkeypatch.setattr(loading, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _device: Props())
    p = FluxSchnellPredictor(str(tiny_schnell))
    p.setup()
    assert (p.device, p.dtype_name, seen["dtype"]) == ("cuda", "bfloat16", torch.bfloat16)
    assert seen["class"] == "FluxPipeline"
    assert pipe.calls == [expected]
    assert p.offloaded == (expected.startswith("offload"))


def test_concurrent_builds_share_one_directory(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    target = tmp_path / "shared"
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: build_tiny_pipeline(target), range(3)))
    assert results == [target] * 3
    assert (target / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shared.lock", "shared"]
