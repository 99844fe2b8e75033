"""FLUX.2 [dev] and [klein] predictors on tiny random FLUX.2-shaped pipelines (CPU, no network)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from fluxserve.catalog.flux2 import FLUX2_DEV_INPUTS, FLUX2_KLEIN_INPUTS
from fluxserve.catalog.sizes import flux2_size
from fluxserve.predictors import flux2 as flux2_module
from fluxserve.predictors.base import PredictionCanceled, WeightsUnavailable
from fluxserve.predictors.flux2 import (
    Flux2DevPredictor,
    Flux2Klein9BPredictor,
    Flux2KleinPredictor,
    Flux2Predictor,
    choose_placement,
)
from fluxserve.predictors.go_fast.options import DEFAULT_STEPS, FastOptions
from fluxserve.predictors.tiny import build_tiny_pipeline
from fluxserve.predictors.tiny_flux2 import build_tiny_flux2_pipeline
from tests.predictors.support import RecordingContext, image_bytes, output_size, validated

GiB = 1024**3
#: The tests run [dev] at 4 steps instead of its 28.
DEV_TEST_STEPS = 4


@pytest.fixture(scope="session")
def tiny_flux2_dev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("weights") / "flux-flux2-dev", kind="flux2-dev")


@pytest.fixture(scope="session")
def tiny_klein(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("weights") / "flux-klein", kind="klein")


@pytest.fixture(scope="session")
def flux2_dev(tiny_flux2_dev: Path) -> Flux2DevPredictor:
    predictor = Flux2DevPredictor(str(tiny_flux2_dev))
    predictor.setup()
    predictor.default_steps = DEV_TEST_STEPS
    return predictor


@pytest.fixture(scope="session")
def klein(tiny_klein: Path) -> Flux2KleinPredictor:
    predictor = Flux2KleinPredictor(str(tiny_klein))
    predictor.setup()
    return predictor


def run_dev(predictor: Flux2Predictor, out: Path, images: list[bytes] | None = None, **raw: Any) -> tuple[Path, Any]:
    out.mkdir(parents=True, exist_ok=True)
    ctx = RecordingContext(out)
    files = {"input_images": images} if images is not None else {}
    inputs = validated(FLUX2_DEV_INPUTS, {"prompt": "a red bicycle", **raw}, **files)
    return predictor.predict(inputs, ctx), ctx


def run_klein(
    predictor: Flux2Predictor, out: Path, images: list[bytes] | None = None, **raw: Any
) -> tuple[list[Path], Any]:
    out.mkdir(parents=True, exist_ok=True)
    ctx = RecordingContext(out)
    files = {"images": images} if images is not None else {}
    inputs = validated(FLUX2_KLEIN_INPUTS, {"prompt": "a red bicycle", "output_megapixels": "0.25", **raw}, **files)
    return predictor.predict(inputs, ctx), ctx


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(f.relative_to(directory)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(directory.rglob("*"))
        if f.is_file()
    }


# --- the tiny pipelines ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "pipeline", "encoder", "tokenizer", "guidance_embeds"),
    [
        ("flux2-dev", "Flux2Pipeline", "Mistral3ForConditionalGeneration", "TokenizersBackend", True),
        ("klein", "Flux2KleinPipeline", "Qwen3ForCausalLM", "Qwen2Tokenizer", False),
    ],
)
def test_tiny_build_is_offline_idempotent_and_reproducible(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_flux2_dev: Path,
    tiny_klein: Path,
    kind: Any,
    pipeline: str,
    encoder: str,
    tokenizer: str,
    guidance_embeds: bool,
) -> None:
    built = tiny_flux2_dev if kind == "flux2-dev" else tiny_klein
    index = json.loads((built / "model_index.json").read_text())
    assert index["_class_name"] == pipeline
    assert index["text_encoder"] == ["transformers", encoder]
    assert index["tokenizer"] == ["transformers", tokenizer]
    assert index["vae"] == ["diffusers", "AutoencoderKLFlux2"]
    assert index.get("is_distilled", False) is (kind == "klein")
    transformer = json.loads((built / "transformer" / "config.json").read_text())
    assert transformer["guidance_embeds"] is guidance_embeds
    assert transformer["in_channels"] == 16  # 4 latent channels, 2x2 patches
    assert (built / "tokenizer" / "chat_template.jinja").is_file()
    assert "random" in (built / "TINY_RANDOM_WEIGHTS.txt").read_text()

    # Idempotent: a second call returns at once and leaves the directory as it was.
    before = _digest(built)
    assert build_tiny_pipeline(built, kind=kind) == built
    assert _digest(built) == before
    # Offline and seeded: another build, with the Hub unreachable by rule, is byte for byte the same.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = build_tiny_flux2_pipeline(tmp_path / "again", kind)
    assert _digest(again) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".again.lock", "again"]


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flux2-dev"):
        build_tiny_flux2_pipeline(tmp_path / "x", "schnell")  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_text_encoder_reads_the_prompt(klein: Flux2KleinPredictor, tmp_path: Path) -> None:
    (a,), _ = run_klein(klein, tmp_path / "a", seed=5, prompt="a red bicycle")
    (b,), _ = run_klein(klein, tmp_path / "b", seed=5, prompt="a blue boat")
    assert a.read_bytes() != b.read_bytes()


# --- text to image -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("aspect_ratio", "megapixels", "expected"),
    [("1:1", "0.25", (512, 512)), ("16:9", "0.25", (688, 384)), ("2:3", "0.5", (592, 880)), ("1:1", "1", (1024, 1024))],
)
def test_klein_text_to_image_size(
    klein: Flux2KleinPredictor, tmp_path: Path, aspect_ratio: str, megapixels: str, expected: tuple[int, int]
) -> None:
    paths, ctx = run_klein(klein, tmp_path, seed=3, aspect_ratio=aspect_ratio, output_megapixels=megapixels)
    assert flux2_size(aspect_ratio, float(megapixels)) == expected
    assert [p.name for p in paths] == ["out-0.jpg"]  # a list of one; klein's default format
    assert output_size(paths[0]) == expected
    assert ctx.steps == [(i, 4) for i in range(1, 5)]  # distilled: 4 steps
    assert "Using seed: 3" in ctx.logs
    assert f"Generating {expected[0]}x{expected[1]}, 4 steps, guidance 1" in ctx.logs


@pytest.mark.slow
def test_dev_text_to_image_is_one_path_and_go_fast_is_a_no_op_on_cpu(
    flux2_dev: Flux2DevPredictor, tmp_path: Path
) -> None:
    path, ctx = run_dev(flux2_dev, tmp_path, seed=9, aspect_ratio="4:5")
    assert isinstance(path, Path) and path == tmp_path / "output.webp"
    assert output_size(path) == flux2_size("4:5", 1.0, multiple=32) == (928, 1152)
    assert ctx.steps[-1] == (DEV_TEST_STEPS, DEV_TEST_STEPS)
    # go_fast defaults to true on flux-2-dev.
    assert "go_fast has no effect on CPU; running in float32" in ctx.logs
    assert "Generating 928x1152, 4 steps, guidance 4" in ctx.logs


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(klein: Flux2KleinPredictor, tmp_path: Path) -> None:
    (a,), _ = run_klein(klein, tmp_path / "a", seed=1234, output_format="png")
    (b,), _ = run_klein(klein, tmp_path / "b", seed=1234, output_format="png")
    (c,), _ = run_klein(klein, tmp_path / "c", seed=1235, output_format="png")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.slow
def test_dev_custom_size_is_rounded_to_32(flux2_dev: Flux2DevPredictor, tmp_path: Path) -> None:
    path, ctx = run_dev(flux2_dev, tmp_path, seed=2, aspect_ratio="custom", width=270, height=330)
    assert output_size(path) == (256, 320)
    assert "Custom size 270x330 rounded to multiples of 32" in ctx.logs


@pytest.mark.slow
def test_match_input_image_without_an_image_is_1_1(klein: Flux2KleinPredictor, tmp_path: Path) -> None:
    (path,), ctx = run_klein(klein, tmp_path, seed=4, aspect_ratio="match_input_image")
    assert output_size(path) == (512, 512)
    assert "aspect_ratio match_input_image without an input image: using 1:1" in ctx.logs


# --- reference images ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_klein_multi_reference_edit_follows_the_first_image(klein: Flux2KleinPredictor, tmp_path: Path) -> None:
    images = [image_bytes((600, 400), "PNG", seed=1), image_bytes((300, 300), "JPEG", seed=2)]
    (path,), ctx = run_klein(klein, tmp_path / "edit", images, seed=7, aspect_ratio="match_input_image")
    assert output_size(path) == flux2_size("match_input_image", 0.25, reference=(600, 400)) == (624, 416)
    assert "Using 2 reference images (600x400, 300x300)" in ctx.logs
    # The references condition the result; their order matters (the first one leads).
    (swapped,), _ = run_klein(klein, tmp_path / "swapped", images[::-1], seed=7, aspect_ratio="3:2")
    (plain,), _ = run_klein(klein, tmp_path / "plain", images, seed=7, aspect_ratio="3:2")
    assert output_size(swapped) == output_size(plain) == (624, 416)
    assert swapped.read_bytes() != plain.read_bytes()


@pytest.mark.slow
def test_dev_reference_edit_with_a_custom_size(flux2_dev: Flux2DevPredictor, tmp_path: Path) -> None:
    images = [image_bytes((320, 256), seed=1), image_bytes((200, 400), seed=2)]
    path, ctx = run_dev(flux2_dev, tmp_path / "custom", images, seed=1, aspect_ratio="custom", width=256, height=320)
    assert output_size(path) == (256, 320)
    assert "Using 2 reference images (320x256, 200x400)" in ctx.logs
    matched, _ = run_dev(flux2_dev, tmp_path / "match", images[:1], seed=1, aspect_ratio="match_input_image")
    assert output_size(matched) == flux2_size("match_input_image", reference=(320, 256), multiple=32) == (1152, 928)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((40, 300), r"is 40×300 px; FLUX\.2 needs at least 64 px per side"),
        ((900, 100), r"is 900×100 px \(9\.0:1\); FLUX\.2 takes aspect ratios up to 8:1"),
    ],
)
def test_an_unusable_reference_fails_naming_it(
    klein: Flux2KleinPredictor, flux2_dev: Flux2DevPredictor, tmp_path: Path, size: tuple[int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=r"^images\[1\] " + message):
        run_klein(klein, tmp_path / "klein", [image_bytes((200, 200)), image_bytes(size)])
    with pytest.raises(ValueError, match=r"^input_images\[0\] " + message):
        run_dev(flux2_dev, tmp_path / "dev", [image_bytes(size)])
    assert list((tmp_path / "klein").iterdir()) == list((tmp_path / "dev").iterdir()) == []


def test_a_damaged_reference_is_named(klein: Flux2KleinPredictor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^images\[0\]: the PNG image is damaged"):
        run_klein(klein, tmp_path, [image_bytes((64, 64))[:100]])


# --- cancel, go_fast, placement ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cancel_within_one_step(flux2_dev: Flux2DevPredictor, klein: Flux2KleinPredictor, tmp_path: Path) -> None:
    assert Flux2DevPredictor.default_steps == 28 and Flux2KleinPredictor.default_steps == 4
    for name, predictor, fields, raw in (
        ("dev", flux2_dev, FLUX2_DEV_INPUTS, {"aspect_ratio": "custom", "width": 256, "height": 256}),
        ("klein", klein, FLUX2_KLEIN_INPUTS, {"output_megapixels": "0.25"}),
    ):
        out = tmp_path / name
        out.mkdir()
        ctx = RecordingContext(out, cancel_after=1)
        with pytest.raises(PredictionCanceled):
            predictor.predict(validated(fields, {"prompt": "p", "seed": 1, **raw}), ctx)
        assert ctx.steps == [(1, predictor.default_steps)]
        assert list(out.iterdir()) == []


def test_go_fast_families_and_warm_up_shapes(flux2_dev: Flux2DevPredictor, klein: Flux2KleinPredictor) -> None:
    assert "step_cache" in DEFAULT_STEPS["flux2-dev"] and "step_cache" not in DEFAULT_STEPS["flux2-klein"]
    assert (Flux2DevPredictor.fast_family, Flux2KleinPredictor.fast_family) == ("flux2-dev", "flux2-klein")
    one = flux2_dev._warmup_calls("one")
    assert [(s, kw["width"], kw["height"], kw["prompt"]) for s, kw in one] == [(2, 1024, 1024, "warm-up")]
    every = klein._warmup_calls("all")
    assert len(every) == 9 and (every[0][1]["width"], every[0][1]["height"]) == (1024, 1024)
    assert {(kw["width"], kw["height"]) for _, kw in every} >= {(1360, 768), (768, 1360)}  # 16:9 and 9:16 at 1 MP
    assert all(kw["guidance_scale"] == 1.0 for _, kw in every)


@pytest.mark.slow
def test_go_fast_builds_on_a_flux2_transformer(tiny_flux2_dev: Path, tmp_path: Path) -> None:
    """With ``allow_cpu`` (tests only) go_fast builds what applies to FLUX.2 and skips the rest with reasons."""
    steps = ("fused_qkv", "fp8", "attention", "compile", "vae", "step_cache")
    predictor = Flux2DevPredictor(str(tiny_flux2_dev), fast=FastOptions(steps=steps, allow_cpu=True))
    predictor.setup()
    predictor.default_steps = 12
    fast = predictor._fast
    assert fast is not None and fast.available
    assert fast.active == ["fused_qkv", "vae", "step_cache"]
    assert set(fast.skipped()) == {"fp8", "attention", "compile"}
    blocks = fast.pipe.transformer.transformer_blocks
    assert blocks[0].attn.fused_projections and not hasattr(blocks[0].attn, "to_q")
    assert predictor._pipe.transformer.transformer_blocks[0].attn.to_q is not None  # the bf16 path is untouched
    path, ctx = run_dev(predictor, tmp_path, seed=1, aspect_ratio="custom", width=256, height=256)
    assert output_size(path) == (256, 256)
    assert any(line.startswith("go_fast: fused QKV projections") and "8 of 12 steps" in line for line in ctx.logs)
    assert (fast.step_cache.computed, fast.step_cache.forecast) == (8, 4)


def test_klein_go_fast_has_no_step_cache(tiny_klein: Path) -> None:
    predictor = Flux2KleinPredictor(
        str(tiny_klein), fast=FastOptions(steps=("fused_qkv", "step_cache"), allow_cpu=True)
    )
    predictor.setup()
    assert predictor._fast is not None
    assert predictor._fast.skipped() == {"step_cache": "klein runs 4 steps"}
    assert predictor._fast.pipe.config.is_distilled  # the go_fast pipeline keeps klein's config


GB = 10**9


@pytest.mark.parametrize(
    ("gpu", "second", "sizes", "mode"),
    [
        # FLUX.2 [dev]: 64.4 GB transformer, 48 GB Mistral, 0.17 GB VAE.
        (141 * GB, None, (64.4, 48.0, 0.17), "whole"),  # H200
        (80 * GB, ("cuda:1", 80 * GB), (64.4, 48.0, 0.17), "split"),  # two H100s
        (80 * GB, ("cuda:1", 24 * GB), (64.4, 48.0, 0.17), "offload"),  # the second GPU is too small
        (80 * GB, None, (64.4, 48.0, 0.17), "offload"),  # one H100
        # klein 4B: 7.8 GB + 8.0 GB fit a 24 GB GPU; 9B (18.2 + 16.4) does not.
        (24 * GB, None, (7.8, 8.0, 0.17), "whole"),
        (24 * GB, None, (18.2, 16.4, 0.17), "offload"),
    ],
)
def test_placement_rule(gpu: int, second: tuple[str, int] | None, sizes: tuple[float, ...], mode: str) -> None:
    transformer, text_encoder, vae = (int(s * GB) for s in sizes)
    headroom = 8 * GiB if transformer > 60 * GB else 6 * GiB
    placement = choose_placement(
        gpu, transformer=transformer, text_encoder=text_encoder, vae=vae, headroom=headroom, second_gpu=second
    )
    assert placement.mode == mode
    assert (placement.text_device == "cuda:1") is (mode == "split")


def test_offload_below_the_peak_says_it_may_run_out_of_memory() -> None:
    placement = choose_placement(40 * GB, transformer=64 * GB, text_encoder=48 * GB, vae=0, headroom=8 * GiB)
    assert placement.mode == "offload" and "may run out of memory" in placement.reason


class FakeModule:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.device = "cpu"

    def to(self, device: str) -> FakeModule:
        self.device = device
        return self


class FakePipe:
    def __init__(self, **components: Any) -> None:
        self.calls: list[str] = []
        self.transformer = components.get("transformer")
        self.text_encoder = components.get("text_encoder")
        self.vae = components.get("vae")
        self.tokenizer = components.get("tokenizer")

    @property
    def components(self) -> dict[str, Any]:
        return {"transformer": self.transformer, "text_encoder": self.text_encoder, "vae": self.vae, "tokenizer": None}

    def enable_model_cpu_offload(self, device: str) -> None:
        self.calls.append(f"offload:{device}")

    def to(self, device: str) -> FakePipe:
        self.calls.append(f"to:{device}")
        return self

    def register_modules(self, **modules: Any) -> None:
        for name, module in modules.items():
            setattr(self, name, module)

    def set_progress_bar_config(self, **_: Any) -> None:
        pass


@pytest.mark.parametrize(("gpus", "expected"), [((141,), "whole"), ((80, 80), "split"), ((80,), "offload")])
def test_dev_placement_on_cuda(monkeypatch: pytest.MonkeyPatch, gpus: tuple[int, ...], expected: str) -> None:
    import torch

    class Props:
        def __init__(self, gb: int) -> None:
            self.total_memory = gb * GB

    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda d: Props(gpus[d if isinstance(d, int) else (d.index or 0)])
    )
    monkeypatch.setattr(flux2_module, "module_bytes", lambda m: m.nbytes if m is not None else 0)
    pipe = FakePipe(transformer=FakeModule(int(64.4 * GB)), text_encoder=FakeModule(48 * GB), vae=FakeModule(GB // 6))
    predictor = Flux2DevPredictor("unused", device="cuda")
    text_encoder = pipe.text_encoder
    predictor._place_on_cuda(pipe)
    assert predictor.placement is not None and predictor.placement.mode == expected
    assert predictor.offloaded is (expected == "offload")
    assert pipe.calls == (["offload:cuda"] if expected == "offload" else ["to:cuda"])
    if expected == "split":
        assert pipe.text_encoder is None  # the denoising pipeline computes on cuda:0 only
        assert text_encoder is not None and text_encoder.device == "cuda:1"
        assert predictor._text_pipe.text_encoder is text_encoder
    else:
        assert predictor._text_pipe is None and pipe.text_encoder is text_encoder


@pytest.mark.slow
def test_split_text_encoder_gives_the_same_image(tiny_klein: Path, klein: Flux2KleinPredictor, tmp_path: Path) -> None:
    """The ``split`` placement's path (prompt encoded by the text-only pipeline, passed as embeddings), on the CPU."""
    split = Flux2KleinPredictor(str(tiny_klein))
    split.setup()
    split._split_text_encoder(split._pipe, "cpu")
    assert split._pipe.text_encoder is None and split._text_pipe.config.is_distilled
    (a,), _ = run_klein(split, tmp_path / "split", [image_bytes((128, 128))], seed=11, output_format="png")
    (b,), _ = run_klein(klein, tmp_path / "whole", [image_bytes((128, 128))], seed=11, output_format="png")
    assert a.read_bytes() == b.read_bytes()
    assert split.memory_bytes() == klein.memory_bytes()


