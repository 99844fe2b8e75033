"""go_fast: what a request with ``go_fast: true`` runs with on a CUDA GPU. Each optimisation is a named step that
can be switched on or off alone, so ``benchmarks/gpu_pipeline.py`` can measure what each one buys.

**One process serves both settings.** ``go_fast: false`` keeps Replicate's meaning, "run in original bf16": it
runs the pipeline exactly as loaded (eager, bf16, default attention), never touched by anything here. ``go_fast:
true`` runs a second pipeline object that shares the text encoders and tokenizers with the first and has

* its own transformer when any step changes the transformer's modules (fused QKV, fp8, attention backend,
  compile). It is copied block by block and each block is converted before the next is copied, so building it
  never needs a second full bf16 copy in memory: with fp8 the copy costs 14.2 GiB (fp8 block linears, the
  adaLN modulation linears kept in bf16), without fp8 as much as the original (22.2 GiB);
* its own VAE copy (~170 MB) for the ``vae`` step;
* a :class:`~fluxserve.predictors.step_cache.StepCache` switched on per call (its schedule depends on the
  request's step count) for the 28-step models.

This mirrors cog-flux, whose fp8 model is a second transformer sharing T5/CLIP/AE with the bf16 one. go_fast
needs the whole model on the GPU: with model CPU offload (GPUs under 48 GiB) it is off, with the reason logged.

**Steps** (:data:`STEPS`; defaults per model in :data:`DEFAULT_STEPS`):

``fused_qkv``   one GEMM for q, k and v (and for the text stream's), diffusers' ``fuse_projections``; lossless.
``fp8``         torchao row-wise dynamic float8 (``Float8DynamicActivationFloat8WeightConfig(PerRow())``) on the
                blocks' linear layers, not the adaLN modulation ones; CUDA compute capability 8.9+ and torchao.
``attention``   diffusers' attention backend (default ``_native_cudnn``, cuDNN SDPA as cog-flux uses).
``compile``     regional ``torch.compile`` of the repeated blocks (``compile_repeated_blocks``, fullgraph), with
                flux-fast's inductor flags; compile artifacts cached on disk (inductor cache + mega-cache file).
``vae``         the VAE in channels_last with a compiled ``decode``.
``step_cache``  TaylorSeer-style forecasting of skipped steps, Replicate's Kontext schedule (13 of 28 in full).
``fbcache``     diffusers' First Block Cache (adaptive; one host sync per step; not combinable with ``compile``).

Every step checks what it needs and, when it cannot run, is skipped with a reason that the setup log and each
go_fast request's log show. On the CPU go_fast does nothing (the predictors say so in the prediction logs) unless
``allow_cpu`` is set, which tests and the CPU benchmark use to run the steps that work there.

Settings come from the environment (:meth:`FastOptions.from_env`); torch, diffusers and torchao are imported
inside functions only, so importing this module never imports torch.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxserve.predictors.base import summarize

logger = logging.getLogger(__name__)

STEPS: tuple[str, ...] = ("fused_qkv", "fp8", "attention", "compile", "vae", "step_cache", "fbcache")
_CORE = ("fused_qkv", "fp8", "attention", "compile", "vae")
#: What go_fast turns on when ``FLUXSERVE_GO_FAST_STEPS`` is unset. Schnell runs 4 steps: no step caching.
#: To be confirmed on an H100 with benchmarks/gpu_pipeline.py --ablate (each step must pay for itself).
DEFAULT_STEPS: dict[str, tuple[str, ...]] = {
    "schnell": _CORE,
    "dev": (*_CORE, "step_cache"),
    "kontext": (*_CORE, "step_cache"),
}
#: Steps that change the transformer's modules, and so need go_fast's own copy of it.
_TRANSFORMER_STEPS = frozenset({"fused_qkv", "fp8", "attention", "compile"})
#: Free GPU memory to keep after building the go_fast transformer (activations at 1024² and Kontext's 2x tokens).
_HEADROOM_BYTES = 6 * 1024**3
#: Statically shaped compiles need one graph per served shape (22 for schnell/dev, 17+ for Kontext).
_RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class FastOptions:
    """How go_fast is built. ``steps=None`` means the model's :data:`DEFAULT_STEPS`."""

    steps: tuple[str, ...] | None = None
    #: A diffusers ``AttentionBackendName`` value (``_native_cudnn``, ``_flash_3``, ``native``, ...).
    attention_backend: str = "_native_cudnn"
    #: ``torch.compile`` mode: None (default), ``max-autotune``, ``max-autotune-no-cudagraphs``, ``reduce-overhead``.
    compile_mode: str | None = None
    #: ``torch.compile(dynamic=...)``: None lets dynamo go dynamic on the second shape it sees (the first, 1:1 at
    #: 1 MP, keeps a static graph); True compiles one dynamic graph; False one static graph per shape.
    compile_dynamic: bool | None = None
    #: Taylor order of the step cache (1: linear extrapolation).
    taylor_order: int = 1
    #: First Block Cache threshold (ParaAttention uses 0.08-0.12 for FLUX.1-dev).
    fbcache_threshold: float = 0.08
    #: Shapes run once at setup: ``all`` served shapes, ``one`` (1:1 at 1 MP) or ``none``.
    warmup: str = "all"
    #: Where compile artifacts are kept; None: ``<data dir>/compile-cache``.
    cache_dir: Path | None = None
    #: Build go_fast on the CPU too (tests and the CPU benchmark only; in service, go_fast on CPU is a no-op).
    allow_cpu: bool = False

    def steps_for(self, family: str) -> tuple[str, ...]:
        """The steps to try for model ``family`` (``schnell``, ``dev`` or ``kontext``)."""
        return self.steps if self.steps is not None else DEFAULT_STEPS[family]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FastOptions:
        """Options from ``FLUXSERVE_GO_FAST_*`` variables (unset ones keep the defaults above).

        ``FLUXSERVE_GO_FAST_STEPS`` (``default``, ``none`` or a comma list of :data:`STEPS`),
        ``FLUXSERVE_GO_FAST_ATTENTION``, ``FLUXSERVE_GO_FAST_COMPILE_MODE`` (``default`` = None),
        ``FLUXSERVE_GO_FAST_COMPILE_DYNAMIC`` (``auto``/``true``/``false``), ``FLUXSERVE_GO_FAST_TAYLOR_ORDER``,
        ``FLUXSERVE_GO_FAST_FBCACHE_THRESHOLD``, ``FLUXSERVE_GO_FAST_WARMUP`` (``all``/``one``/``none``),
        ``FLUXSERVE_COMPILE_CACHE_DIR`` and ``FLUXSERVE_GO_FAST_ON_CPU`` (``1`` for tests). Raises ValueError on
        a value it cannot use, naming the variable.
        """
        env = os.environ if environ is None else environ
        mode = env.get("FLUXSERVE_GO_FAST_COMPILE_MODE", "default").strip()
        dynamic = env.get("FLUXSERVE_GO_FAST_COMPILE_DYNAMIC", "auto").strip().lower()
        if dynamic not in ("auto", "true", "false", "1", "0"):
            raise ValueError(f"FLUXSERVE_GO_FAST_COMPILE_DYNAMIC must be auto, true or false, not {dynamic!r}")
        warmup = env.get("FLUXSERVE_GO_FAST_WARMUP", "all").strip().lower()
        if warmup not in ("all", "one", "none"):
            raise ValueError(f"FLUXSERVE_GO_FAST_WARMUP must be all, one or none, not {warmup!r}")
        cache_dir = env.get("FLUXSERVE_COMPILE_CACHE_DIR")
        return cls(
            steps=parse_steps(env.get("FLUXSERVE_GO_FAST_STEPS", "default")),
            attention_backend=env.get("FLUXSERVE_GO_FAST_ATTENTION", "_native_cudnn").strip(),
            compile_mode=None if mode in ("", "default") else mode,
            compile_dynamic=None if dynamic == "auto" else dynamic in ("true", "1"),
            taylor_order=int(env.get("FLUXSERVE_GO_FAST_TAYLOR_ORDER", "1")),
            fbcache_threshold=float(env.get("FLUXSERVE_GO_FAST_FBCACHE_THRESHOLD", "0.08")),
            warmup=warmup,
            cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
            allow_cpu=env.get("FLUXSERVE_GO_FAST_ON_CPU", "").strip().lower() in ("1", "true", "yes"),
        )


