"""Tiny random FLUX pipelines, built locally without a network, for tests and ``--demo``.

:func:`build_tiny_pipeline` assembles real diffusers/transformers classes with tiny configs and random
(seeded) weights, with tokenizers made from scratch (see ``reference/flux-models.md`` §4), and saves the
result with ``save_pretrained``. The directory is then loaded by ``FluxPipeline.from_pretrained(dir)``,
the very code path used for real weights.

The shapes are chosen so that a 1024×1024, 4-step call takes about a second on 2 CPU cores: the VAE has
4 blocks (``vae_scale_factor`` 8, so a 1024² image is 4096 latent tokens as in real FLUX), 4-8
channels and no attention mid-block; the transformer has one double and one single block of 2 heads × 16.

Kinds: ``schnell`` (``FluxPipeline``, no guidance embedding, linear schedule), ``dev`` (``FluxPipeline`` with a
guidance-embedded transformer and the shifted schedule; ``FluxImg2ImgPipeline.from_pretrained`` loads it too) and
``kontext`` (the dev components saved as a ``FluxKontextPipeline``, so its ``model_index.json`` names that class).
The FLUX.2 kinds ``flux2-dev`` and ``klein`` are built by :mod:`fluxserve.predictors.tiny_flux2`.

Run ``python -m fluxserve.predictors.tiny DIR [schnell|dev|kontext|flux2-dev|klein]`` to build one by hand.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

# The build-in-place helpers live in tiny_flux2: this module delegates the FLUX.2 kinds to it, so it cannot import
# this one back (tests/api/test_layering.py forbids import circles).
from fluxserve.predictors.tiny_flux2 import _locked, _publish, _quiet_progress_bars, build_tiny_flux2_pipeline

TinyKind = Literal["schnell", "dev", "kontext", "flux2-dev", "klein"]

#: The text the T5 sentencepiece model is trained on; it covers the letters, digits and punctuation
#: of ordinary prompts (other characters become ``<unk>``, which is fine for random weights).
_T5_CORPUS = (
    "A painting of a squirrel eating a burger.",
    "A photo of an astronaut riding a horse on the moon.",
    "a cool dog wearing sunglasses, studio lighting, 35mm film",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Pack my box with five dozen liquor jugs!",
    "An old lighthouse at sunset, waves crashing on the rocks; oil on canvas.",
    "A cozy kitchen with a wooden table, fresh bread and a cup of coffee?",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and marks: , . ; : ! ? ' \" - ( ) / & % + = #",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz",
    "A futuristic city skyline at night with neon signs and flying cars in the rain.",
)

_T5_CONFIG: dict[str, Any] = {
    # hf-internal-testing/tiny-random-t5, written inline (no hub).
    "vocab_size": 1103,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 5,
    "num_decoder_layers": 5,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "feed_forward_proj": "relu",
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "initializer_factor": 0.002,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 0,
    "decoder_start_token_id": 0,
}

# CLIP vocab ids: 256 byte chars, 256 byte chars + "</w>", then the two special tokens.
_CLIP_BOS_ID = 512
_CLIP_EOS_ID = 513

_CLIP_CONFIG: dict[str, Any] = {
    "bos_token_id": _CLIP_BOS_ID,
    "eos_token_id": _CLIP_EOS_ID,  # pooled output = hidden state at the first <|endoftext|>
    "pad_token_id": _CLIP_EOS_ID,
    "hidden_size": 32,
    "intermediate_size": 37,
    "layer_norm_eps": 1e-05,
    "num_attention_heads": 4,
    "num_hidden_layers": 5,
    "vocab_size": 1000,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 32,
}

_LATENT_CHANNELS = 4

_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    # 4 blocks -> vae_scale_factor 8, as in real FLUX. The decoder runs them reversed, so the first
    # entries are the 1024² and 512² stages: 4 channels there halve decode time vs. (8, 8, 8, 8).
    "block_out_channels": (4, 4, 8, 8),
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": _LATENT_CHANNELS,
    "norm_num_groups": 4,  # divides every block's channels
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "force_upcast": True,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    # An attention mid-block at a 128x128 latent would need a 16384^2 attention matrix.
    "mid_block_add_attention": False,
}

_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 4 * _LATENT_CHANNELS,  # 2x2 latent packing
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": _T5_CONFIG["d_model"],
    "pooled_projection_dim": _CLIP_CONFIG["hidden_size"],  # FluxPipeline pools CLIP's pooler_output
    "axes_dims_rope": (4, 4, 8),  # sums to attention_head_dim
}

_SCHEDULER_COMMON: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
    "base_shift": 0.5,
    "max_shift": 1.15,
}
_SCHEDULER_BY_KIND: dict[str, dict[str, Any]] = {
    "schnell": {"shift": 1.0, "use_dynamic_shifting": False},
    "dev": {"shift": 3.0, "use_dynamic_shifting": True},
    "kontext": {"shift": 3.0, "use_dynamic_shifting": True},
}
_KINDS: tuple[TinyKind, ...] = ("schnell", "dev", "kontext", "flux2-dev", "klein")


def build_tiny_pipeline(path: Path, kind: TinyKind = "schnell") -> Path:
    """Build a tiny random FLUX.1-``kind`` diffusers checkout at ``path`` unless it is already there.

    Idempotent: returns at once when ``path/model_index.json`` exists. The pipeline is built in a
    temporary sibling directory and renamed into place, so a crash never leaves a half-written
    ``path``; a lock file next to ``path`` makes concurrent callers (threads or processes) wait for
    the first build instead of repeating it. Weights are seeded, so every build is the same.
    Returns ``path``. ``flux2-dev`` and ``klein`` are FLUX.2 pipelines (:mod:`~fluxserve.predictors.tiny_flux2`).
    """
    if kind in ("flux2-dev", "klein"):
        return build_tiny_flux2_pipeline(path, kind)
    if kind not in _SCHEDULER_BY_KIND:
        raise ValueError(f"kind must be one of {', '.join(map(repr, _KINDS))}, not {kind!r}")
    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent / f".{path.name}.lock"):
        if (path / "model_index.json").is_file():  # another caller built it while we waited
            return path
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        try:
            _build_into(tmp, kind)
            _publish(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _write_clip_tokenizer_files(directory: Path) -> None:
    """A character-level CLIP BPE tokenizer: no merges, 514 ids, ``<|endoftext|>`` the highest."""
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]:
        vocab[token] = len(vocab)
    assert vocab["<|startoftext|>"] == _CLIP_BOS_ID and vocab["<|endoftext|>"] == _CLIP_EOS_ID
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    # model_max_length=77 is needed, or padding="max_length" in FluxPipeline breaks.
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}), encoding="utf-8")


def _write_t5_tokenizer_files(directory: Path) -> None:
    """A T5 sentencepiece (unigram) model trained on :data:`_T5_CORPUS` (pad 0, eos 1, unk 2)."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(_T5_CORPUS) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "spiece"),
        vocab_size=120,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,  # deterministic
        minloglevel=2,  # quiet
    )
    corpus.unlink()
    (directory / "spiece.vocab").unlink(missing_ok=True)
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 512, "extra_ids": 100, "tokenizer_class": "T5Tokenizer"}),
        encoding="utf-8",
    )


