"""Tiny random FLUX.2 pipelines, built locally without a network, for tests and ``--demo``; and the build-in-place
helpers (lock, atomic publish, quiet progress bars) that :mod:`fluxserve.predictors.tiny` shares.

:func:`build_tiny_flux2_pipeline` has the contract of :func:`fluxserve.predictors.tiny.build_tiny_pipeline`
(idempotent, locked, built in a temporary sibling and renamed into place, seeded weights). It assembles the real
diffusers and transformers classes with tiny configs, after diffusers' own ``tests/pipelines/flux2`` recipe, and
saves them with ``save_pretrained``; ``Flux2Pipeline.from_pretrained(dir)`` / ``Flux2KleinPipeline.from_pretrained
(dir)`` (what :func:`fluxserve.predictors.loading.load_pipeline` calls for real weights) loads the result, and the
pipeline runs its real text encoder on the prompt.

Kinds:

* ``flux2-dev``: ``Flux2Pipeline``; a ``Mistral3ForConditionalGeneration`` text encoder (with a tiny Pixtral
  vision tower, unused for text), a transformer with the guidance embedding.
* ``klein``: ``Flux2KleinPipeline`` (``is_distilled``, as the 4-step klein checkpoints); a ``Qwen3ForCausalLM``
  text encoder wrapped by ``Qwen2Tokenizer`` (``Qwen2TokenizerFast`` in transformers 4), no guidance embedding.

Shapes. The scale factors are the real ones, so sizes behave as with real FLUX.2: the VAE has 4 blocks
(``vae_scale_factor`` 8) and the pipeline packs 2×2 latent patches, so a side must be a multiple of 16 and a
1024² image is 4096 image tokens. The VAE has 4 latent channels (real: 32), so the transformer takes 16 packed
channels (real: 128). The transformer has one double and one single block of 2 heads × 16 (RoPE axes 4×4). The text
encoders are narrow (hidden 16) but deep enough for the layers the pipelines read by default: FLUX.2 [dev] stacks
hidden states (10, 20, 30) of Mistral and klein (9, 18, 27) of Qwen3, so the tiny Mistral has 30 layers and the
tiny Qwen3 27, and the transformer's ``joint_attention_dim`` is 3 × 16. A 1024×1024 4-step call takes about a
second on 2 CPU cores.

Tokenizers are made from scratch: a byte-level BPE (the 256 byte symbols, merges learnt deterministically from a
small corpus, the model's special tokens) built with the ``tokenizers`` library, with a chat template in the
model's format. The FLUX.2 [dev] checkout on the Hub ships a ``PixtralProcessor`` as its ``tokenizer``; that class
needs torchvision, and the pipeline only uses its tokenizer for text prompts, so the tiny checkout stores the fast
tokenizer itself (``apply_chat_template`` takes the same arguments).

Run ``python -m fluxserve.predictors.tiny DIR flux2-dev|klein`` to build one by hand.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

Flux2Kind = Literal["flux2-dev", "klein"]
FLUX2_KINDS: tuple[Flux2Kind, ...] = ("flux2-dev", "klein")

#: The text the BPE merges are learnt from: ordinary prompts and the chat markup's words.
_CORPUS = (
    "A painting of a squirrel eating a burger.",
    "A photo of an astronaut riding a horse on the moon.",
    "a cool dog wearing sunglasses, studio lighting, 35mm film",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "An old lighthouse at sunset, waves crashing on the rocks; oil on canvas.",
    "Put the cat from the second image on the sofa of the first; make the room warmer and the light softer.",
    "You are an AI that reasons about image descriptions. You give structured responses focusing on object "
    "relationships, object attribution and actions without speculation.",
    "system user assistant",
)
#: How many merges the tiny BPE learns (vocabulary: specials + 256 bytes + merges).
_MERGES = 96

#: Mistral's special tokens (ids 0-2 as in Mistral: unk, bos, eos) and Pixtral's image tokens.
_MISTRAL_SPECIALS = (
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "[INST]",
    "[/INST]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[IMG]",
    "[IMG_BREAK]",
    "[IMG_END]",
)
_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")

#: Mistral Small 3's chat format; message content may be a string or a list of ``{"type": "text", ...}`` parts
#: (what ``Flux2Pipeline`` sends). Images would be ``[IMG]``; the pipeline only sends them to upsample prompts.
_MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set ns = namespace(text='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}"
    "{%- else -%}{%- set ns.text = ns.text + '[IMG]' -%}{%- endif -%}"
    "{%- endfor -%}{%- set text = ns.text -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}{{- '[SYSTEM_PROMPT]' + text + '[/SYSTEM_PROMPT]' -}}"
    "{%- elif message['role'] == 'user' -%}{{- '[INST]' + text + '[/INST]' -}}"
    "{%- else -%}{{- text + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)
#: Qwen3's chat format, with ``enable_thinking=False`` adding the empty think block as Qwen3's template does.
_QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}{%- endif -%}"
)

_TEXT_HIDDEN = 16
#: Hidden-state layers the pipelines stack by default (their ``text_encoder_out_layers``).
_OUT_LAYERS: dict[Flux2Kind, tuple[int, ...]] = {"flux2-dev": (10, 20, 30), "klein": (9, 18, 27)}

_LATENT_CHANNELS = 4

_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    # 4 blocks -> vae_scale_factor 8, as in the real FLUX.2 VAE; the 1024² and 512² stages get 4 channels.
    "block_out_channels": (4, 4, 8, 8),
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": _LATENT_CHANNELS,
    "norm_num_groups": 4,
    "sample_size": 1024,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    # An attention mid-block at a 128x128 latent would need a 16384^2 attention matrix.
    "mid_block_add_attention": False,
    "batch_norm_eps": 1e-4,
    "batch_norm_momentum": 0.1,
    "patch_size": (2, 2),
}

_TRANSFORMER_CONFIG: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 4 * _LATENT_CHANNELS,  # 2x2 latent patches, packed
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 3 * _TEXT_HIDDEN,  # three stacked hidden-state layers
    "timestep_guidance_channels": 256,
    "mlp_ratio": 3.0,
    "axes_dims_rope": (4, 4, 4, 4),  # sums to attention_head_dim
    "rope_theta": 2000,
}

#: FLUX.2's scheduler config (the pipelines pass an empirical ``mu``, so dynamic shifting is on).
_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
    "time_shift_type": "exponential",
}


def build_tiny_flux2_pipeline(path: Path, kind: Flux2Kind) -> Path:
    """Build a tiny random FLUX.2 ``kind`` (``flux2-dev`` or ``klein``) checkout at ``path`` unless it is there.

    Idempotent: returns at once when ``path/model_index.json`` exists. Built in a temporary sibling directory and
    renamed into place under a lock next to ``path`` (see :func:`~fluxserve.predictors.tiny.build_tiny_pipeline`).
    Weights are seeded, so every build is the same. Returns ``path``.
    """
    if kind not in FLUX2_KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, FLUX2_KINDS))}, not {kind!r}")
    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent / f".{path.name}.lock"):
        if (path / "model_index.json").is_file():
            return path
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        tmp.chmod(0o755)
        try:
            _build_into(tmp, kind)
            _publish(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def component_configs(kind: Flux2Kind) -> dict[str, dict[str, Any]]:
    """Copies of the tiny configs of ``kind``: ``transformer`` (Flux2Transformer2DModel), ``vae``
    (AutoencoderKLFlux2), ``text_encoder`` (keyword arguments of the text model's config) and ``scheduler``."""
    if kind not in FLUX2_KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, FLUX2_KINDS))}, not {kind!r}")
    return {
        "transformer": {**_TRANSFORMER_CONFIG, "guidance_embeds": kind == "flux2-dev"},
        "vae": dict(_VAE_CONFIG),
        "text_encoder": _text_config(kind, vocab_size=0),
        "scheduler": dict(_SCHEDULER_CONFIG),
    }


