"""GPU pipeline speed: predict_time of the real FLUX predictors with go_fast off (bf16) and on, one table.

Builds each model's pipeline with **random weights** from configs written in code (no hub, no download): full-size
FLUX.1 configs (``reference/flux-models.md`` §4.3) and FLUX.2 configs (:mod:`flux2_configs`, next to this file:
``klein4b`` and ``flux2dev``), or with ``--tiny`` the tiny test configs of :mod:`fluxserve.predictors.tiny` and
:mod:`fluxserve.predictors.tiny_flux2`. Modules are created on the meta device, then ``to_empty`` on the target device
in the serving dtype and initialised deterministically (weights N(0, 0.02), norm scales 1, biases 0); timing does
not depend on weight values. The images are noise: the go_fast-vs-bf16 PSNR measures numerical drift on random
weights, not image quality (that needs the real weights).

The pipeline is handed to the real predictor classes (``FluxSchnellPredictor``, ``FluxDevPredictor``,
``FluxKontextPredictor``, ``Flux2KleinPredictor``, ``Flux2DevPredictor``) through their ``_load`` hook, so ``setup()``
(placement, go_fast build and warm-up) and ``predict()`` (text encoding, denoising, VAE decode, WebP encode to a
file) are exactly what the service runs. One predictor per model serves both go_fast settings, as in the service.

Tokenizers are the tiny ones (CLIP 514 ids, T5 sentencepiece 219 ids; tiny_flux2's byte-level BPEs for Qwen3 and
Mistral, ~340 ids) with the real padding lengths (77 and 256/512 tokens; FLUX.2: 512): every id is below the real
vocab sizes, and padding fixes the sequence lengths, so the encoders do the same work as with the real tokenizers.

FLUX.2 [dev] (32.2 B transformer + 24 B Mistral Small, 105 GiB in bf16) does not fit an 80 GB GPU whole: the
predictor's placement rule (:func:`fluxserve.predictors.flux2.choose_placement`) picks model CPU offload there (and
go_fast is off with offload). The harness applies the same rule before materialising: a model that will not sit
whole on the GPU is materialised in CPU RAM (initialised on the GPU, parameter by parameter, and copied over), so
an H100 host needs ~110 GiB of free RAM for ``flux2dev``. The placement used is printed in the setup facts.

Per row: median and p90 of ``--runs`` predict() calls after ``--warmup`` untimed ones (same seed), peak GPU memory,
the transformer FLOPs of one step (:func:`step_flops`; 74.4 TFLOP at 1024² with 512 text tokens; FLUX.2 klein 4B
34.8 and [dev] 282.5), effective
TFLOP/s (all steps' FLOPs over the predict time, also for forecast steps), the floor (all steps at
``--peak-tflops``, transformer only) and the ratio to it, the steps run in full, dynamo graphs compiled during the
timed runs (must be 0: no recompiles between requests), and for go_fast rows the PSNR / max abs pixel difference
of a PNG against the bf16 PNG at the same seed.

    .venv/bin/python benchmarks/gpu_pipeline.py                              # H100: FLUX.1 models, 1 and 0.25 MP
    .venv/bin/python benchmarks/gpu_pipeline.py --ablate --models dev        # each go_fast step alone
    .venv/bin/python benchmarks/gpu_pipeline.py --models klein4b,flux2dev    # FLUX.2 (flux2dev: 1 MP, offloaded)
    .venv/bin/python benchmarks/gpu_pipeline.py --device cpu --tiny --runs 3 # CPU smoke run, ~30 s on 2 cores

On the CPU, go_fast is a no-op in the service; the harness builds it with ``allow_cpu`` so that the steps that run
on a CPU (fused QKV, VAE channels_last, step cache, First Block Cache) are exercised; compile, fp8 and the
attention backend report why they are off.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fluxserve.catalog.fields import validate_input
from fluxserve.catalog.flux import FLUX_DEV_INPUTS, FLUX_KONTEXT_DEV_INPUTS, FLUX_SCHNELL_INPUTS
from fluxserve.catalog.flux2 import FLUX2_DEV_INPUTS, FLUX2_KLEIN_INPUTS, KLEIN_MEGAPIXELS
from fluxserve.catalog.sizes import CUSTOM, FLUX2_ASPECT_RATIOS, flux2_size, image_size
from fluxserve.predictors.go_fast.options import DEFAULT_STEPS, STEPS, FastOptions, parse_steps
from fluxserve.predictors.tiny import component_configs, make_tokenizers

BENCHMARKS = str(Path(__file__).resolve().parent)
if BENCHMARKS not in sys.path:  # the harness package sits next to this file (see harness/__init__.py)
    sys.path.insert(0, BENCHMARKS)
import flux2_configs  # noqa: E402
from harness import report, stats  # noqa: E402

#: The FLUX.1 models: the default ``--models``.
MODELS = ("schnell", "dev", "kontext")
#: The FLUX.2 models (``--models klein4b,flux2dev``): FLUX.2 [klein] 4B and FLUX.2 [dev].
FLUX2_MODELS = ("klein4b", "flux2dev")
ALL_MODELS = MODELS + FLUX2_MODELS
#: The go_fast family (key of DEFAULT_STEPS) of each model.
FAMILIES = {**{m: m for m in MODELS}, "klein4b": "flux2-klein", "flux2dev": "flux2-dev"}
#: The reference's achievable dense bf16 rate on an H100 (its floors: 0.35 s schnell, 2.64 s dev; FLUX.2: 0.18 s
#: klein 4B, 10.0 s [dev]).
H100_BF16_TFLOPS = 790.0
#: The issue's targets for go_fast at 1024² on one H100 (predict_time, seconds). FLUX.2 [dev] has none: it is
#: reported against its ~10 s bf16 floor (the floor and x floor columns).
TARGETS = {"schnell": 0.35, "dev": 2.3, "kontext": 4.0, "klein4b": 0.3}

# FLUX.1 component configs (reference/flux-models.md §4.3, copies of the HF config.json files).
FULL_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "axes_dims_rope": (16, 56, 56),
}
FULL_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
    "force_upcast": True,
}
FULL_CLIP: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "bos_token_id": 0,
    "eos_token_id": 2,  # legacy: pooled output at argmax(input_ids), which is <|endoftext|> in our tokenizer too
    "pad_token_id": 1,
    "layer_norm_eps": 1e-5,
}
FULL_T5: dict[str, Any] = {
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu",  # T5Config derives dense_act_fn "gelu_new" and the gated FFN from it
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "dropout_rate": 0.0,
}
T5_TOKENS = {"schnell": 256, "dev": 512, "kontext": 512}
#: Text tokens the transformer sees per model (FLUX.2 pipelines pad their prompts to 512).
TEXT_TOKENS = {**T5_TOKENS, "klein4b": 512, "flux2dev": 512}


def full_configs(kind: str) -> dict[str, dict[str, Any]]:
    """The full-size FLUX.1 configs of ``kind``, shaped like :func:`fluxserve.predictors.tiny.component_configs`.

    The scheduler is the tiny pipeline's: its config is the real FLUX.1-``kind`` one."""
    return {
        "transformer": {**FULL_TRANSFORMER, "guidance_embeds": kind != "schnell"},
        "vae": dict(FULL_VAE),
        "text_encoder": dict(FULL_CLIP),
        "text_encoder_2": dict(FULL_T5),
        "scheduler": component_configs(kind)["scheduler"],  # type: ignore[arg-type]
    }


