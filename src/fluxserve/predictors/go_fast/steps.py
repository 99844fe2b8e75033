"""Building go_fast: :func:`prepare` runs each asked-for step on a private copy of what it changes and returns the
:class:`~.path.FastPath` that ``go_fast: true`` requests run on (see :mod:`fluxserve.predictors.go_fast`).

torch, diffusers and torchao are imported inside functions only.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from fluxserve.predictors.base import summarize
from fluxserve.predictors.go_fast.compile_cache import compile_blocks
from fluxserve.predictors.go_fast.options import FEW_STEP_FAMILIES, STEPS, FastOptions
from fluxserve.predictors.go_fast.path import FastPath, StepResult

#: Steps that change the transformer's modules, and so need go_fast's own copy of it.
_TRANSFORMER_STEPS = frozenset({"fused_qkv", "fp8", "attention", "compile"})
#: Free GPU memory to keep after building the go_fast transformer (activations at 1024² and Kontext's 2x tokens).
_HEADROOM_BYTES = 6 * 1024**3


def prepare(pipe: Any, *, family: str, on_cuda: bool, offloaded: bool, options: FastOptions) -> FastPath:
    """Build the go_fast pipeline for the loaded ``pipe`` (placed on its device) of model ``family``."""
    start = time.perf_counter()
    if not on_cuda and not options.allow_cpu:
        return FastPath(reason="no CUDA GPU; go_fast has no effect on CPU", on_cpu=True)
    if offloaded:
        return FastPath(
            reason="model CPU offload is on (the model does not fit the GPU whole); go_fast needs the whole model on "
            "the GPU"
        )
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
    if "fused_qkv" in transformer_steps and not _fusable(transformer):
        skip("fused_qkv", "no attention layer of this transformer can fuse its projections")
        transformer_steps.remove("fused_qkv")
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
        detail, path.megacache, path.compile_cache_hit = compile_blocks(transformer, family, wanted, options)
        results["compile"] = StepResult("compile", True, detail)

    vae = pipe.vae
    if "vae" in wanted:
        vae, results["vae"] = _fast_vae(pipe.vae, on_cuda, options)

    if "step_cache" in wanted:
        if family in FEW_STEP_FAMILIES:
            skip("step_cache", FEW_STEP_FAMILIES[family])
        else:
            from fluxserve.predictors.go_fast.step_cache import StepCache

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


def _fusable(transformer: Any) -> bool:
    """Whether any attention layer of ``transformer`` fuses its projections (FLUX.2's single-stream blocks have
    theirs fused already and do not; its double-stream blocks do)."""
    return any(_supports_fusion(m) for m in transformer.modules())


def _supports_fusion(module: Any) -> bool:
    return bool(getattr(module, "_supports_qkv_fusion", False) and hasattr(module, "fuse_projections"))


def _fuse_qkv(block: Any) -> None:
    """Fuse each attention's q/k/v (and added q/k/v) projections, then drop the unfused ones: the fused
    processor path reads only ``to_qkv``/``to_added_qkv``, and keeping both would cost ~4 GiB at full size."""
    for module in block.modules():
        if not _supports_fusion(module):
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
    sibling = type(pipe)(**components, **init_config(pipe, components))
    sibling.set_progress_bar_config(disable=True)
    return sibling


def init_config(pipe: Any, components: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments ``pipe`` keeps in its config rather than among its components (FLUX.2 [klein]'s
    ``is_distilled``), so that a pipeline built from its components behaves the same."""
    import inspect

    config = getattr(pipe, "config", None) or {}
    params = inspect.signature(type(pipe).__init__).parameters
    return {k: config[k] for k in params if k != "self" and k in config and k not in components}
