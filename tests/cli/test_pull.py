"""``fluxserve pull`` without a network: clear messages, fast, and nothing downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fluxserve

SRC = str(Path(fluxserve.__file__).resolve().parents[1])


def pull(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("FLUXSERVE_", "HF_")) and "PROXY" not in k.upper()
    }
    environment = {
        **clean,
        "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
        "HF_HOME": str(tmp_path / "hf-home"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "fluxserve.cli", "pull", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        # A closed local port stands in for "no network": the probe is refused at once.
        ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "cannot reach the Hugging Face hub"),
    ],
)
def test_offline_pull_says_how_to_copy_weights(tmp_path: Path, env: dict[str, str], reason: str) -> None:
    start = time.monotonic()
    result = pull("black-forest-labs/flux-dev", tmp_path=tmp_path, **env)
    assert time.monotonic() - start < 30
    assert result.returncode == 1, result.stderr
    assert reason in result.stderr
    assert "black-forest-labs/FLUX.1-dev" in result.stderr
    assert "set FLUXSERVE_FLUX_DEV_WEIGHTS" in result.stderr
    assert not (tmp_path / "hf-home" / "hub").exists() or not any((tmp_path / "hf-home" / "hub").iterdir())


def test_download_failure_through_the_hub_client_is_explained(tmp_path: Path) -> None:
    # A proxy makes the reachability probe step aside, so huggingface_hub itself meets the dead network.
    result = pull(
        "flux-kontext-dev",
        tmp_path=tmp_path,
        HTTPS_PROXY="http://127.0.0.1:9",
        HF_ENDPOINT="https://hub.invalid",
        HF_HUB_ETAG_TIMEOUT="2",
        HF_HUB_DOWNLOAD_TIMEOUT="2",
    )
    assert result.returncode == 1, result.stderr
    assert "cannot reach the Hugging Face hub to download black-forest-labs/FLUX.1-Kontext-dev" in result.stderr
    assert "set FLUXSERVE_FLUX_KONTEXT_DEV_WEIGHTS" in result.stderr


def test_local_directory_has_nothing_to_pull(tmp_path: Path) -> None:
    result = pull("flux-schnell", tmp_path=tmp_path, FLUXSERVE_FLUX_SCHNELL_WEIGHTS=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "nothing to pull" in result.stdout


def test_unknown_model_and_bad_setting(tmp_path: Path) -> None:
    unknown = pull("someone/else", tmp_path=tmp_path)
    assert unknown.returncode == 2
    assert "black-forest-labs/flux-dev" in unknown.stderr
    bad = pull("flux-dev", tmp_path=tmp_path, FLUXSERVE_FLUX_DEV_WEIGHTS="./no/such/dir")
    assert bad.returncode == 1
    assert "FLUXSERVE_FLUX_DEV_WEIGHTS" in bad.stderr


def test_gated_repo_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import httpx
    import huggingface_hub
    import typer
    from huggingface_hub.errors import GatedRepoError

    from fluxserve.cli import pull as module

    def gated(repo_id: str, **_: object) -> str:
        response = httpx.Response(401, request=httpx.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
        raise GatedRepoError(f"401 Client Error: access to model {repo_id} is restricted", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(typer.Exit) as info:
        module._download("black-forest-labs/FLUX.1-dev", None, "copy them")
    assert info.value.exit_code == 1
    err = capsys.readouterr().err
    assert "accept the licence at https://huggingface.co/black-forest-labs/FLUX.1-dev" in err
    assert "huggingface-cli login" in err and "HF_TOKEN" in err


def test_pull_fetches_the_folders_the_model_index_names() -> None:
    """FLUX.2 checkouts have other components than FLUX.1 (one text encoder, no tokenizer_2): the download takes
    the folders model_index.json names, never the single-file checkpoints beside them."""
    from fluxserve.cli.pull import PULLABLE, component_patterns

    index = {
        "_class_name": "Flux2KleinPipeline",
        "_diffusers_version": "0.42.1",
        "is_distilled": True,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3ForCausalLM"],
        "tokenizer": ["transformers", "Qwen2TokenizerFast"],
        "transformer": ["diffusers", "Flux2Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLFlux2"],
    }
    assert component_patterns(index) == [
        "model_index.json",
        "scheduler/*",
        "text_encoder/*",
        "tokenizer/*",
        "transformer/*",
        "vae/*",
    ]
    for ref in ("flux-2-dev", "flux-2-klein-4b", "flux-2-klein-9b", "flux-krea-dev"):
        assert f"black-forest-labs/{ref}" in PULLABLE