def step_flops(
    transformer: dict[str, Any], img_tokens: int, txt_tokens: int, cond_tokens: int = 0, *, gated_mlp: bool = False
) -> float:
    """FLOPs of one FLUX transformer step (2 per multiply-add), blocks only.

    With width D = heads x head_dim, L = double + single blocks, N tokens and MLP ratio r (the config's
    ``mlp_ratio``; FLUX.1's config has none: 4): every block's linear layers hold (4 + 2r)·D² weights per token
    (q, k, v, out, and an MLP D→rD→D; a double block routes image and text tokens through its two streams, a
    single block fuses QKV with the MLP input and attention-out with the MLP output, the same weights), so
    linear = 2·(4 + 2r)·D²·N·L; attention (QKᵀ and AV) = 4·N²·D·L. FLUX.1 (r = 4): 24·D²·N·L, which gives
    74.4 TFLOP for 1024² (4096 image + 512 text tokens), 69.5 with 256 text tokens (schnell) and 165 for
    Kontext (4096 + 4096 reference + 512): the reference's figures (flux-models.md §0).

    ``gated_mlp``: FLUX.2's SwiGLU MLP (diffusers ``Flux2FeedForward``, and the ``to_qkv_mlp_proj`` of
    ``Flux2ParallelSelfAttention``), whose input projection is D→2rD (gate and value halves): (4 + 3r)·D² per
    token, 13·D² at r = 3. At 1024² with 512 text tokens that gives 34.8 TFLOP for klein 4B (D 3072, 25 blocks)
    and 282.5 for FLUX.2 [dev] (D 6144, 56 blocks): the reference's ≈ 35 and ≈ 282 (flux2-and-replicate-2026.md
    §3). Other sizes use the same formula (not a linear scaling: attention grows with N²).
    """
    width = transformer["num_attention_heads"] * transformer["attention_head_dim"]
    layers = transformer["num_layers"] + transformer["num_single_layers"]
    ratio = float(transformer.get("mlp_ratio", 4.0))
    per_token = 4 + (3 if gated_mlp else 2) * ratio
    tokens = img_tokens + txt_tokens + cond_tokens
    return 2 * per_token * width**2 * tokens * layers + 4 * tokens**2 * width * layers


