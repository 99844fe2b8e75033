"""LoraAdapters on a tiny random FLUX.1 [schnell] pipeline, with LoRAs the tests make themselves (no network, CPU)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from fluxserve.predictors.base import PredictionCanceled
from fluxserve.predictors.lora import LoraAdapters, LoraLoadError
from fluxserve.predictors.tiny import build_tiny_pipeline, component_configs

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
LOADED = re.compile(r"^Loaded LoRA [0-9a-f]{12} \(rank (\d+)\) in \d+\.\d\d s")


@dataclass(frozen=True)
class FakeLora:
    """What LoraAdapters reads of fluxserve.lora.LoraFile."""

    path: Path
    sha256: str
    rank: int | None = None


def lora_file(path: Path, rank: int | None = None) -> FakeLora:
    return FakeLora(path, hashlib.sha256(path.read_bytes()).hexdigest(), rank)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("weights") / "schnell", "schnell")


def load_pipe(tiny: Path) -> Any:
    pipe = FluxPipeline.from_pretrained(str(tiny))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def pipe(tiny: Path) -> Any:
    return load_pipe(tiny)


def image(pipe: Any, seed: int = 1) -> np.ndarray:
    with torch.inference_mode():
        result = pipe(
            "a cool dog",
            height=256,
            width=256,
            num_inference_steps=2,
            guidance_scale=0.0,
            generator=torch.Generator("cpu").manual_seed(seed),
            max_sequence_length=256,
            output_type="np",
        )
    return np.asarray(result.images)


@pytest.fixture(scope="module")
def base(tiny: Path) -> bytes:
    """The base model's image, from a pipeline that never saw a LoRA."""
    return image(load_pipe(tiny)).tobytes()


def peft_lora(
    out: Path,
    tiny: Path,
    seed: int,
    *,
    r: int = 4,
    alpha: int = 4,
    targets: list[str] | None = None,
    transformer: Any = None,
) -> Path:
    """A diffusers/peft-format LoRA (``transformer.….lora_A.weight``), saved as diffusers' own tests do."""
    if transformer is None:
        transformer = FluxTransformer2DModel.from_pretrained(str(tiny), subfolder="transformer")
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets or ATTENTION, init_lora_weights=False)
    torch.manual_seed(seed)
    transformer.add_adapter(config)
    FluxPipeline.save_lora_weights(
        str(out),
        transformer_lora_layers=get_peft_model_state_dict(transformer),
        transformer_lora_adapter_metadata=config.to_dict(),
    )
    return out / "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class Loras:
    a: FakeLora
    b: FakeLora
    c: FakeLora  # rank 8, alpha 4: scaling 0.5
    ff: FakeLora  # also targets the feed-forward layers
    wide: FakeLora  # made for a transformer of hidden size 64 (ours: 32)
    sdxl: FakeLora  # diffusers-format keys of an SDXL UNet
    sdxl_kohya: FakeLora
    kohya: FakeLora  # sd-scripts FLUX.1 names (lora_unet_double_blocks_0_…)
    xlabs: FakeLora
    rank16: FakeLora