def parse_steps(text: str) -> tuple[str, ...] | None:
    """``default`` → None (the model's defaults), ``none`` → (), else a comma list of names from :data:`STEPS`."""
    text = text.strip().lower()
    if text in ("", "default"):
        return None
    if text == "none":
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise ValueError(f"FLUXSERVE_GO_FAST_STEPS: unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
    return names


def default_cache_dir() -> Path:
    """``<FLUXSERVE_DATA_DIR or the default data dir>/compile-cache``."""
    from fluxserve.config import Settings

    return Settings().data_dir / "compile-cache"


@dataclass
class StepResult:
    """One step's fate: on, with what it does, or off, with why."""

    name: str
    active: bool
    detail: str


@dataclass
class FastPath:
    """The go_fast pipeline of one predictor (or why there is none) and the steps it runs with."""

    pipe: Any = None
    reason: str | None = None
    results: list[StepResult] = field(default_factory=list)
    step_cache: Any = None
    fbcache_threshold: float | None = None
    on_cpu: bool = False
    setup_seconds: float = 0.0
    #: The compile mega-cache file (None: compile is off) and whether it was found and loaded at setup.
    megacache: Path | None = None
    compile_cache_hit: bool | None = None
    warmup_summary: str = ""
    warmup_seconds: float = 0.0

    @property
    def available(self) -> bool:
        """Whether go_fast requests run on :attr:`pipe`."""
        return self.pipe is not None

    @property
    def active(self) -> list[str]:
        """Names of the steps that are on."""
        return [r.name for r in self.results if r.active]

    def skipped(self) -> dict[str, str]:
        """Steps that were asked for but are off, with the reason."""
        return {r.name: r.detail for r in self.results if not r.active}

    def close(self) -> None:
        """Detach from the shared modules (the step cache's forward wrapper) and drop the go_fast pipeline."""
        if self.step_cache is not None:
            self.step_cache.remove()
            self.step_cache = None
        self.pipe = None
        self.reason = "closed"

    def disable(self, reason: str) -> None:
        """Stop serving go_fast (e.g. the warm-up failed); requests then run the bf16 pipeline."""
        self.pipe = None
        self.reason = reason
        logger.warning("go_fast disabled: %s", reason)

    def describe(self, steps: int | None = None) -> str:
        """The prediction log line: what this go_fast request runs with (and what is off, and why)."""
        if not self.available:
            return f"go_fast is not available ({self.reason})"
        parts = []
        for r in self.results:
            if not r.active:
                continue
            if r.name == "step_cache" and steps is not None:
                from fluxserve.predictors.step_cache import compute_schedule

                full = sum(compute_schedule(steps))
                parts.append(f"{r.detail}: {full} of {steps} steps computed in full")
            else:
                parts.append(r.detail)
        line = "go_fast: " + ("; ".join(parts) if parts else "no optimisation is on")
        skipped = self.skipped()
        if skipped:
            line += " (off: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")"
        return line

    @contextlib.contextmanager
    def call(self, steps: int) -> Iterator[None]:
        """Wrap one go_fast pipeline call of ``steps`` denoising steps (switches the per-call caches on and off)."""
        with contextlib.ExitStack() as stack:
            if self.step_cache is not None:
                stack.enter_context(self.step_cache.run(steps))
            if self.fbcache_threshold is not None:
                from diffusers.hooks.first_block_cache import FirstBlockCacheConfig

                transformer = self.pipe.transformer
                transformer.enable_cache(FirstBlockCacheConfig(threshold=self.fbcache_threshold))
                stack.callback(transformer.disable_cache)
            yield

    def warm_up(self, calls: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Run the go_fast pipeline once per ``(steps, kwargs)`` so that compiling and kernel selection happen now,
        not in a user's request; a failure disables go_fast with the reason (the bf16 path still serves)."""
        import torch

        start = time.perf_counter()
        try:
            with torch.inference_mode():
                for steps, kwargs in calls:
                    with self.call(steps):
                        self.pipe(num_inference_steps=steps, **kwargs)
        except Exception as exc:
            self.disable(f"warm-up failed: {summarize(exc)}")
            return
        self.warmup_seconds = time.perf_counter() - start
        self.warmup_summary = f"warmed {len(calls)} shape(s) in {self.warmup_seconds:.1f} s"
        if self.megacache is not None and not self.compile_cache_hit:
            try:
                if save_megacache(self.megacache):
                    self.warmup_summary += f"; compile cache saved to {self.megacache}"
            except OSError as exc:
                logger.warning("Could not save the compile cache %s: %s", self.megacache, exc)


def prepare(pipe: Any, *, family: str, on_cuda: bool, offloaded: bool, options: FastOptions) -> FastPath:
    """Build the go_fast pipeline for the loaded ``pipe`` (placed on its device) of model ``family``."""
    start = time.perf_counter()
    if not on_cuda and not options.allow_cpu:
        return FastPath(reason="no CUDA GPU; go_fast has no effect on CPU", on_cpu=True)
    if offloaded:
        return FastPath(reason="model CPU offload is on (GPU under 48 GiB); go_fast needs the whole model on the GPU")
    wanted = options.steps_for(family)
    path = FastPath(on_cpu=not on_cuda)
    results: dict[str, StepResult] = {}

    def skip(name: str, why: str) -> None:
        results[name] = StepResult(name, False, why)

    fp8_config = None
    if "fp8" in wanted:
        fp8_config, why_not = _fp8_config(pipe, on_cuda)
        if fp8_config is None:
            skip("fp8", why_not)
    if "attention" in wanted and not on_cuda:
        skip("attention", "CUDA attention backends only")
    if "compile" in wanted and not on_cuda:
        skip("compile", "not used on CPU")
    transformer_steps = [n for n in wanted if n in _TRANSFORMER_STEPS and n not in results]

    transformer = pipe.transformer
    if transformer_steps:
        if on_cuda:
            shortfall = _memory_shortfall(transformer, fp8=fp8_config is not None)
            if shortfall:
                return FastPath(reason=shortfall)
        transformer = _private_transformer(
            pipe.transformer, fuse="fused_qkv" in transformer_steps, fp8_config=fp8_config
        )
        if "fused_qkv" in transformer_steps:
            results["fused_qkv"] = StepResult("fused_qkv", True, "fused QKV projections")
        if fp8_config is not None:
            results["fp8"] = StepResult("fp8", True, "fp8 linear layers (torchao row-wise dynamic float8)")
    if "attention" in transformer_steps:
        results["attention"] = _set_attention(transformer, options.attention_backend)
    if "compile" in transformer_steps:
        results["compile"], path.megacache, path.compile_cache_hit = _compile_blocks(
            transformer, family, wanted, options
        )

    vae = pipe.vae
    if "vae" in wanted:
        vae, results["vae"] = _fast_vae(pipe.vae, on_cuda, options)

    if "step_cache" in wanted:
        if family == "schnell":
            skip("step_cache", "schnell runs at most 4 steps")
        else:
            from fluxserve.predictors.step_cache import StepCache

            path.step_cache = StepCache(transformer, order=options.taylor_order)
            results["step_cache"] = StepResult("step_cache", True, f"TaylorSeer order {options.taylor_order}")
    if "fbcache" in wanted:
        if results.get("compile", StepResult("compile", False, "")).active:
            skip("fbcache", "its hooks sit inside the compiled blocks; use step_cache with compile")
        elif path.step_cache is not None:
            skip("fbcache", "step_cache is on; use one step cache")
        else:
            path.fbcache_threshold = options.fbcache_threshold
            results["fbcache"] = StepResult(
                "fbcache", True, f"First Block Cache (threshold {options.fbcache_threshold})"
            )

    path.results = [results[n] for n in STEPS if n in results]
    path.pipe = _sibling_pipeline(pipe, transformer=transformer, vae=vae)
    path.setup_seconds = time.perf_counter() - start
    return path


def _fp8_config(pipe: Any, on_cuda: bool) -> tuple[Any, str]:
    """torchao's row-wise float8 config, or None and why it cannot be used here."""
    if not on_cuda:
        return None, "needs a CUDA GPU with compute capability 8.9+"
    import torch

    device = pipe.transformer.device
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return None, f"needs compute capability 8.9+ (Ada/Hopper); this GPU is {major}.{minor}"
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow
    except ImportError as exc:
        return None, f"torchao is not installed ({exc}); pip install torchao"
    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), ""