class BenchContext:
    """A minimal PredictContext: logs in memory, no progress output, never canceled."""

    def __init__(self, output_dir: Path) -> None:
        self._output_dir = output_dir
        self.logs: list[str] = []

    @property
    def output_dir(self) -> Path:
        return self._output_dir

    def log(self, line: str) -> None:
        self.logs.append(line)

    def progress(self, step: int, total: int) -> None:
        pass

    def check_canceled(self) -> None:
        pass

    def set_metric(self, name: str, value: float) -> None:
        pass


def _materialize(module: Any, device: Any, dtype: Any, generator: Any, init_device: Any = None) -> Any:
    """meta → ``to_empty(device)`` in ``dtype``, then a deterministic init; real buffers are kept.

    ``init_device`` (with ``generator`` on it): draw each weight there and copy it to ``device`` (a model kept in
    CPU RAM, initialised on the GPU: the CPU's RNG would take minutes for FLUX.2 [dev]'s 56 B parameters)."""
    import torch

    buffers = {name: b.detach().clone() for name, b in module.named_buffers() if b.device.type != "meta"}
    torch.nn.Module.to(module, dtype=dtype)  # not diffusers' to(), which warns about from_pretrained's dtype option
    for name in getattr(module, "_keep_in_fp32_modules", None) or ():  # e.g. T5's "wo", as from_pretrained does
        for sub_name, sub in module.named_modules():
            if sub_name.split(".")[-1] == name:
                sub.to(dtype=torch.float32)
    module.to_empty(device=device)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim == 1:
                param.fill_(1.0 if name.endswith("weight") else 0.0)  # norm scales 1, biases 0
            else:
                # std 1/sqrt(fan_in): ~0.02 at FLUX's width 3072 (the usual init), and at the tiny widths it keeps
                # activations O(1); 0.02 there shrinks them into float32 denormals, which are ~2x slower on a CPU.
                std = math.prod(param.shape[1:]) ** -0.5
                if init_device is None:
                    param.normal_(0.0, std, generator=generator)
                else:
                    draw = torch.empty(param.shape, dtype=param.dtype, device=init_device)
                    param.copy_(draw.normal_(0.0, std, generator=generator))
        for name, buffer in module.named_buffers():
            if name in buffers:
                buffer.copy_(buffers[name])
    return module.eval().requires_grad_(False)