def component_configs(kind: TinyKind) -> dict[str, dict[str, Any]]:
    """Copies of the tiny configs of ``kind``: ``transformer`` (FluxTransformer2DModel), ``vae`` (AutoencoderKL),
    ``text_encoder`` (CLIPTextConfig), ``text_encoder_2`` (T5Config) and ``scheduler``
    (FlowMatchEulerDiscreteScheduler). The GPU benchmark builds its ``--tiny`` pipelines from them. FLUX.1 kinds
    only: :func:`fluxserve.predictors.tiny_flux2.component_configs` has the FLUX.2 ones."""
    if kind not in _SCHEDULER_BY_KIND:
        raise ValueError(f"kind must be one of {', '.join(map(repr, _SCHEDULER_BY_KIND))}, not {kind!r}")
    return {
        "transformer": {**_TRANSFORMER_CONFIG, "guidance_embeds": kind != "schnell"},
        "vae": dict(_VAE_CONFIG),
        "text_encoder": dict(_CLIP_CONFIG),
        "text_encoder_2": dict(_T5_CONFIG),
        "scheduler": {**_SCHEDULER_COMMON, **_SCHEDULER_BY_KIND[kind]},
    }


def make_tokenizers(directory: Path) -> tuple[Any, Any]:
    """The tiny CLIP and T5 tokenizers, written from scratch under ``directory`` and loaded from there.

    CLIP: 514 ids, ``model_max_length`` 77; T5: sentencepiece, 219 ids, ``model_max_length`` 512. Every id is
    below the real models' vocabulary sizes too, so they also drive full-size random-weight encoders.
    """
    from transformers import AutoTokenizer, CLIPTokenizer

    _write_clip_tokenizer_files(directory / "tokenizer")
    _write_t5_tokenizer_files(directory / "tokenizer_2")
    tokenizer = CLIPTokenizer.from_pretrained(str(directory / "tokenizer"))
    # AutoTokenizer: T5TokenizerFast on transformers 4 (what FluxPipeline expects), T5Tokenizer on 5.
    tokenizer_2 = AutoTokenizer.from_pretrained(str(directory / "tokenizer_2"))
    return tokenizer, tokenizer_2