def _memory_shortfall(transformer: Any, *, fp8: bool) -> str | None:
    """Why a go_fast copy of ``transformer`` does not fit in free GPU memory, or None if it does."""
    import torch

    size = sum(p.numel() * p.element_size() for p in transformer.parameters())
    if fp8:  # the weights _fp8_filter picks shrink to one byte each
        for blocks in (transformer.transformer_blocks, transformer.single_transformer_blocks):
            for block in blocks:
                for name, module in block.named_modules():
                    if _fp8_filter(module, name):
                        size -= module.weight.numel() * (module.weight.element_size() - 1)
    need = size + _HEADROOM_BYTES
    free, _total = torch.cuda.mem_get_info(transformer.device)
    if free >= need:
        return None
    return (
        f"not enough free GPU memory for its transformer ({need / 1024**3:.1f} GiB needed, {free / 1024**3:.1f} free)"
    )


def _private_transformer(transformer: Any, *, fuse: bool, fp8_config: Any) -> Any:
    """A copy of ``transformer`` with QKV fused and/or fp8 linears, built one block at a time.

    The shell (embedders, norms, output projection) is deep-copied with the two block lists swapped for empty
    ones; then each block is copied, converted and appended, so peak extra memory is one bf16 block.
    """
    import torch

    lists = [transformer.transformer_blocks, transformer.single_transformer_blocks]
    memo: dict[int, Any] = {id(blocks): torch.nn.ModuleList() for blocks in lists}
    shell = copy.deepcopy(transformer, memo)
    for source, target in zip(lists, (shell.transformer_blocks, shell.single_transformer_blocks), strict=True):
        for block in source:
            twin = copy.deepcopy(block)
            if fuse:
                _fuse_qkv(twin)
            if fp8_config is not None:
                from torchao.quantization import quantize_

                quantize_(twin, fp8_config, filter_fn=_fp8_filter)
            target.append(twin)
    return shell