def build_pipeline(kind: str, *, tiny: bool, device: str, dtype: Any, tokenizer_dir: Path, seed: int = 0) -> Any:
    """A random-weight FLUX.1-``kind`` pipeline (FluxPipeline, or FluxKontextPipeline) on ``device`` in ``dtype``."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    configs = component_configs(kind) if tiny else full_configs(kind)  # type: ignore[arg-type]
    tokenizer, tokenizer_2 = make_tokenizers(tokenizer_dir / kind)
    with init_empty_weights(include_buffers=False):
        transformer = FluxTransformer2DModel(**configs["transformer"])
        vae = AutoencoderKL(**configs["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        text_encoder_2 = T5EncoderModel(T5Config(**configs["text_encoder_2"]))
    generator = torch.Generator(device=device).manual_seed(seed)
    for module in (transformer, vae, text_encoder, text_encoder_2):
        _materialize(module, torch.device(device), dtype, generator)
        if hasattr(module, "tie_weights"):
            # T5's encoder.embed_tokens is the shared embedding: not tied when built on the meta device, and
            # to_empty would untie it anyway (4.76 B parameters, not 4.89 B).
            module.tie_weights()
    pipeline_class: Any = FluxKontextPipeline if kind == "kontext" else FluxPipeline
    return pipeline_class(
        scheduler=FlowMatchEulerDiscreteScheduler(**configs["scheduler"]),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )


def build_flux2_pipeline(model: str, *, tiny: bool, device: str, dtype: Any, headroom: int, seed: int = 0) -> Any:
    """A random-weight FLUX.2 pipeline (``Flux2KleinPipeline`` for ``klein4b``, ``Flux2Pipeline`` for ``flux2dev``)
    in ``dtype``: on ``device`` when the predictor's placement rule will keep it whole there, else in CPU RAM
    (initialised on ``device``) for the predictor to offload or split."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Pipeline,
        Flux2Transformer2DModel,
    )

    from fluxserve.predictors.flux2 import choose_placement, module_bytes
    from fluxserve.predictors.tiny_flux2 import make_tokenizer

    configs = flux2_configs.configs(model, tiny=tiny)
    tokenizer = make_tokenizer(flux2_configs.TINY_KIND[model])  # type: ignore[arg-type]
    with init_empty_weights(include_buffers=False):
        transformer = Flux2Transformer2DModel(**configs["transformer"])
        vae = AutoencoderKLFlux2(**configs["vae"])
        text_encoder = flux2_configs.text_encoder(model, configs, tokenizer)
    text_encoder.tie_weights()  # Qwen3's tied embeddings, counted once below
    modules = (transformer, vae, text_encoder)
    home = torch.device(device)
    if home.type == "cuda":
        for module in modules:
            torch.nn.Module.to(module, dtype=dtype)  # on meta: sizes in the serving dtype
        placement = choose_placement(
            torch.cuda.get_device_properties(home).total_memory,
            transformer=module_bytes(transformer),
            text_encoder=module_bytes(text_encoder),
            vae=module_bytes(vae),
            headroom=headroom,
        )
        if placement.mode != "whole":
            home = torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(seed)
    init_device = None if home.type == torch.device(device).type else device  # draw on the GPU, keep in RAM
    for module in modules:
        _materialize(module, home, dtype, generator, init_device=init_device)
        if hasattr(module, "tie_weights"):
            module.tie_weights()  # to_empty unties them
    scheduler = FlowMatchEulerDiscreteScheduler(**configs["scheduler"])
    components = {"scheduler": scheduler, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}
    if model == "klein4b":
        return Flux2KleinPipeline(**components, transformer=transformer, is_distilled=True)
    return Flux2Pipeline(**components, transformer=transformer)


def make_predictor(kind: str, args: argparse.Namespace, options: FastOptions, tokenizer_dir: Path) -> Any:
    """The real predictor class of ``kind`` whose ``_load`` builds the random-weight pipeline."""
    from fluxserve.predictors.flux_dev import FluxDevPredictor
    from fluxserve.predictors.flux_kontext import FluxKontextPredictor
    from fluxserve.predictors.flux_schnell import FluxSchnellPredictor

    if kind in FLUX2_MODELS:
        from fluxserve.predictors.flux2 import Flux2DevPredictor, Flux2KleinPredictor

        flux2: Any = Flux2KleinPredictor if kind == "klein4b" else Flux2DevPredictor
        size = "tiny" if args.tiny else "full size"
        predictor = flux2(weights=f"random {flux2_configs.LABELS[kind]} ({size})", device=args.device)
        predictor.fast_options = options
        steps = args.schnell_steps if kind == "klein4b" else args.steps
        if steps is not None:
            predictor.default_steps = steps  # FLUX.2 has no steps input: the predictor's own count
        predictor._load = lambda dtype: build_flux2_pipeline(
            kind, tiny=args.tiny, device=args.device, dtype=dtype, headroom=predictor.gpu_headroom_bytes
        )
        return predictor
    cls: Any = {"schnell": FluxSchnellPredictor, "dev": FluxDevPredictor, "kontext": FluxKontextPredictor}[kind]
    predictor = cls(weights=f"random FLUX.1-{kind} ({'tiny' if args.tiny else 'full size'})", device=args.device)
    predictor.fast_options = options
    predictor._load = lambda dtype: build_pipeline(
        kind, tiny=args.tiny, device=args.device, dtype=dtype, tokenizer_dir=tokenizer_dir
    )
    return predictor