@pytest.fixture(scope="module")
def loras(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Loras:
    root = tmp_path_factory.mktemp("loras")
    wide_config = {
        **component_configs("schnell")["transformer"],
        "attention_head_dim": 32,
        "axes_dims_rope": (8, 8, 16),
    }
    generator = torch.Generator().manual_seed(0)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.1

    sdxl_path = root / "sdxl.safetensors"
    q = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file({f"{q}.lora_A.weight": noise(4, 640), f"{q}.lora_B.weight": noise(640, 4)}, sdxl_path)
    sdxl_kohya_path = root / "sdxl-kohya.safetensors"
    q = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file(
        {f"{q}.lora_down.weight": noise(4, 640), f"{q}.lora_up.weight": noise(640, 4), f"{q}.alpha": torch.tensor(4.0)},
        sdxl_kohya_path,
    )
    kohya: dict[str, torch.Tensor] = {}
    for name, (fan_in, fan_out) in {
        "double_blocks_0_img_attn_qkv": (32, 96),
        "double_blocks_0_img_attn_proj": (32, 32),
        "single_blocks_0_linear2": (160, 32),
    }.items():
        kohya[f"lora_unet_{name}.lora_down.weight"] = noise(4, fan_in)
        kohya[f"lora_unet_{name}.lora_up.weight"] = noise(fan_out, 4)
        kohya[f"lora_unet_{name}.alpha"] = torch.tensor(4.0)
    save_file(kohya, root / "kohya.safetensors")
    xlabs: dict[str, torch.Tensor] = {}
    for name, (fan_in, fan_out) in {"qkv_lora1": (32, 96), "proj_lora1": (32, 32)}.items():
        xlabs[f"double_blocks.0.processor.{name}.down.weight"] = noise(4, fan_in)
        xlabs[f"double_blocks.0.processor.{name}.up.weight"] = noise(fan_out, 4)
    save_file(xlabs, root / "xlabs.safetensors")
    return Loras(
        a=lora_file(peft_lora(root / "a", tiny, 1), rank=4),
        b=lora_file(peft_lora(root / "b", tiny, 2), rank=4),
        c=lora_file(peft_lora(root / "c", tiny, 3, r=8, alpha=4), rank=8),
        ff=lora_file(peft_lora(root / "ff", tiny, 4, targets=[*ATTENTION, "ff.net.2"]), rank=4),
        wide=lora_file(peft_lora(root / "wide", tiny, 5, transformer=FluxTransformer2DModel(**wide_config))),
        sdxl=lora_file(sdxl_path),
        sdxl_kohya=lora_file(sdxl_kohya_path),
        kohya=lora_file(root / "kohya.safetensors"),
        xlabs=lora_file(root / "xlabs.safetensors"),
        rank16=lora_file(peft_lora(root / "r16", tiny, 6, r=16, alpha=16)),
    )


def with_loras(adapters: LoraAdapters, pipe: Any, loras: list[tuple[FakeLora, float]]) -> tuple[np.ndarray, list[str]]:
    logs: list[str] = []
    with adapters.activate(pipe, loras, logs.append):
        return image(pipe), logs


def adapters_of(pipe: Any) -> list[str]:
    return sorted(pipe.transformer.peft_config) if hasattr(pipe.transformer, "peft_config") else []


def test_lora_changes_the_image_and_a_plain_request_after_it_is_the_base_image(
    pipe: Any, loras: Loras, base: bytes
) -> None:
    adapters = LoraAdapters()
    with_a, logs = with_loras(adapters, pipe, [(loras.a, 1.0)])
    assert with_a.tobytes() != base
    assert np.abs(with_a - np.frombuffer(base, dtype=with_a.dtype).reshape(with_a.shape)).max() > 1e-3
    assert [LOADED.match(line) is not None for line in logs] == [True]
    assert LOADED.match(logs[0])[1] == "4"  # type: ignore[index]

    plain, plain_logs = with_loras(adapters, pipe, [])
    assert plain.tobytes() == base
    assert plain_logs == []
    assert image(pipe).tobytes() == base  # leaving the context disabled the adapter
    assert adapters.resident == [loras.a.sha256]


def test_the_same_lora_twice_gives_the_same_image_and_loads_once(pipe: Any, loras: Loras) -> None:
    adapters = LoraAdapters()
    first, first_logs = with_loras(adapters, pipe, [(loras.a, 0.8)])
    second, second_logs = with_loras(adapters, pipe, [(loras.a, 0.8)])
    assert first.tobytes() == second.tobytes()
    assert LOADED.match(first_logs[0])
    assert second_logs == [f"LoRA {loras.a.sha256[:12]} already loaded"]
    assert adapters_of(pipe) == [f"lora_{loras.a.sha256[:16]}"]


def test_two_loras_with_scales_differ_from_each_alone(pipe: Any, loras: Loras) -> None:
    adapters = LoraAdapters()
    both, logs = with_loras(adapters, pipe, [(loras.a, 1.0), (loras.b, 0.7)])
    a_alone, _ = with_loras(adapters, pipe, [(loras.a, 1.0)])
    b_alone, _ = with_loras(adapters, pipe, [(loras.b, 0.7)])
    swapped, _ = with_loras(adapters, pipe, [(loras.a, 0.7), (loras.b, 1.0)])
    assert len({both.tobytes(), a_alone.tobytes(), b_alone.tobytes(), swapped.tobytes()}) == 4
    assert len(logs) == 2 and all(LOADED.match(line) for line in logs)
    # The same pair again: nothing loads, the image repeats.
    again, again_logs = with_loras(adapters, pipe, [(loras.a, 1.0), (loras.b, 0.7)])
    assert again.tobytes() == both.tobytes()
    assert all(line.endswith("already loaded") for line in again_logs)


def test_scale_zero_is_the_base_model(pipe: Any, loras: Loras, base: bytes) -> None:
    zero, _ = with_loras(LoraAdapters(), pipe, [(loras.a, 0.0)])
    expected = np.frombuffer(base, dtype=zero.dtype).reshape(zero.shape)
    np.testing.assert_allclose(zero, expected, atol=1e-6)


def test_negative_scale_runs(pipe: Any, loras: Loras, base: bytes) -> None:
    negative, _ = with_loras(LoraAdapters(), pipe, [(loras.a, -1.0)])
    assert negative.tobytes() != base


def test_least_recently_used_adapter_is_unloaded_past_max_resident(
    pipe: Any, tiny: Path, loras: Loras, base: bytes
) -> None:
    adapters = LoraAdapters(max_resident=2)
    with_loras(adapters, pipe, [(loras.a, 1.0)])
    with_loras(adapters, pipe, [(loras.b, 1.0)])
    _, logs = with_loras(adapters, pipe, [(loras.a, 1.0)])  # a is now the most recently used
    assert logs == [f"LoRA {loras.a.sha256[:12]} already loaded"]
    with_loras(adapters, pipe, [(loras.c, 1.0)])
    assert adapters.resident == [loras.a.sha256, loras.c.sha256]
    assert adapters_of(pipe) == sorted(f"lora_{x.sha256[:16]}" for x in (loras.a, loras.c))
    again, logs = with_loras(adapters, pipe, [(loras.b, 1.0)])  # b was unloaded: it loads again
    assert LOADED.match(logs[0])
    assert adapters.resident == [loras.c.sha256, loras.b.sha256]
    assert again.tobytes() == fresh_image(tiny, [(loras.b, 1.0)]).tobytes()
    assert image(pipe).tobytes() == base


@pytest.mark.parametrize("fmt", ["kohya", "xlabs"])
def test_kohya_and_xlabs_flux_loras_load(pipe: Any, loras: Loras, base: bytes, fmt: str) -> None:
    lora = getattr(loras, fmt)
    with_it, logs = with_loras(LoraAdapters(), pipe, [(lora, 1.0)])
    assert with_it.tobytes() != base
    assert LOADED.match(logs[0])
    assert image(pipe).tobytes() == base


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("wide", r"does not fit FLUX\.1's transformer: .*has 32 inputs, the LoRA's has 64"),
        ("sdxl", r"does not fit FLUX\.1's transformer: none of its 2 tensors is for it .*unet\.down_blocks"),
        ("sdxl_kohya", r"does not fit FLUX\.1's transformer: diffusers cannot read it as a FLUX LoRA"),
    ],
)
def test_a_lora_for_another_architecture_is_refused_and_leaves_the_pipeline_clean(
    pipe: Any, loras: Loras, base: bytes, name: str, why: str
) -> None:
    adapters = LoraAdapters()
    with pytest.raises(LoraLoadError, match=f"^lora_weights: {why}") as raised:
        with_loras(adapters, pipe, [(getattr(loras, name), 1.0)])
    assert isinstance(raised.value, ValueError) and raised.value.field == "lora_weights"
    assert adapters_of(pipe) == [] and adapters.resident == []
    assert pipe.transformer.transformer_blocks[0].attn.to_q.weight.shape == (32, 32)
    assert image(pipe).tobytes() == base

    # As extra_lora, beside a good one: the error names extra_lora, and the good one stays usable.
    with pytest.raises(LoraLoadError, match=f"^extra_lora: {why}"):
        with_loras(adapters, pipe, [(loras.a, 1.0), (getattr(loras, name), 1.0)])
    assert adapters_of(pipe) == [f"lora_{loras.a.sha256[:16]}"]
    assert image(pipe).tobytes() == base


