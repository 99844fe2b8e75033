"""Full-size FLUX.2 component configs for ``gpu_pipeline.py``: FLUX.2 [klein] 4B and FLUX.2 [dev], written in code.

Sources: ``reference/flux2-and-replicate-2026.md`` §1 (block counts, widths, RoPE, text encoders and the hidden-state
layers they stack), the defaults of diffusers' ``Flux2Transformer2DModel`` (which are FLUX.2 [dev]'s config) and
``AutoencoderKLFlux2`` (32 latent channels, blocks 128/256/512/512, the real VAE), and the published configs of
Qwen3-4B and Mistral-Small-3.x-24B (``Mistral3ForConditionalGeneration`` with its Pixtral vision tower), in the
field names of transformers' ``Qwen3Config``, ``MistralConfig``, ``PixtralVisionConfig`` and ``Mistral3Config``
(transformers 5: RoPE in ``rope_parameters``).

The token ids (bos/eos/pad, the ``[IMG]`` id) are those of the tiny tokenizers of
:mod:`fluxserve.predictors.tiny_flux2`, which the benchmark uses: their ids are far below the real vocab sizes, and
the pipelines pad every prompt to 512 tokens, so the encoders do the real work. ``--tiny`` takes
:func:`fluxserve.predictors.tiny_flux2.component_configs` instead. Parameter counts on the meta device
(:func:`parameter_counts`): klein 4B transformer 3.88 B, Qwen3 4B 4.02 B (tied embeddings); FLUX.2 [dev]
transformer 32.2 B, Mistral Small 24.0 B (text 23.6 B + vision tower and projector 0.44 B). Nothing here imports
torch at import time.
"""

from __future__ import annotations

from typing import Any

from fluxserve.predictors.tiny_flux2 import component_configs, make_tokenizer

#: Benchmark model name → tiny_flux2 kind (its tokenizer and ``--tiny`` configs).
TINY_KIND = {"klein4b": "klein", "flux2dev": "flux2-dev"}
#: Benchmark model name → what a row is labelled with in the setup facts.
LABELS = {"klein4b": "FLUX.2 [klein] 4B", "flux2dev": "FLUX.2 [dev]"}

_FLUX2_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 128,  # 32 latent channels in 2x2 patches
    "attention_head_dim": 128,
    "timestep_guidance_channels": 256,
    "mlp_ratio": 3.0,
    "axes_dims_rope": (32, 32, 32, 32),
    "rope_theta": 2000,
    "eps": 1e-6,
}
KLEIN4B_TRANSFORMER: dict[str, Any] = {
    **_FLUX2_TRANSFORMER,
    "num_layers": 5,
    "num_single_layers": 20,
    "num_attention_heads": 24,  # 3072 wide
    "joint_attention_dim": 3 * 2560,  # Qwen3 4B hidden states of layers 9, 18, 27, stacked
    "guidance_embeds": False,
}
FLUX2_DEV_TRANSFORMER: dict[str, Any] = {
    **_FLUX2_TRANSFORMER,
    "num_layers": 8,
    "num_single_layers": 48,
    "num_attention_heads": 48,  # 6144 wide
    "joint_attention_dim": 3 * 5120,  # Mistral Small hidden states of layers 10, 20, 30, stacked
    "guidance_embeds": True,
}
#: ``AutoencoderKLFlux2``'s defaults, which are the real FLUX.2 VAE (both models share it).
FLUX2_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 32,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
    "batch_norm_eps": 1e-4,
    "batch_norm_momentum": 0.1,
    "patch_size": (2, 2),
}
#: Qwen3-4B (``Qwen3ForCausalLM``), klein 4B's text encoder.
QWEN3_4B: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    "attention_bias": False,
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 36,
    "tie_word_embeddings": True,
}
#: Mistral Small 3.x 24B's language model (``MistralConfig``, the ``text_config`` of FLUX.2 [dev]'s text encoder).
MISTRAL_SMALL_TEXT: dict[str, Any] = {
    "vocab_size": 131072,
    "hidden_size": 5120,
    "intermediate_size": 32768,
    "num_hidden_layers": 40,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000_000.0},
    "sliding_window": None,
    "tie_word_embeddings": False,
}
#: Its Pixtral vision tower (unused for text prompts, but part of the module the placement measures).
PIXTRAL_VISION: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 1540,
    "patch_size": 14,
    "hidden_act": "silu",
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
}
#: ``Mistral3Config``'s own fields (``image_token_index`` is the tiny tokenizer's ``[IMG]``).
MISTRAL3: dict[str, Any] = {
    "projector_hidden_act": "gelu",
    "vision_feature_layer": -1,
    "multimodal_projector_bias": False,
    "spatial_merge_size": 2,
    "tie_word_embeddings": False,
}
#: tiny_flux2's vision tower (hidden 16, one layer), for ``--tiny``.
TINY_PIXTRAL_VISION: dict[str, Any] = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "image_size": 30,
    "patch_size": 6,
}

