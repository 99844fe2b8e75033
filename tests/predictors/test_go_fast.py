"""go_fast on a CPU: a no-op in service, its CPU-capable steps on tiny pipelines, its guards, and the GPU harness.

The GPU itself is not here (no GPU on the CI machines); ``benchmarks/gpu_pipeline.py`` measures that.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fluxserve.catalog.flux import FLUX_DEV_INPUTS
from fluxserve.config import Settings
from fluxserve.predictors.flux_base import cpu_generator
from fluxserve.predictors.flux_dev import FluxDevPredictor
from fluxserve.predictors.flux_kontext import FluxKontextPredictor
from fluxserve.predictors.flux_schnell import FluxSchnellPredictor
from fluxserve.predictors.go_fast import steps as go_fast_steps
from fluxserve.predictors.go_fast.options import DEFAULT_STEPS, FastOptions
from fluxserve.predictors.go_fast.path import FastPath
from fluxserve.predictors.go_fast.step_cache import StepCache, compute_schedule
from fluxserve.predictors.images import save_images
from tests.predictors.support import RecordingContext, validated

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "benchmarks" / "gpu_pipeline.py"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_pipeline", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def cpu_fast(tiny_dev: Path, *steps: str) -> FluxDevPredictor:
    """A tiny dev predictor whose go_fast runs ``steps`` on the CPU (as the CPU benchmark builds it)."""
    predictor = FluxDevPredictor(str(tiny_dev), fast=FastOptions(steps=steps, allow_cpu=True))
    predictor.setup()
    return predictor


def latents(pipe: Any, steps: int = 2, **extra: Any) -> torch.Tensor:
    """The final latents of a 256² run at seed 1."""
    with torch.inference_mode():
        out = pipe(
            prompt="a cool dog",
            height=256,
            width=256,
            num_inference_steps=steps,
            guidance_scale=3.0,
            generator=cpu_generator(1),
            max_sequence_length=512,
            output_type="latent",
            **extra,
        )
    return out.images


def png(predictor: FluxDevPredictor, out: Path, go_fast: bool, steps: int = 12) -> tuple[np.ndarray, list[str]]:
    """One 0.25 MP dev prediction as PNG: (pixels, logs)."""
    out.mkdir(parents=True, exist_ok=True)
    ctx = RecordingContext(out)
    inputs = validated(
        FLUX_DEV_INPUTS,
        {"prompt": "a cool dog", "seed": 5, "megapixels": "0.25", "num_inference_steps": steps, "go_fast": go_fast},
    )
    inputs["output_format"] = "png"
    (path,) = predictor.predict(inputs, ctx)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64), ctx.logs


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


# --- in service, go_fast on a CPU does nothing and says so ---------------------------------------------------------


def test_go_fast_on_cpu_is_a_noop_that_says_so(dev: FluxDevPredictor, tmp_path: Path) -> None:
    assert dev._fast is not None and not dev._fast.available
    assert "no effect on CPU" in str(dev._fast.reason)
    fast_pixels, logs = png(dev, tmp_path / "fast", True, steps=2)
    plain_pixels, plain_logs = png(dev, tmp_path / "plain", False, steps=2)
    assert "go_fast has no effect on CPU; running in float32" in logs
    assert not any(line.startswith("go_fast") for line in plain_logs)
    assert np.array_equal(fast_pixels, plain_pixels)


# --- the steps that run on a CPU -------------------------------------------------------------------------------------


def test_fused_qkv_keeps_the_latents_and_leaves_the_bf16_path_alone(tiny_dev: Path) -> None:
    predictor = cpu_fast(tiny_dev, "fused_qkv")
    path = predictor._fast
    assert path is not None and path.active == ["fused_qkv"]
    fused = path.pipe.transformer.transformer_blocks[0].attn
    assert fused.fused_projections and hasattr(fused, "to_qkv") and not hasattr(fused, "to_q")
    plain = predictor._pipe.transformer.transformer_blocks[0].attn
    assert not plain.fused_projections and hasattr(plain, "to_q")  # go_fast=false still runs the loaded model
    assert path.pipe.transformer is not predictor._pipe.transformer
    assert path.pipe.text_encoder_2 is predictor._pipe.text_encoder_2  # no second copy of the text encoders
    reference, fused_latents = latents(predictor._pipe), latents(path.pipe)
    torch.testing.assert_close(fused_latents, reference, rtol=1e-4, atol=1e-4)


def test_step_cache_runs_13_of_28_steps_like_replicate_kontext() -> None:
    schedule = compute_schedule(28)
    assert sum(schedule) == 13
    assert [i for i, full in enumerate(schedule) if full] == [0, 1, 2, 4, 7, 10, 13, 16, 19, 22, 25, 26, 27]
    assert all(compute_schedule(4)) and all(compute_schedule(9))  # schnell-length runs are never cached


def test_step_cache_forecasts_a_linear_trend_exactly_and_is_a_pass_through_outside_a_run() -> None:
    class Line(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_dict: bool = True) -> tuple[torch.Tensor]:
            return (3 * x + 1,)

    model = Line()
    cache = StepCache(model)
    with cache.run(12) as schedule:
        outputs = [model(torch.tensor([float(i)]), return_dict=False)[0].item() for i in range(12)]
    assert outputs == [3 * i + 1 for i in range(12)]
    assert (cache.computed, cache.forecast) == (sum(schedule), 12 - sum(schedule)) == (8, 4)
    assert model(torch.tensor([100.0]))[0].item() == 301  # outside run(): the real forward
    cache.remove()
    assert "forward" not in model.__dict__


def test_step_cache_on_a_tiny_pipeline_skips_steps_and_stays_close(tiny_dev: Path, tmp_path: Path) -> None:
    predictor = cpu_fast(tiny_dev, "step_cache")
    path = predictor._fast
    assert path is not None and path.active == ["step_cache"]
    calls = []
    # On a block: hooks on the transformer itself fire on forecast steps too (they wrap __call__, not forward).
    predictor._pipe.transformer.transformer_blocks[0].register_forward_hook(lambda *_: calls.append(1))
    before, _ = png(predictor, tmp_path / "before", False)
    assert len(calls) == 12
    cached, logs = png(predictor, tmp_path / "cached", True)
    assert len(calls) == 12 + 8  # the transformer is shared; go_fast ran it on 8 of 12 steps
    assert "go_fast: TaylorSeer order 1: 8 of 12 steps computed in full" in logs[1]
    after, _ = png(predictor, tmp_path / "after", False)
    assert np.array_equal(before, after)  # the bf16 path is untouched by a go_fast call on the shared module
    assert 25 < psnr(before, cached) < math.inf  # forecast steps differ, but it is the same image


def test_first_block_cache_runs_and_is_removed_after_the_call(tiny_dev: Path, tmp_path: Path) -> None:
    predictor = cpu_fast(tiny_dev, "fbcache")
    path = predictor._fast
    assert path is not None and path.active == ["fbcache"]
    before, _ = png(predictor, tmp_path / "before", False)
    cached, _ = png(predictor, tmp_path / "cached", True)
    assert not predictor._pipe.transformer.is_cache_enabled
    after, _ = png(predictor, tmp_path / "after", False)
    assert np.array_equal(before, after)
    assert psnr(before, cached) > 25


def test_vae_step_uses_a_channels_last_copy(tiny_dev: Path) -> None:
    predictor = cpu_fast(tiny_dev, "vae")
    path = predictor._fast
    assert path is not None and path.active == ["vae"]
    assert path.pipe.vae is not predictor._pipe.vae
    weight = path.pipe.vae.decoder.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert predictor._pipe.vae.decoder.conv_in.weight.is_contiguous()
    with torch.inference_mode():
        kw: dict[str, Any] = {"prompt": "a cool dog", "height": 256, "width": 256, "num_inference_steps": 2}
        a = predictor._pipe(generator=cpu_generator(1), output_type="np", **kw).images
        b = path.pipe(generator=cpu_generator(1), output_type="np", **kw).images
    np.testing.assert_allclose(a, b, atol=1e-4)


# --- guards ------------------------------------------------------------------------------------------------------


def test_gpu_only_steps_are_off_on_cpu_with_reasons(tiny_dev: Path) -> None:
    predictor = cpu_fast(tiny_dev, "fp8", "compile", "attention", "fused_qkv")
    path = predictor._fast
    assert path is not None and path.active == ["fused_qkv"]
    skipped = path.skipped()
    assert set(skipped) == {"fp8", "compile", "attention"}
    assert "8.9" in skipped["fp8"]
    line = path.describe(12)
    assert line.startswith("go_fast: fused QKV projections (off: ") and "compile: not used on CPU" in line


def test_an_unknown_attention_backend_is_reported_not_raised(tiny_dev: Path) -> None:
    predictor = cpu_fast(tiny_dev)
    result = go_fast_steps._set_attention(predictor._pipe.transformer, "no_such_backend")
    assert not result.active and "'no_such_backend' unavailable" in result.detail


def _fake_cuda_pipe() -> Any:
    return SimpleNamespace(transformer=SimpleNamespace(device="cuda:0"))


def test_fp8_needs_sm89_and_torchao(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _device=None: (8, 0))
    config, why = go_fast_steps._fp8_config(_fake_cuda_pipe(), on_cuda=True)
    assert config is None and "8.9+" in why and "8.0" in why
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _device=None: (9, 0))
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao raises ImportError
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    config, why = go_fast_steps._fp8_config(_fake_cuda_pipe(), on_cuda=True)
    assert config is None and "torchao is not installed" in why


def test_offloaded_gpu_gets_no_go_fast_and_the_log_says_why(tmp_path: Path) -> None:
    path = go_fast_steps.prepare(object(), family="dev", on_cuda=True, offloaded=True, options=FastOptions())
    assert not path.available and "offload" in str(path.reason)
    predictor = FluxDevPredictor("unused", device="cuda")
    predictor.dtype_name = "bfloat16"
    predictor._fast = path
    ctx = RecordingContext(tmp_path)
    predictor._log_preamble({"go_fast": True, "seed": 1, "num_inference_steps": 28}, ctx)
    assert ctx.logs[1].startswith("go_fast is not available (model CPU offload is on") and "bfloat16" in ctx.logs[1]


def test_a_failing_warm_up_turns_go_fast_off() -> None:
    def broken(**_: Any) -> None:
        raise RuntimeError("inductor exploded")

    path = FastPath(pipe=broken)
    path.warm_up([(2, {})])
    assert not path.available and path.reason == "warm-up failed: RuntimeError: inductor exploded"


def test_options_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        *("STEPS", "ATTENTION", "COMPILE_MODE", "COMPILE_DYNAMIC", "TAYLOR_ORDER", "FBCACHE_THRESHOLD", "WARMUP"),
        "ON_CPU",
    ):
        monkeypatch.delenv(f"FLUXSERVE_GO_FAST_{name}", raising=False)
    monkeypatch.delenv("FLUXSERVE_COMPILE_CACHE_DIR", raising=False)
    monkeypatch.setenv("FLUXSERVE_DATA_DIR", str(tmp_path))
    defaults = FastOptions.from_settings(Settings())
    assert defaults.steps_for("schnell") == DEFAULT_STEPS["schnell"] and "step_cache" not in defaults.steps_for(
        "schnell"
    )
    assert "step_cache" in defaults.steps_for("kontext") and not defaults.allow_cpu
    assert defaults == FastOptions(cache_dir=tmp_path / "compile-cache")  # every other field as FastOptions()

    monkeypatch.setenv("FLUXSERVE_GO_FAST_STEPS", "compile, fp8")
    monkeypatch.setenv("FLUXSERVE_GO_FAST_COMPILE_MODE", "max-autotune")
    monkeypatch.setenv("FLUXSERVE_GO_FAST_COMPILE_DYNAMIC", "true")
    monkeypatch.setenv("FLUXSERVE_GO_FAST_WARMUP", "one")
    monkeypatch.setenv("FLUXSERVE_COMPILE_CACHE_DIR", str(tmp_path / "cc"))
    options = FastOptions.from_settings(Settings())
    assert options.steps_for("dev") == ("compile", "fp8")
    assert (options.compile_mode, options.compile_dynamic, options.warmup) == ("max-autotune", True, "one")
    assert options.cache_dir == tmp_path / "cc"
    monkeypatch.setenv("FLUXSERVE_GO_FAST_STEPS", "none")
    assert FastOptions.from_settings(Settings()).steps_for("dev") == ()
    monkeypatch.setenv("FLUXSERVE_GO_FAST_STEPS", "fp4")
    with pytest.raises(ValueError, match="unknown step"):
        FastOptions.from_settings(Settings())
    monkeypatch.setenv("FLUXSERVE_GO_FAST_WARMUP", "some")
    with pytest.raises(ValueError, match="FLUXSERVE_GO_FAST_WARMUP"):
        FastOptions.from_settings(Settings())


def test_warm_up_covers_every_served_shape() -> None:
    schnell = FluxSchnellPredictor("unused")._warmup_calls("all")
    sizes = [(kw["width"], kw["height"]) for _, kw in schnell]
    assert sizes[0] == (1024, 1024) and len(set(sizes)) == 22  # 11 ratios x 2 sizes, 1:1 first
    assert schnell[-1][1]["num_images_per_prompt"] == 2  # and a batch > 1
    assert all(kw["max_sequence_length"] == 256 for _, kw in schnell)
    assert len(FluxDevPredictor("unused")._warmup_calls("one")) == 2
    kontext = FluxKontextPredictor("unused")._warmup_calls("all")
    assert len(kontext) == 17 and kontext[0][1]["image"].size == (1024, 1024)


# --- around the pipeline ---------------------------------------------------------------------------------------------


def test_parallel_encode_gives_the_same_bytes_as_one_by_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    together = [tmp_path / f"p{i}.webp" for i in range(3)]
    save_images(images, together, "webp", 80)
    for i, image in enumerate(images):
        save_images([image], [tmp_path / f"s{i}.webp"], "webp", 80)
        assert (tmp_path / f"s{i}.webp").read_bytes() == together[i].read_bytes()


# --- the benchmark harness -------------------------------------------------------------------------------------


def test_step_flops_reproduce_the_reference_figures() -> None:
    harness = _harness()
    transformer = harness.FULL_TRANSFORMER
    assert round(harness.step_flops(transformer, 4096, 512) / 1e12, 1) == 74.4
    assert round(harness.step_flops(transformer, 4096, 256) / 1e12, 1) == 69.5
    assert round(harness.step_flops(transformer, 4096, 512, cond_tokens=4096) / 1e12) == 165


def test_full_size_configs_have_the_flux_parameter_counts() -> None:
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    configs = _harness().full_configs("dev")
    with init_empty_weights(include_buffers=False):  # meta device: no memory, ~1 s
        transformer = FluxTransformer2DModel(**configs["transformer"])
        clip = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        t5 = T5EncoderModel(T5Config(**configs["text_encoder_2"]))
    t5.tie_weights()  # as build_pipeline does

    def count(module: Any) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(transformer) == 11_901_408_320  # FLUX.1-dev's 11.9 B
    assert (count(clip), count(t5)) == (123_060_480, 4_762_310_656)  # reference/flux-models.md §4.3


def test_harness_runs_tiny_on_cpu_and_prints_one_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    start = time.monotonic()
    proc = subprocess.run(
        [
            *(sys.executable, str(HARNESS), "--device", "cpu", "--tiny", "--models", "schnell,dev", "--sizes", "0.25"),
            *("--runs", "2", "--warmup", "0", "--steps", "12", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - start < 60
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model"))
    for column in ("median s", "p90 s", "peak GiB", "TFLOP/s", "x floor", "PSNR dB"):
        assert column in lines[header]
    table = [line.split() for line in lines[header + 2 : header + 6]]
    assert [(r[0], r[2]) for r in table] == [("schnell", "off"), ("schnell", "on"), ("dev", "off"), ("dev", "on")]
    result = json.loads(out.read_text())
    rows = {(r["model"], r["go_fast"]): r for r in result["rows"]}
    dev_on, schnell_on = rows[("dev", "on")], rows[("schnell", "on")]
    assert len(dev_on["times"]) == 2 and dev_on["median_s"] > 0
    assert (dev_on["steps"], dev_on["full_steps"]) == (12, 8)
    assert 20 < dev_on["psnr_db"] < 200  # forecast steps: close, not identical
    assert schnell_on["psnr_db"] > 60  # fused QKV + channels_last VAE: float rounding only
    assert all(r["recompiles"] == 0 for r in result["rows"])
    assert result["setup"]["dev"]["active"] == ["fused_qkv", "vae", "step_cache"]
    assert "8.9" in result["setup"]["dev"]["skipped"]["fp8"]