def test_a_failed_load_deletes_the_half_made_adapter(
    pipe: Any, loras: Loras, base: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipe.load_lora_weights

    def failing(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)  # the adapter exists, then something breaks
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipe, "load_lora_weights", failing)
    with pytest.raises(LoraLoadError, match=r"^lora_weights: could not be loaded .*disk on fire"):
        with_loras(LoraAdapters(), pipe, [(loras.a, 1.0)])
    assert adapters_of(pipe) == []
    assert image(pipe).tobytes() == base


def test_the_same_lora_twice_in_one_request_is_refused(pipe: Any, loras: Loras) -> None:
    same_file_other_name = FakeLora(loras.b.path, loras.a.sha256)
    with pytest.raises(LoraLoadError, match=r"^extra_lora: is the same LoRA as lora_weights .*set lora_scale"):
        with_loras(LoraAdapters(), pipe, [(loras.a, 1.0), (same_file_other_name, 0.5)])
    assert adapters_of(pipe) == []


def test_an_exception_in_the_body_still_disables_the_adapters(pipe: Any, loras: Loras, base: bytes) -> None:
    adapters = LoraAdapters()
    with pytest.raises(PredictionCanceled), adapters.activate(pipe, [(loras.a, 1.0), (loras.b, 1.0)], print):
        assert image(pipe).tobytes() != base
        raise PredictionCanceled()
    assert image(pipe).tobytes() == base
    with adapters.activate(pipe, [], print):
        assert image(pipe).tobytes() == base