def test_weights_help(tmp_path: Path) -> None:
    messages = {}
    for cls in (Flux2DevPredictor, Flux2KleinPredictor, Flux2Klein9BPredictor):
        with pytest.raises(WeightsUnavailable) as info:
            cls(str(tmp_path / "missing")).setup()
        messages[cls] = str(info.value)
    assert "FLUXSERVE_FLUX2_DEV_WEIGHTS" in messages[Flux2DevPredictor]
    assert "gated" in messages[Flux2DevPredictor] and "black-forest-labs/FLUX.2-dev" in messages[Flux2DevPredictor]
    assert "not gated" in messages[Flux2KleinPredictor] and "Apache-2.0" in messages[Flux2KleinPredictor]
    assert "FLUXSERVE_FLUX2_KLEIN_4B_WEIGHTS" in messages[Flux2KleinPredictor]
    assert "fluxserve pull black-forest-labs/flux-2-klein-4b" in messages[Flux2KleinPredictor]
    assert "The repo is gated" in messages[Flux2Klein9BPredictor]
    assert "black-forest-labs/FLUX.2-klein-9B" in messages[Flux2Klein9BPredictor]
    assert "FLUXSERVE_FLUX2_KLEIN_9B_WEIGHTS" in messages[Flux2Klein9BPredictor]