def request(kind: str, megapixels: str, go_fast: bool, args: argparse.Namespace, fmt: str = "webp") -> dict[str, Any]:
    """Validated inputs for one 1:1 prediction, defaults filled in as the worker does (Kontext: a gradient image).

    FLUX.2: text to image; klein at ``output_megapixels`` ``megapixels``, [dev] at its fixed 1 MP; their steps
    are the predictor's ``default_steps`` (no input sets them)."""
    if kind in FLUX2_MODELS:
        raw = {"prompt": "a cool dog wearing sunglasses", "seed": 42, "go_fast": go_fast, "output_format": fmt}
        if kind == "klein4b":
            raw["output_megapixels"] = megapixels
        validation = validate_input(FLUX2_KLEIN_INPUTS if kind == "klein4b" else FLUX2_DEV_INPUTS, raw)
        if validation.errors:
            raise SystemExit(f"invalid inputs for {kind}: {validation.errors}")
        return dict(validation.values)
    fields = {"schnell": FLUX_SCHNELL_INPUTS, "dev": FLUX_DEV_INPUTS, "kontext": FLUX_KONTEXT_DEV_INPUTS}[kind]
    raw: dict[str, Any] = {"prompt": "a cool dog wearing sunglasses", "seed": 42, "go_fast": go_fast}
    raw["output_format"] = fmt
    steps = args.schnell_steps if kind == "schnell" else args.steps
    if steps is not None:
        raw["num_inference_steps"] = steps
    if kind == "kontext":
        raw["input_image"] = "https://example.com/input.png"  # replaced by the bytes below, as the worker does
    else:
        raw["megapixels"] = megapixels
    validation = validate_input(fields, raw)
    if validation.errors:
        raise SystemExit(f"invalid inputs for {kind}: {validation.errors}")
    values = dict(validation.values)
    if kind == "kontext":
        gradient = Image.linear_gradient("L").resize((1024, 1024))
        buffer = io.BytesIO()
        Image.merge("RGB", (gradient, gradient.rotate(90), gradient.rotate(180))).save(buffer, format="PNG")
        values["input_image"] = buffer.getvalue()
    return values