def _fuse_qkv(block: Any) -> None:
    """Fuse each attention's q/k/v (and added q/k/v) projections, then drop the unfused ones: the fused
    processor path reads only ``to_qkv``/``to_added_qkv``, and keeping both would cost ~4 GiB at full size."""
    for module in block.modules():
        if not (getattr(module, "_supports_qkv_fusion", False) and hasattr(module, "fuse_projections")):
            continue
        module.fuse_projections()
        for fused, parts in (
            ("to_qkv", ("to_q", "to_k", "to_v")),
            ("to_added_qkv", ("add_q_proj", "add_k_proj", "add_v_proj")),
        ):
            if getattr(module, "fused_projections", False) and hasattr(module, fused):
                for name in parts:
                    delattr(module, name)


def _fp8_filter(module: Any, name: str) -> bool:
    """fp8 for the blocks' big linear layers; not the adaLN modulation ones (one row per image, precision
    sensitive, no speed to gain) nor layers whose sizes _scaled_mm cannot take (multiples of 16)."""
    import torch

    if not isinstance(module, torch.nn.Linear) or "norm" in name:
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def _set_attention(transformer: Any, backend: str) -> StepResult:
    try:
        transformer.set_attention_backend(backend)
    except Exception as exc:
        return StepResult("attention", False, f"backend {backend!r} unavailable ({summarize(exc)})")
    label = {"_native_cudnn": "cuDNN SDPA", "_flash_3": "FlashAttention-3", "native": "PyTorch SDPA"}
    return StepResult("attention", True, f"{label.get(backend, backend)} attention")


