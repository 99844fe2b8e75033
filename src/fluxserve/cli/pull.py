"""``fluxserve pull OWNER/NAME``: download a model's weights from the Hugging Face Hub before serving it.

The weights go to the Hugging Face cache (``HF_HOME``), where the predictors look first, or to ``--local-dir``.
Only the diffusers folders are fetched (``model_index.json`` and the component folders); FLUX repos also hold
single-file checkpoints of the same weights in BFL's format, which diffusers does not read and which would double
the download. The model's weights setting decides what is pulled: a hub id is downloaded, a local directory
means there is nothing to pull.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NamedTuple

import typer

from fluxserve.config import Settings

EXIT_FAILED = 1
EXIT_USAGE = 2

#: The parts of a diffusers FLUX checkout that ``FluxPipeline.from_pretrained`` reads.
ALLOW_PATTERNS = [
    "model_index.json",
    "scheduler/*",
    "text_encoder/*",
    "text_encoder_2/*",
    "tokenizer/*",
    "tokenizer_2/*",
    "transformer/*",
    "vae/*",
]
#: Weight formats diffusers does not need when safetensors are there (FLUX repos ship safetensors).
IGNORE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "*.gguf"]


class Pullable(NamedTuple):
    """A model whose weights ``pull`` can fetch: the setting that names them and its environment variable."""

    setting: str
    env: str


PULLABLE: dict[str, Pullable] = {
    "black-forest-labs/flux-schnell": Pullable("flux_schnell_weights", "FLUXSERVE_FLUX_SCHNELL_WEIGHTS"),
    "black-forest-labs/flux-dev": Pullable("flux_dev_weights", "FLUXSERVE_FLUX_DEV_WEIGHTS"),
    "black-forest-labs/flux-kontext-dev": Pullable("flux_kontext_dev_weights", "FLUXSERVE_FLUX_KONTEXT_DEV_WEIGHTS"),
    "black-forest-labs/flux-krea-dev": Pullable("flux_krea_dev_weights", "FLUXSERVE_FLUX_KREA_DEV_WEIGHTS"),
    "black-forest-labs/flux-2-klein-4b": Pullable("flux2_klein_4b_weights", "FLUXSERVE_FLUX2_KLEIN_4B_WEIGHTS"),
    "black-forest-labs/flux-2-klein-9b": Pullable("flux2_klein_9b_weights", "FLUXSERVE_FLUX2_KLEIN_9B_WEIGHTS"),
    "black-forest-labs/flux-2-dev": Pullable("flux2_dev_weights", "FLUXSERVE_FLUX2_DEV_WEIGHTS"),
}


def _resolve(model: str) -> str | None:
    """``owner/name`` for ``model`` given as ``owner/name`` or just ``name``; None if unknown."""
    if model in PULLABLE:
        return model
    matches = [ref for ref in PULLABLE if ref.split("/", 1)[1] == model]
    return matches[0] if len(matches) == 1 else None


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def pull(
    model: Annotated[str, typer.Argument(help="The model, e.g. black-forest-labs/flux-dev (or just flux-dev).")],
    local_dir: Annotated[
        Path | None,
        typer.Option(
            "--local-dir",
            help="Download into this directory instead of the Hugging Face cache; then point the model's "
            "FLUXSERVE_…_WEIGHTS at it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Download a model's weights from the Hugging Face Hub (progress bars on the terminal)."""
    from fluxserve.predictors.loading import HUB_ID, hf_offline, hub_reachable

    ref = _resolve(model)
    if ref is None:
        raise _fail(f"no weights to pull for {model!r}; models with weights: {', '.join(PULLABLE)}", EXIT_USAGE)
    entry = PULLABLE[ref]
    weights: str = getattr(Settings(), entry.setting)

    if Path(weights).expanduser().is_dir():
        typer.echo(f"{ref} loads its weights from the local directory {weights} ({entry.env}); nothing to pull.")
        return
    if not HUB_ID.match(weights) or weights.startswith((".", "~", "/")):
        raise _fail(f"{entry.env} is {weights!r}: neither an existing directory nor a Hugging Face repo id")

    offline_help = (
        f"copy the weights (a diffusers checkout of {weights}) to a directory on this machine and set {entry.env} to it"
    )
    if hf_offline():
        raise _fail(f"HF_HUB_OFFLINE is set, so {weights} cannot be downloaded; unset it, or {offline_help}")
    if not hub_reachable():
        raise _fail(f"cannot reach the Hugging Face hub to download {weights} (no network?); {offline_help}")

    typer.echo(f"Pulling {weights} for {ref}" + (f" into {local_dir}" if local_dir else "") + " …")
    path = _download(weights, local_dir, offline_help)
    typer.echo(f"Downloaded {weights} to {path}")
    if local_dir is not None:
        typer.echo(f"Serve it with {entry.env}={local_dir}")
    else:
        typer.echo(f"fluxserve loads it from the Hugging Face cache while {entry.env} is {weights}.")


def component_patterns(model_index: dict[str, object]) -> list[str]:
    """The files a diffusers checkout's ``model_index.json`` names: itself and each component's folder.

    FLUX.1 and FLUX.2 differ in components (FLUX.2 has one text encoder, Mistral or Qwen3), so the folders come
    from the index rather than a fixed list; the single-file checkpoints at the repo root are never named.
    """
    names = [key for key, value in model_index.items() if not key.startswith("_") and isinstance(value, list)]
    return ["model_index.json", *(f"{name}/*" for name in names)]


def _component_patterns(repo_id: str) -> list[str]:
    """:func:`component_patterns` of the repo's index (fetched first); :data:`ALLOW_PATTERNS` if it cannot be read."""
    import json

    from huggingface_hub import hf_hub_download

    try:
        with open(hf_hub_download(repo_id, "model_index.json"), encoding="utf-8") as fh:
            index = json.load(fh)
    except Exception:
        # The download below reports what went wrong (gated, missing, offline) in the user's terms.
        return ALLOW_PATTERNS
    return component_patterns(index) if isinstance(index, dict) else ALLOW_PATTERNS


def _download(repo_id: str, local_dir: Path | None, offline_help: str) -> str:
    """``snapshot_download`` with its errors turned into messages that say what to do."""
    import httpx
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    licence = f"accept the licence at https://huggingface.co/{repo_id} and run `huggingface-cli login` or set HF_TOKEN"
    try:
        return str(
            snapshot_download(
                repo_id,
                local_dir=str(local_dir) if local_dir else None,
                allow_patterns=_component_patterns(repo_id),
                ignore_patterns=IGNORE_PATTERNS,
            )
        )
    except GatedRepoError as exc:  # a subclass of RepositoryNotFoundError: check it first
        raise _fail(f"{repo_id} is gated and this machine may not download it yet: {licence}") from exc
    except RepositoryNotFoundError as exc:
        raise _fail(
            f"{repo_id} was not found on the Hugging Face hub (a gated repo also looks like this when you are not "
            f"logged in: {licence})"
        ) from exc
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, httpx.TransportError) as exc:
        detail = " ".join(str(exc).split())
        raise _fail(f"cannot reach the Hugging Face hub to download {repo_id} ({detail}); {offline_help}") from exc