@dataclass
class Row:
    """One line of the table."""

    model: str
    megapixels: str
    go_fast: str
    steps: int
    full_steps: int
    times: list[float] = field(default_factory=list)
    median_s: float = math.nan
    p90_s: float = math.nan
    peak_gib: float | None = None
    tflop_per_step: float = math.nan
    tflops: float = math.nan
    floor_s: float | None = None
    x_floor: float | None = None
    recompiles: int = 0
    psnr_db: float | None = None
    max_abs_diff: int | None = None
    go_fast_log: str = ""


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_predict(predictor: Any, inputs: dict[str, Any], workdir: Path) -> tuple[float, Any, BenchContext]:
    """One predict() into a fresh directory: (seconds, output, context)."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    ctx = BenchContext(out)
    _sync(predictor.device)
    start = time.perf_counter()
    output = predictor.predict(inputs, ctx)
    _sync(predictor.device)
    return time.perf_counter() - start, output, ctx


def decoded(path: Any) -> np.ndarray:
    """The RGB pixels of one output file."""
    first = path[0] if isinstance(path, list) else path
    with Image.open(first) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """(PSNR in dB, max abs difference) of two 8-bit images."""
    return stats.psnr_db(a, b), int(np.max(np.abs(a - b)))


def measure(
    predictor: Any, kind: str, mp: str, settings: list[tuple[str, bool]], args: argparse.Namespace, workdir: Path
) -> list[Row]:
    """Time one (model, size) cell for each ``(label, go_fast)`` setting, interleaving the settings run by run so
    that drift (clocks, heat, a busy machine) falls on all of them alike."""
    import torch

    from fluxserve.predictors.go_fast.step_cache import compute_schedule

    on_cuda = args.device.startswith("cuda")
    fast = predictor._fast
    cells = []
    for label, go_fast in settings:
        inputs = request(kind, mp, go_fast, args)
        steps = int(inputs.get("num_inference_steps") or predictor.default_steps)  # FLUX.2: the predictor's
        cached = go_fast and fast is not None and fast.available and fast.step_cache is not None
        cells.append((Row(kind, mp, label, steps, sum(compute_schedule(steps)) if cached else steps), inputs))
    for _ in range(args.warmup):
        for _row, inputs in cells:
            run_predict(predictor, inputs, workdir)
    for _ in range(args.runs):
        for row, inputs in cells:
            if on_cuda:
                torch.cuda.reset_peak_memory_stats()
            graphs = _graphs_compiled()
            seconds, _, ctx = run_predict(predictor, inputs, workdir)
            row.recompiles += _graphs_compiled() - graphs
            row.times.append(seconds)
            row.go_fast_log = next((line for line in ctx.logs if line.startswith("go_fast")), "")
            if on_cuda:
                row.peak_gib = max(row.peak_gib or 0.0, torch.cuda.max_memory_allocated() / 1024**3)
    if kind in FLUX2_MODELS:
        width, height = flux2_size("1:1", float(mp), multiple=predictor.size_multiple)
    else:
        width, height = (1024, 1024) if kind == "kontext" else image_size("1:1", mp)
    img_tokens = (width // 16) * (height // 16)
    config = predictor._pipe.transformer.config
    cond = img_tokens if kind == "kontext" else 0
    flops = step_flops(config, img_tokens, TEXT_TOKENS[kind], cond, gated_mlp=kind in FLUX2_MODELS)
    for row, _inputs in cells:
        row.median_s = statistics.median(row.times)
        row.p90_s = stats.percentile_linear(row.times, 90)
        row.tflop_per_step = flops / 1e12
        row.tflops = flops * row.steps / row.median_s / 1e12
        if args.peak_tflops:
            row.floor_s = flops * row.steps / (args.peak_tflops * 1e12)
            row.x_floor = row.median_s / row.floor_s
    return [row for row, _inputs in cells]


def image_drift(
    predictor: Any, kind: str, mp: str, args: argparse.Namespace, workdir: Path, ref: dict[Any, Any]
) -> tuple[float, int]:
    """PSNR and max abs diff of go_fast's PNG against bf16's, same seed (the bf16 PNG is made once per cell)."""
    key = (kind, mp)
    if key not in ref:
        _, output, _ = run_predict(predictor, request(kind, mp, False, args, "png"), workdir)
        ref[key] = decoded(output)
    _, output, _ = run_predict(predictor, request(kind, mp, True, args, "png"), workdir)
    return compare(ref[key], decoded(output))


def shape_check(predictor: Any, kind: str, args: argparse.Namespace, workdir: Path) -> tuple[int, int]:
    """go_fast requests at every served shape (2 steps each; steps do not change shapes) after the warm-up:
    (shapes run, dynamo graphs compiled meanwhile). Anything but 0 graphs means a request paid for a compile.

    klein 4B: every aspect ratio at every ``output_megapixels``; FLUX.2 [dev]: every aspect ratio at 1 MP, and the
    extremes of ``custom`` (256² and 1440²), which its warm-up does not cover."""
    from fluxserve.catalog.sizes import ASPECT_RATIOS, PREFERRED_KONTEXT_RESOLUTIONS

    graphs = _graphs_compiled()
    shapes = 0
    if kind in FLUX2_MODELS:
        cases: list[tuple[str, dict[str, Any]]] = []
        for mp in KLEIN_MEGAPIXELS if kind == "klein4b" else ("1",):
            cases += [(mp, {"aspect_ratio": ratio}) for ratio in FLUX2_ASPECT_RATIOS]
        if kind == "flux2dev":
            cases += [("1", {"aspect_ratio": CUSTOM, "width": side, "height": side}) for side in (256, 1440)]
        saved, predictor.default_steps = predictor.default_steps, 2
        try:
            for mp, extra in cases:
                run_predict(predictor, {**request(kind, mp, True, args), **extra}, workdir)
                shapes += 1
        finally:
            predictor.default_steps = saved
    elif kind == "kontext":
        for width, height in PREFERRED_KONTEXT_RESOLUTIONS:
            inputs = request(kind, "1", True, argparse.Namespace(**{**vars(args), "steps": 4}))
            buffer = io.BytesIO()
            Image.new("RGB", (width, height), (90, 120, 150)).save(buffer, format="PNG")
            inputs["input_image"] = buffer.getvalue()
            run_predict(predictor, inputs, workdir)
            shapes += 1
    else:
        quick = argparse.Namespace(**{**vars(args), "steps": 2, "schnell_steps": 2})
        for mp in ("1", "0.25"):
            for ratio in ASPECT_RATIOS:
                inputs = request(kind, mp, True, quick)
                inputs["aspect_ratio"] = ratio
                run_predict(predictor, inputs, workdir)
                shapes += 1
    return shapes, _graphs_compiled() - graphs


@contextlib.contextmanager
def fresh_fast(predictor: Any, options: FastOptions) -> Iterator[dict[str, Any]]:
    """Rebuild the predictor's go_fast with ``options`` on the already loaded pipeline; yields setup facts."""
    import torch

    if predictor._fast is not None:
        predictor._fast.close()
    predictor._fast = None
    gc.collect()
    if predictor.on_cuda:
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    predictor.fast_options = options
    start = time.perf_counter()
    predictor._setup_fast(predictor._pipe)
    yield setup_facts(predictor, time.perf_counter() - start)


def setup_facts(predictor: Any, seconds: float) -> dict[str, Any]:
    """What building go_fast cost and produced."""
    fast = predictor._fast
    return {
        "go_fast_setup_s": seconds,
        "available": bool(fast and fast.available),
        "reason": fast.reason if fast else None,
        "active": fast.active if fast else [],
        "skipped": fast.skipped() if fast else {},
        "build_s": fast.setup_seconds if fast else None,
        "warmup_s": fast.warmup_seconds if fast else None,
        "compile_cache_hit": fast.compile_cache_hit if fast else None,
    }