def _compile_blocks(
    transformer: Any, family: str, wanted: Sequence[str], options: FastOptions
) -> tuple[StepResult, Path, bool]:
    """Regional compile of the repeated blocks with the on-disk caches set up: (result, mega-cache file, hit)."""
    import torch
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    cache_dir = options.cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Inductor re-reads this variable whenever it needs its cache directory. Importing diffusers already sets it
    # to torch's default (/tmp/torchinductor_<user>), so "unset" cannot be told from "set by torch": keep only
    # an operator's own value.
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as torch_default

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(torch_default()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir / "inductor")
    # flux-fast's flags (reference/flux-models.md §3.3); they only touch code inductor generates.
    inductor_config.conv_1x1_as_mm = True
    inductor_config.coordinate_descent_tuning = True
    inductor_config.coordinate_descent_check_all_directions = True
    inductor_config.epilogue_fusion = False
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, _RECOMPILE_LIMIT)
    mega = megacache_path(cache_dir, family, wanted, options)
    hit = False
    if mega.is_file():
        try:
            hit = torch.compiler.load_cache_artifacts(mega.read_bytes()) is not None
        except Exception as exc:  # a stale or foreign file: compile from scratch
            logger.warning("Ignoring compile cache %s: %s", mega, exc)
    kwargs: dict[str, Any] = {"fullgraph": True, "dynamic": options.compile_dynamic}
    if options.compile_mode:
        kwargs["mode"] = options.compile_mode
    transformer.compile_repeated_blocks(**kwargs)
    mode = options.compile_mode or "default"
    dynamic = {None: "auto", True: "dynamic", False: "static"}[options.compile_dynamic]
    return StepResult("compile", True, f"compiled blocks (mode {mode}, {dynamic} shapes)"), mega, hit