def test_a_second_activation_while_one_is_running_is_refused(pipe: Any, loras: Loras) -> None:
    adapters = LoraAdapters()
    with (
        adapters.activate(pipe, [(loras.a, 1.0)], print),
        pytest.raises(RuntimeError, match="already active"),
        adapters.activate(pipe, [], print),
    ):
        pass


# --- hot-swap ------------------------------------------------------------------------------------


def fresh_image(tiny: Path, loras: list[tuple[FakeLora, float]]) -> np.ndarray:
    """The image with ``loras`` loaded the ordinary way into a pipeline that never saw another LoRA."""
    return with_loras(LoraAdapters(), load_pipe(tiny), loras)[0]


def test_hot_swapping_gives_the_image_of_a_fresh_load(pipe: Any, tiny: Path, loras: Loras, base: bytes) -> None:
    adapters = LoraAdapters(hotswap_max_rank=8)
    a, logs = with_loras(adapters, pipe, [(loras.a, 1.0)])
    assert LOADED.match(logs[0]) and "hot-swapped" not in logs[0]
    np.testing.assert_allclose(a, fresh_image(tiny, [(loras.a, 1.0)]), atol=1e-5)

    # c has another rank and alpha (scaling 0.5): its own scaling must be used, at the request's scale.
    c, logs = with_loras(adapters, pipe, [(loras.c, 0.6)])
    assert LOADED.match(logs[0]) and logs[0].endswith("(hot-swapped)")
    np.testing.assert_allclose(c, fresh_image(tiny, [(loras.c, 0.6)]), atol=1e-5)
    assert adapters_of(pipe) == ["fluxserve_slot_0"]
    assert adapters.resident == [loras.c.sha256]

    # Two at once: the second slot is made once, then both swap in place.
    ab, logs = with_loras(adapters, pipe, [(loras.a, 1.0), (loras.b, 0.5)])
    np.testing.assert_allclose(ab, fresh_image(tiny, [(loras.a, 1.0), (loras.b, 0.5)]), atol=1e-5)
    assert adapters_of(pipe) == ["fluxserve_slot_0", "fluxserve_slot_1"]
    cb, logs = with_loras(adapters, pipe, [(loras.c, 1.0), (loras.b, 1.0)])
    assert logs == [f"LoRA {loras.b.sha256[:12]} already loaded", *logs[1:]]
    assert logs[1].endswith("(hot-swapped)")
    np.testing.assert_allclose(cb, fresh_image(tiny, [(loras.c, 1.0), (loras.b, 1.0)]), atol=1e-5)

    # One LoRA while two slots hold others: the unused slot runs at scale 0.
    c_again, logs = with_loras(adapters, pipe, [(loras.c, 0.6)])
    assert logs == [f"LoRA {loras.c.sha256[:12]} already loaded"]
    np.testing.assert_allclose(c_again, c, atol=1e-5)
    assert image(pipe).tobytes() == base
    with adapters.activate(pipe, [], print):
        assert image(pipe).tobytes() == base