def placement(predictor: Any) -> str:
    """Where the loaded modules sit: FLUX.2's placement rule and its reason, FLUX.1's offload-below-48-GiB rule."""
    if not predictor.on_cuda:
        return f"all on {predictor.device} ({predictor.dtype_name})"
    chosen = getattr(predictor, "placement", None)
    if chosen is not None:
        return f"{chosen.mode}: {chosen.reason}"
    return "offload: model CPU offload (GPU < 48 GiB)" if predictor.offloaded else "whole: everything on the GPU"


def print_table(rows: list[Row], args: argparse.Namespace, facts: dict[str, Any]) -> None:
    """The one table, then each model's go_fast setup and the targets."""
    header = ["model", "MP", "go_fast", "steps", "full", "median s", "p90 s", "peak GiB", "TFLOP/st", "TFLOP/s"]
    header += ["floor s", "x floor", "recomp", "PSNR dB", "max|d|"]
    fmt = report.fmt
    cells = [
        [
            *(r.model, r.megapixels, r.go_fast, str(r.steps), str(r.full_steps)),
            *(f"{r.median_s:.3f}", f"{r.p90_s:.3f}", fmt(r.peak_gib, ".1f")),
            *(fmt(r.tflop_per_step, ".3g"), fmt(r.tflops, ".3g"), fmt(r.floor_s, ".3f"), fmt(r.x_floor, ".2f")),
            *(str(r.recompiles), fmt(r.psnr_db, ".1f"), fmt(r.max_abs_diff, "d")),
        ]
        for r in rows
    ]
    widths = [8, 4, 20, 5, 4, 9, 8, 8, 8, 8, 8, 7, 6, 8, 6]
    print(report.table(header, cells, align="lrl" + "r" * 12, widths=widths, sep=" ", rule="full"))
    print()
    for name, fact in facts.items():
        active = ", ".join(fact["active"]) or "none"
        skipped = "; ".join(f"{k}: {v}" for k, v in fact["skipped"].items())
        cache = {None: "", True: ", compile cache hit", False: ", compile cache miss"}[fact["compile_cache_hit"]]
        line = (
            f"{name}: base setup {fact['setup_s']:.1f} s; go_fast "
            + (
                f"[{active}] built in {fact['build_s']:.1f} s, warm-up {fact['warmup_s']:.1f} s{cache}"
                if fact["available"]
                else f"unavailable ({fact['reason']})"
            )
            + (f"; off: {skipped}" if skipped else "")
        )
        if "shape_check" in fact:
            shapes, graphs = fact["shape_check"]
            line += f"; shape check: {shapes} served shapes after warm-up compiled {graphs} new graph(s)"
        if "not_run" in fact:
            line += f"; {fact['not_run']}"
        print(line)
        if "placement" in fact:
            print(f"  placement: {fact['placement']}")
    print(
        "\nfloor = steps x TFLOP/step / --peak-tflops (transformer only); TFLOP/s counts every step's FLOPs, "
        "forecast steps too; full = steps computed in full; recomp = dynamo graphs compiled during timed runs."
    )
    if not args.tiny and args.device.startswith("cuda"):
        for model, target in TARGETS.items():
            hits = [r for r in rows if r.model == model and r.megapixels == "1" and r.go_fast == "on"]
            if hits:
                verdict = "meets" if hits[0].median_s <= target else "misses"
                print(f"target {model} 1 MP go_fast <= {target} s: {hits[0].median_s:.3f} s ({verdict})")