def _build_into(directory: Path, kind: TinyKind) -> None:
    """Construct the tiny pipeline and ``save_pretrained`` it into ``directory``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    rng_state = torch.random.get_rng_state()
    try:
        src = directory / "_src"
        tokenizer, tokenizer_2 = make_tokenizers(src)

        torch.manual_seed(0)
        text_encoder = CLIPTextModel(CLIPTextConfig(**_CLIP_CONFIG))
        torch.manual_seed(0)
        text_encoder_2 = T5EncoderModel(T5Config(**_T5_CONFIG))
        torch.manual_seed(0)
        transformer: Any = FluxTransformer2DModel(**_TRANSFORMER_CONFIG, guidance_embeds=kind != "schnell")
        torch.manual_seed(0)
        vae: Any = AutoencoderKL(**_VAE_CONFIG)
        scheduler = FlowMatchEulerDiscreteScheduler(**_SCHEDULER_COMMON, **_SCHEDULER_BY_KIND[kind])

        # The class decides model_index.json's _class_name, which DiffusionPipeline.from_pretrained follows.
        pipeline_class: Any = FluxKontextPipeline if kind == "kontext" else FluxPipeline
        pipe: Any = pipeline_class(
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder.eval(),
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2.eval(),
            tokenizer_2=tokenizer_2,
            transformer=transformer.eval(),
            image_encoder=None,
            feature_extractor=None,
        )
        with _quiet_progress_bars():  # "Writing model shards" bars would land in worker logs
            pipe.save_pretrained(str(directory))
        shutil.rmtree(src)
        # Written after save_pretrained so the caller can tell what this directory is.
        (directory / "TINY_RANDOM_WEIGHTS.txt").write_text(
            f"Tiny random FLUX.1-{kind}-shaped pipeline built by fluxserve.predictors.tiny for tests and "
            "--demo. The weights are random: its images are noise, not a model's output.\n",
            encoding="utf-8",
        )
    finally:
        torch.random.set_rng_state(rng_state)


def main(argv: list[str] | None = None) -> int:
    """``python -m fluxserve.predictors.tiny DIR [schnell|dev|kontext|flux2-dev|klein]``: build and print the timing."""
    args = sys.argv[1:] if argv is None else argv
    kinds: dict[str, TinyKind] = {k: k for k in _KINDS}
    if not args or len(args) > 2 or (len(args) == 2 and args[1] not in kinds):
        print("usage: python -m fluxserve.predictors.tiny DIR [schnell|dev|kontext|flux2-dev|klein]", file=sys.stderr)
        return 2
    kind: TinyKind = kinds[args[1]] if len(args) == 2 else "schnell"
    start = time.perf_counter()
    out = build_tiny_pipeline(Path(args[0]), kind)
    print(f"{out} ({kind}) ready in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