def test_a_lora_the_slot_cannot_take_in_place_reloads_the_slot(pipe: Any, tiny: Path, loras: Loras) -> None:
    adapters = LoraAdapters(hotswap_max_rank=8)
    with_loras(adapters, pipe, [(loras.a, 1.0)])
    ff, logs = with_loras(adapters, pipe, [(loras.ff, 1.0)])  # targets ff.net.2, which slot 0 has no layer for
    assert "reloaded its slot" in logs[0]
    np.testing.assert_allclose(ff, fresh_image(tiny, [(loras.ff, 1.0)]), atol=1e-5)
    assert adapters_of(pipe) == ["fluxserve_slot_0"]
    a, logs = with_loras(adapters, pipe, [(loras.a, 1.0)])  # a subset of the slot's layers: swaps in place
    assert logs[0].endswith("(hot-swapped)")
    np.testing.assert_allclose(a, fresh_image(tiny, [(loras.a, 1.0)]), atol=1e-5)


def test_hot_swap_refuses_a_rank_above_the_maximum(pipe: Any, loras: Loras, base: bytes) -> None:
    adapters = LoraAdapters(hotswap_max_rank=8)
    known = FakeLora(loras.rank16.path, loras.rank16.sha256, rank=16)
    message = "lora_weights: rank 16 is above the hot-swap maximum 8 (FLUXSERVE_LORA_MAX_RANK)"
    with pytest.raises(LoraLoadError, match=f"^{re.escape(message)}$"):
        with_loras(adapters, pipe, [(known, 1.0)])
    # Rank unknown up front: found when the file is read, before anything loads.
    with pytest.raises(LoraLoadError, match=re.escape(message.replace("lora_weights", "extra_lora"))):
        with_loras(adapters, pipe, [(loras.a, 1.0), (loras.rank16, 1.0)])
    assert adapters.resident == [loras.a.sha256]
    assert image(pipe).tobytes() == base


def test_hot_swap_refuses_a_wrong_architecture_and_keeps_the_slot(pipe: Any, tiny: Path, loras: Loras) -> None:
    adapters = LoraAdapters(hotswap_max_rank=8)
    with_loras(adapters, pipe, [(loras.a, 1.0)])
    with pytest.raises(LoraLoadError, match=r"^lora_weights: does not fit FLUX\.1's transformer"):
        with_loras(adapters, pipe, [(loras.wide, 1.0)])
    a, logs = with_loras(adapters, pipe, [(loras.a, 1.0)])
    assert logs == [f"LoRA {loras.a.sha256[:12]} already loaded"]
    np.testing.assert_allclose(a, fresh_image(tiny, [(loras.a, 1.0)]), atol=1e-5)


def test_hot_swapping_into_a_compiled_transformer_never_recompiles(tiny: Path, loras: Loras) -> None:
    """The hot-swap mode's point: with both slots made before compiling (as a compiled go_fast pipeline would
    make them at setup), other LoRAs, other scales, one LoRA or two, and no LoRA all reuse the compiled graphs.
    Compiled with dynamo's ``eager`` backend: recompiles are dynamo's guards failing, the same on CPU and GPU."""
    import torch._dynamo

    pipe = load_pipe(tiny)
    adapters = LoraAdapters(hotswap_max_rank=8)
    with_loras(adapters, pipe, [(loras.a, 1.0), (loras.b, 1.0)])  # both slots exist, padded to rank 8
    torch._dynamo.reset()
    pipe.transformer.compile(backend="eager", dynamic=False)
    # One graph with the slots enabled and one with LoRA layers disabled (a plain request): made once each.
    with_loras(adapters, pipe, [(loras.a, 1.0)])
    image(pipe)
    with torch._dynamo.config.patch(error_on_recompile=True):
        c, logs = with_loras(adapters, pipe, [(loras.c, 0.6)])  # another rank and alpha, swapped in place
        assert logs[0].endswith("(hot-swapped)"), logs
        two, _ = with_loras(adapters, pipe, [(loras.c, 1.0), (loras.a, -0.5)])
        plain, _ = with_loras(adapters, pipe, [])
    np.testing.assert_allclose(c, fresh_image(tiny, [(loras.c, 0.6)]), atol=1e-5)
    np.testing.assert_allclose(two, fresh_image(tiny, [(loras.c, 1.0), (loras.a, -0.5)]), atol=1e-5)
    np.testing.assert_allclose(plain, image(load_pipe(tiny)), atol=1e-5)


def test_importing_the_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, fluxserve.predictors.lora; print(' '.join({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not {"torch", "diffusers", "peft"} & set(loaded.split())