def main(argv: list[str] | None = None) -> int:
    """Parse options, build each model once, measure, print the table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny test configs instead of full-size ones")
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma list of {', '.join(ALL_MODELS)} (default: the FLUX.1 ones, {','.join(MODELS)})",
    )
    parser.add_argument(
        "--sizes", default="1,0.25", help="megapixels, comma list of 1 and 0.25 (kontext, flux2dev: 1 only)"
    )
    parser.add_argument("--runs", type=int, default=10, help="timed predictions per row (default 10, at least 1)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed predictions before each row")
    parser.add_argument("--steps", type=int, help="steps of dev, kontext and flux2dev (default 28)")
    parser.add_argument("--schnell-steps", type=int, help="steps of the 4-step models schnell and klein4b (default 4)")
    parser.add_argument("--go-fast", choices=("both", "on", "off"), default="both")
    parser.add_argument("--fast-steps", default="default", help=f"go_fast steps: default, none or from {STEPS}")
    parser.add_argument("--ablate", action="store_true", help="also rows with each go_fast step alone")
    parser.add_argument("--warmup-scope", choices=("all", "one", "none"), default="all", help="go_fast warm-up")
    parser.add_argument("--compile-mode", help="torch.compile mode (default: inductor's default)")
    parser.add_argument("--compile-dynamic", choices=("auto", "true", "false"), default="auto")
    parser.add_argument("--attention", default="_native_cudnn", help="diffusers attention backend for go_fast")
    parser.add_argument(
        "--compile-cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "fluxserve-gpu-bench-compile-cache",
        help="compile artifacts dir; run twice to see a warm start",
    )
    parser.add_argument("--peak-tflops", type=float, help=f"for the floor; default {H100_BF16_TFLOPS} on CUDA")
    parser.add_argument(
        "--shape-check", action="store_true", help="then a go_fast request at every served shape: any recompiles?"
    )
    parser.add_argument("--no-drift", action="store_true", help="skip the go_fast-vs-bf16 image comparison")
    parser.add_argument("--json", type=Path, help="write rows and setup facts here")
    args = parser.parse_args(argv)

    import diffusers
    import torch

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := [m for m in models if m not in ALL_MODELS]:
        parser.error(f"unknown model(s) {unknown}; choose from {ALL_MODELS}")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if unknown := [s for s in sizes if s not in ("1", "0.25")]:
        parser.error(f"unknown size(s) {unknown}; choose from 1, 0.25")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA GPU (use --device cpu --tiny on a CPU)")
    if args.peak_tflops is None and args.device.startswith("cuda"):
        args.peak_tflops = H100_BF16_TFLOPS
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    fast_steps = parse_steps(args.fast_steps)
    dynamic = {"auto": None, "true": True, "false": False}[args.compile_dynamic]

    def options(steps: tuple[str, ...] | None) -> FastOptions:
        return FastOptions(
            steps=steps,
            attention_backend=args.attention,
            compile_mode=args.compile_mode,
            compile_dynamic=dynamic,
            warmup=args.warmup_scope,
            cache_dir=args.compile_cache,
            allow_cpu=not args.device.startswith("cuda"),
        )

    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(
        f"# {'tiny' if args.tiny else 'full-size'} random-weight FLUX on {args.device} ({gpu}); torch "
        f"{torch.__version__}, diffusers {diffusers.__version__}, {torch.get_num_threads()} CPU threads; "
        f"runs {args.runs}, warm-up {args.warmup}"
    )
    rows: list[Row] = []
    facts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fluxserve-gpu-bench-") as tmp:
        workdir = Path(tmp)
        for kind in models:
            start = time.perf_counter()
            predictor = make_predictor(kind, args, options(fast_steps), workdir / "tokenizers")
            predictor.setup()
            fact = {"setup_s": time.perf_counter() - start, **setup_facts(predictor, math.nan)}
            fact["placement"] = placement(predictor)
            facts[kind] = fact
            ref: dict[Any, Any] = {}
            kind_sizes = ["1"] if kind in ("kontext", "flux2dev") else sizes
            for mp in kind_sizes:
                settings = [("off (bf16)", False), ("on", True)]
                settings = [x for x in settings if args.go_fast == "both" or (args.go_fast == "on") == x[1]]
                for row in measure(predictor, kind, mp, settings, args, workdir):
                    if row.go_fast == "on" and not args.no_drift:
                        row.psnr_db, row.max_abs_diff = image_drift(predictor, kind, mp, args, workdir, ref)
                    rows.append(row)
                print(f"  ... {kind} {mp} MP done", file=sys.stderr, flush=True)
            if (args.shape_check or args.ablate) and not fact["available"]:
                fact["not_run"] = "--shape-check and --ablate not run: go_fast is unavailable"
            elif args.shape_check and args.go_fast != "off":
                fact["shape_check"] = shape_check(predictor, kind, args, workdir)
            if args.ablate and fact["available"]:
                for step in DEFAULT_STEPS[FAMILIES[kind]]:
                    with fresh_fast(predictor, options((step,))) as step_fact:
                        facts[f"{kind} [{step}]"] = {"setup_s": step_fact["go_fast_setup_s"], **step_fact}
                        for mp in kind_sizes:
                            (row,) = measure(predictor, kind, mp, [(f"on [{step} only]", True)], args, workdir)
                            if not args.no_drift:
                                row.psnr_db, row.max_abs_diff = image_drift(predictor, kind, mp, args, workdir, ref)
                            rows.append(row)
                    print(f"  ... {kind} [{step}] done", file=sys.stderr, flush=True)
            if predictor._fast is not None:
                predictor._fast.close()
            del predictor
            gc.collect()
            if args.device.startswith("cuda"):
                torch._dynamo.reset()
                torch.cuda.empty_cache()
    print_table(rows, args, facts)
    if args.json:
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": [asdict(r) for r in rows]}
        report.write_json(args.json, {**payload, "setup": facts})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