def megacache_path(cache_dir: Path, family: str, wanted: Sequence[str], options: FastOptions) -> Path:
    """The mega-cache file for this model, torch build, GPU and compile setting (artifacts do not transfer)."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    key = "|".join(
        (
            family,
            torch.__version__,
            gpu,
            ",".join(sorted(wanted)),
            str(options.compile_mode),
            str(options.compile_dynamic),
        )
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"{family}-{re.sub(r'[^A-Za-z0-9.]+', '_', gpu)}-{digest}.megacache"


def save_megacache(path: Path) -> bool:
    """Write the compile artifacts gathered so far to ``path`` (after the warm-up); whether anything was written."""
    import torch

    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(artifacts[0])
    tmp.replace(path)
    return True


def _fast_vae(vae: Any, on_cuda: bool, options: FastOptions) -> tuple[Any, StepResult]:
    import torch

    twin = copy.deepcopy(vae).to(memory_format=torch.channels_last)
    if not on_cuda:
        return twin, StepResult("vae", True, "VAE channels_last (not compiled on CPU)")
    kwargs: dict[str, Any] = {}
    if options.compile_mode:
        kwargs["mode"] = options.compile_mode
    # Not fullgraph: decode() has Python branches (slicing, tiling) that dynamo guards on.
    twin.decode = torch.compile(twin.decode, **kwargs)
    return twin, StepResult("vae", True, "VAE channels_last, compiled decode")


def _sibling_pipeline(pipe: Any, *, transformer: Any, vae: Any) -> Any:
    """A pipeline of ``pipe``'s class on the same text encoders and tokenizers with ``transformer`` and ``vae``.

    Not ``from_pipe`` (it re-casts the shared modules). The scheduler is a fresh instance because
    ``set_timesteps`` keeps state in it.
    """
    components = dict(pipe.components)
    components["transformer"] = transformer
    components["vae"] = vae
    components["scheduler"] = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sibling = type(pipe)(**components)
    sibling.set_progress_bar_config(disable=True)
    return sibling