_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def configs(model: str, *, tiny: bool) -> dict[str, dict[str, Any]]:
    """The configs of ``model`` (``klein4b`` or ``flux2dev``): ``transformer``, ``vae``, ``text_encoder`` (the text
    model's config keywords, vocab size filled in), for flux2dev ``vision`` and ``mistral3`` (the vision tower's and
    ``Mistral3Config``'s own keywords), and ``scheduler`` (tiny_flux2's: FLUX.2's real one).
    Full size unless ``tiny``."""
    tiny_configs = component_configs(TINY_KIND[model])  # type: ignore[arg-type]
    ids = {key: tiny_configs["text_encoder"][key] for key in _TOKEN_IDS}
    if tiny:
        text = {**tiny_configs["text_encoder"], "vocab_size": _tiny_vocab_size(model)}
        out = {**tiny_configs, "text_encoder": text}
        if model == "flux2dev":
            out["vision"], out["mistral3"] = dict(TINY_PIXTRAL_VISION), {}
        return out
    if model == "klein4b":
        return {
            "transformer": dict(KLEIN4B_TRANSFORMER),
            "vae": dict(FLUX2_VAE),
            "text_encoder": {**QWEN3_4B, **ids},
            "scheduler": tiny_configs["scheduler"],
        }
    return {
        "transformer": dict(FLUX2_DEV_TRANSFORMER),
        "vae": dict(FLUX2_VAE),
        "text_encoder": {**MISTRAL_SMALL_TEXT, **ids},
        "vision": dict(PIXTRAL_VISION),
        "mistral3": dict(MISTRAL3),
        "scheduler": tiny_configs["scheduler"],
    }


def _tiny_vocab_size(model: str) -> int:
    """tiny_flux2's embedding size: every id of its tokenizer, rounded up to a multiple of 64."""
    return -(-len(make_tokenizer(TINY_KIND[model])) // 64) * 64  # type: ignore[arg-type]


def text_encoder(model: str, config: dict[str, dict[str, Any]], tokenizer: Any) -> Any:
    """The text encoder of ``model`` from :func:`configs`' output (build it under ``init_empty_weights``):
    ``Qwen3ForCausalLM`` for klein, ``Mistral3ForConditionalGeneration`` for [dev]."""
    if model == "klein4b":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3ForCausalLM(Qwen3Config(**config["text_encoder"]))
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    return Mistral3ForConditionalGeneration(
        Mistral3Config(
            vision_config=PixtralVisionConfig(**config["vision"]),
            text_config=MistralConfig(**config["text_encoder"]),
            image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
            **config["mistral3"],
        )
    )


def parameter_counts(model: str) -> dict[str, int]:
    """Parameters of the full-size transformer, VAE and text encoder, built on the meta device (no memory)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    config = configs(model, tiny=False)
    with init_empty_weights(include_buffers=False):
        modules = {
            "transformer": Flux2Transformer2DModel(**config["transformer"]),
            "vae": AutoencoderKLFlux2(**config["vae"]),
            "text_encoder": text_encoder(model, config, make_tokenizer(TINY_KIND[model])),  # type: ignore[arg-type]
        }
    modules["text_encoder"].tie_weights()
    return {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()}