def _text_config(kind: Flux2Kind, vocab_size: int) -> dict[str, Any]:
    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": _TEXT_HIDDEN,
        "intermediate_size": 32,
        # hidden_states[k] is the output of layer k: the deepest layer read must exist.
        "num_hidden_layers": max(_OUT_LAYERS[kind]),
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5,
    }
    if kind == "flux2-dev":
        return {
            **common,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 4,
            "sliding_window": None,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": _MISTRAL_SPECIALS.index("<pad>"),
        }
    return {
        **common,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": _QWEN_SPECIALS.index("<|im_end|>"),
        "pad_token_id": _QWEN_SPECIALS.index("<|endoftext|>"),
    }


# --- building in place, shared with tiny.py ---------------------------------------------------------------------


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (no-op where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX; the atomic rename alone still keeps us safe
        yield
        return
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _publish(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` to ``path`` atomically; keep an existing finished ``path``."""
    try:
        os.rename(tmp, path)  # replaces an empty directory on POSIX
    except OSError:
        if (path / "model_index.json").is_file():
            return  # someone else won the race (e.g. without a working lock)
        if path.is_dir() and not any(path.iterdir()):
            # Windows cannot rename onto an existing (empty) directory.
            path.rmdir()
            os.rename(tmp, path)
            return
        raise FileExistsError(
            f"{path} exists but is not a diffusers pipeline (no model_index.json); remove it or pick "
            "another path for the tiny pipeline"
        ) from None


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Turn off transformers' and diffusers' tqdm bars for the duration (restored afterwards)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    restore = [
        lib.enable_progress_bar for lib in (transformers_logging, diffusers_logging) if lib.is_progress_bar_enabled()
    ]
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        for enable in restore:
            enable()


# --- tokenizers ------------------------------------------------------------------------------------------------


def _byte_level_pre_tokenizer() -> Any:
    """Qwen2's pre-tokenizer (its split regex, then the GPT-2 byte-to-unicode map); Mistral's tekken is alike."""
    from tokenizers import Regex, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _learn_merges(corpus: tuple[str, ...], count: int) -> list[tuple[str, str]]:
    """``count`` BPE merges learnt from ``corpus``: the most frequent pair each time, ties by the smaller pair, so
    the result never depends on hash order (the ``tokenizers`` trainer makes no such promise)."""
    pre_tokenizer = _byte_level_pre_tokenizer()
    words: Counter[tuple[str, ...]] = Counter()
    for line in corpus:
        for piece, _ in pre_tokenizer.pre_tokenize_str(line):
            words[tuple(piece)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        words = Counter({_apply_merge(word, best): n for word, n in words.items()})
    return merges


def _apply_merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _vocab(specials: tuple[str, ...], merges: list[tuple[str, str]]) -> dict[str, int]:
    """Special tokens first, then the 256 byte symbols, then one token per merge."""
    vocab: dict[str, int] = {}
    from tokenizers import pre_tokenizers

    # The GPT-2 byte-to-unicode symbols, sorted: the alphabet's own order is not specified.
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    for token in (*specials, *byte_symbols, *(a + b for a, b in merges)):
        vocab.setdefault(token, len(vocab))
    return vocab


def make_tokenizer(kind: Flux2Kind) -> Any:
    """The tiny tokenizer of ``kind``, built in memory: a ``TokenizersBackend`` (``PreTrainedTokenizerFast``) in
    Mistral's format for ``flux2-dev``, a ``Qwen2Tokenizer`` for ``klein``; each with its chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders
    from tokenizers.models import BPE

    merges = _learn_merges(_CORPUS, _MERGES)
    if kind == "klein":
        from transformers import Qwen2Tokenizer

        qwen_class: Any = Qwen2Tokenizer  # its stubs type merges as strings; tokenizers takes pairs too
        qwen: Any = qwen_class(vocab=_vocab(_QWEN_SPECIALS, merges), merges=merges, model_max_length=32768)
        qwen.add_special_tokens({"additional_special_tokens": list(_QWEN_SPECIALS[1:])})
        qwen.chat_template = _QWEN_CHAT_TEMPLATE
        return qwen

    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(BPE(vocab=_vocab(_MISTRAL_SPECIALS, merges), merges=merges, fuse_unk=False))
    backend.pre_tokenizer = _byte_level_pre_tokenizer()
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _MISTRAL_SPECIALS])
    mistral: Any = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=131072,
    )
    mistral.chat_template = _MISTRAL_CHAT_TEMPLATE
    return mistral


def _vocab_size(tokenizer: Any) -> int:
    """The embedding size for ``tokenizer``: every id, rounded up to a multiple of 64."""
    return -(-len(tokenizer) // 64) * 64


# --- the pipeline ---------------------------------------------------------------------------------------------


def _text_encoder(kind: Flux2Kind, tokenizer: Any) -> Any:
    config = _text_config(kind, vocab_size=_vocab_size(tokenizer))
    if kind == "klein":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3ForCausalLM(Qwen3Config(**config))
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    vision = PixtralVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=4, image_size=30, patch_size=6
    )
    return Mistral3ForConditionalGeneration(
        Mistral3Config(
            vision_config=vision,
            text_config=MistralConfig(**config),
            image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        )
    )


def _build_into(directory: Path, kind: Flux2Kind) -> None:
    """Construct the tiny pipeline and ``save_pretrained`` it into ``directory``."""
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Pipeline,
        Flux2Transformer2DModel,
    )

    rng_state = torch.random.get_rng_state()
    try:
        tokenizer = make_tokenizer(kind)
        torch.manual_seed(0)
        text_encoder = _text_encoder(kind, tokenizer)
        torch.manual_seed(0)
        transformer: Any = Flux2Transformer2DModel(**_TRANSFORMER_CONFIG, guidance_embeds=kind == "flux2-dev")
        torch.manual_seed(0)
        vae: Any = AutoencoderKLFlux2(**_VAE_CONFIG)
        scheduler = FlowMatchEulerDiscreteScheduler(**_SCHEDULER_CONFIG)
        components: dict[str, Any] = {
            "scheduler": scheduler,
            "vae": vae.eval(),
            "text_encoder": text_encoder.eval(),
            "tokenizer": tokenizer,
            "transformer": transformer.eval(),
        }
        pipe: Any = (
            Flux2KleinPipeline(**components, is_distilled=True) if kind == "klein" else Flux2Pipeline(**components)
        )
        with _quiet_progress_bars():
            pipe.save_pretrained(str(directory))
        label = "FLUX.2 [dev]" if kind == "flux2-dev" else "FLUX.2 [klein]"
        (directory / "TINY_RANDOM_WEIGHTS.txt").write_text(
            f"Tiny random {label}-shaped pipeline built by fluxserve.predictors.tiny_flux2 for tests and --demo. "
            "The weights are random: its images are noise, not a model's output.\n",
            encoding="utf-8",
        )
    finally:
        torch.random.set_rng_state(rng_state)
