"""Settings: every knob, its default and a one-line doc. The only reader of ``os.environ``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fluxserve"


class Settings(BaseSettings):
    """fluxserve's configuration. Each field is read from ``FLUXSERVE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FLUXSERVE_", extra="ignore")

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the SQLite database, output files and demo weights live.",
    )
    database_url: str | None = Field(
        default=None,
        description="Database URL; default SQLite in the data dir. PostgreSQL: postgresql://user@host:5432/db",
    )
    blob_dir: Path | None = Field(
        default=None,
        description="Directory for output files (default: outputs/ in the data dir); with several hosts, "
        "a shared volume every API replica and worker mounts.",
    )
    s3_bucket: str | None = Field(
        default=None, description="Store output files in this S3-compatible bucket instead of a directory."
    )
    s3_prefix: str = Field(default="fluxserve/outputs", description="Key prefix inside the bucket.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint for non-AWS storage (MinIO, Ceph, R2, …); credentials: AWS_* env."
    )
    s3_region: str | None = Field(default=None, description="S3 region (default: from the AWS config).")
    host: str = Field(default="127.0.0.1", description="Address `fluxserve serve` binds to.")
    port: int = Field(default=5000, description="Port `fluxserve serve` listens on.")
    demo: bool = Field(
        default=False,
        description="Serve the FLUX models from tiny random pipelines built into the data dir (images are noise).",
    )
    worker: bool = Field(default=True, description="Run the prediction worker inside the API process.")
    worker_models: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Models this process's worker runs, comma-separated owner/name (default: every model served); "
        "`fluxserve worker --model` overrides it. The others are still served, for workers elsewhere to run.",
    )
    worker_concurrency: int = Field(
        default=1, ge=1, description="Predictions the in-process worker runs at once (1 per GPU)."
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`fluxserve worker` serves /metrics and /health on this port (default: none; 0 picks a free one).",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="Address the worker's metrics port binds to (0.0.0.0 for a remote Prometheus)."
    )
    device: str | None = Field(default=None, description="torch device for predictors; default cuda if present.")
    flux_schnell_weights: str = Field(
        default="black-forest-labs/FLUX.1-schnell",
        description="Hugging Face repo id or local diffusers directory for flux-schnell.",
    )
    flux_dev_weights: str = Field(
        default="black-forest-labs/FLUX.1-dev",
        description="Hugging Face repo id (gated) or local diffusers directory for flux-dev.",
    )
    flux_kontext_dev_weights: str = Field(
        default="black-forest-labs/FLUX.1-Kontext-dev",
        description="Hugging Face repo id (gated) or local diffusers directory for flux-kontext-dev.",
    )
    flux_krea_dev_weights: str = Field(
        default="black-forest-labs/FLUX.1-Krea-dev",
        description="Hugging Face repo id (gated) or local diffusers directory for flux-krea-dev.",
    )
    flux2_dev_weights: str = Field(
        default="black-forest-labs/FLUX.2-dev",
        description="Hugging Face repo id (gated) or local diffusers directory for flux-2-dev.",
    )
    flux2_klein_4b_weights: str = Field(
        default="black-forest-labs/FLUX.2-klein-4B",
        description="Hugging Face repo id or local diffusers directory for flux-2-klein-4b.",
    )
    flux2_klein_9b_weights: str = Field(
        default="black-forest-labs/FLUX.2-klein-9B",
        description="Hugging Face repo id (gated) or local diffusers directory for flux-2-klein-9b.",
    )
    accept_noncommercial_licenses: bool = Field(
        default=False,
        description="Serve the models whose weights are licensed for non-commercial use only (FLUX.1 [dev], "
        "Kontext [dev], Krea [dev], FLUX.2 [dev], FLUX.2 [klein] 9B): set it only if your use is allowed by "
        "their licenses. --demo sets it (its weights are random).",
    )
    # go_fast (fluxserve.predictors.go_fast): how the pipeline of `go_fast: true` requests is built on a GPU.
    go_fast_steps: str = Field(
        default="default",
        description="go_fast steps: default (each model's own), none, or a comma-separated list of step names "
        "(fluxserve.predictors.go_fast.options.STEPS; checked at start).",
    )
    go_fast_attention: str = Field(
        default="_native_cudnn",
        description="go_fast's diffusers attention backend (_native_cudnn, _flash_3, native, …).",
    )
    go_fast_compile_mode: str | None = Field(
        default=None,
        description="go_fast's torch.compile mode (max-autotune, max-autotune-no-cudagraphs, reduce-overhead); "
        "default (unset): torch's default.",
    )
    go_fast_compile_dynamic: bool | None = Field(
        default=None,
        description="torch.compile(dynamic=…) for go_fast: auto (unset: static for the first shape, dynamic from "
        "the second), true or false.",
    )
    go_fast_taylor_order: int = Field(default=1, description="Taylor order of go_fast's step cache (1: linear).")
    go_fast_fbcache_threshold: float = Field(default=0.08, description="go_fast's First Block Cache threshold.")
    go_fast_warmup: Literal["all", "one", "none"] = Field(
        default="all",
        description="Shapes go_fast runs once at setup, so requests never compile: all served shapes, one (1:1 at "
        "1 MP) or none.",
    )
    compile_cache_dir: Path | None = Field(
        default=None, description="Where go_fast keeps compile artifacts (default: compile-cache/ in the data dir)."
    )
    go_fast_on_cpu: bool = Field(
        default=False,
        description="Build go_fast on a CPU too (1, true or yes; tests and the CPU benchmark only: in service, "
        "go_fast on CPU is a no-op).",
    )
    trust_forwarded_headers: bool = Field(
        default=False,
        description="Build URLs from X-Forwarded-Proto/Host/Prefix (set this only behind a proxy you run).",
    )
    public_url: str | None = Field(
        default=None,
        description="Fixed external base URL (e.g. https://img.example.com); overrides the request's host.",
    )
    allow_loopback_urls: bool = Field(
        default=False,
        description="Let webhooks and image URLs reach loopback addresses (tests and local development only).",
    )
    openai_default_model: str = Field(
        default="black-forest-labs/flux-schnell",
        description="The model of an OpenAI Images API generation that names none.",
    )
    openai_default_edit_model: str | None = Field(
        default=None,
        description="The model of an OpenAI image edit that names none (default: the first served of "
        "flux-kontext-dev, flux-2-klein-4b, flux-2-dev, flux-dev).",
    )
    openai_model_aliases: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object of OpenAI model names to served models, e.g. {"dall-e-3": '
        '"black-forest-labs/flux-dev"} (a served model\'s bare name, such as flux-schnell, always works).',
    )
    openai_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long an OpenAI Images API call waits for its predictions before answering 504 with "
        "their ids (they go on running).",
    )
    max_upload_bytes: int = Field(default=100 * 1024 * 1024, gt=0, description="Largest file POST /v1/files accepts.")
    file_ttl_seconds: int = Field(
        default=24 * 3600, gt=0, description="How long uploaded files live (Replicate: 24 h)."
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A connection must send a whole request head within this (slowloris)."
    )
    body_idle_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A request body that sends nothing for this long is cut off."
    )
    keep_alive_seconds: float = Field(default=5.0, ge=1, description="Idle keep-alive connections close after this.")
    max_connections: int = Field(
        default=1000, gt=0, description="Connections plus requests in flight beyond which requests get a 503."
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024,
        gt=0,
        description="Largest request body (JSON) the API reads; uploads to /v1/files have max_upload_bytes.",
    )
    max_text_chars: int = Field(
        default=100_000, gt=0, description="Longest text input (a prompt) a prediction takes, in characters."
    )
    strict_inputs: bool = Field(
        default=False,
        description="Refuse (422) input keys a model does not take. Default: drop them and say so in the "
        "prediction's logs, as Replicate and Cog do.",
    )
    max_input_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, description="Largest image input (URL, data URI or file) a prediction takes."
    )
    fetch_timeout_seconds: float = Field(default=30.0, gt=0, description="Time cap for fetching an input URL.")
    max_lora_bytes: int = Field(
        default=2_000_000_000, gt=0, description="Largest LoRA file (or .tar) a prediction may download."
    )
    lora_fetch_timeout_seconds: float = Field(default=600.0, gt=0, description="Time cap for downloading a LoRA.")
    lora_cache_bytes: int = Field(
        default=20_000_000_000,
        gt=0,
        description="Disk budget of the LoRA cache (<data dir>/lora-cache); least recently used files go first.",
    )
    lora_max_resident: int = Field(
        default=8, ge=1, description="LoRA adapters a model keeps loaded between predictions (least recently used go)."
    )
    data_retention_seconds: int = Field(
        default=3600,
        ge=0,
        description="After this long, a finished prediction's input, output, logs and output files are removed "
        "(data_removed: true); 0 keeps them forever. Replicate: 1 hour for API predictions.",
    )
    max_run_seconds: float = Field(
        default=1800, gt=0, description="A prediction running longer than this fails (Replicate: 30 minutes)."
    )
    rate_limit_create: str = Field(
        default="600/minute", description="Per key: predictions created (the `limits` notation; Replicate's default)."
    )
    rate_limit_other: str = Field(default="3000/minute", description="Per key: every other API request.")
    rate_limit_storage: str = Field(
        default="memory://", description="Where rate-limit counters live; redis://host:6379 to share them."
    )
    queue_cap: int = Field(
        default=0, ge=0, description="Per model: queued predictions beyond which create answers 429 (0: no cap)."
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, description="How long a worker's claim on a prediction lasts without a heartbeat."
    )
    preload: str = Field(
        default="all",
        description="Models a worker loads at start, before it claims their predictions: all, none (each loads "
        "at its first prediction; for development) or a comma-separated list of owner/name.",
    )
    gpu_memory_gb: float | None = Field(
        default=None,
        gt=0,
        description="Memory budget for resident models (default: the GPU's memory, or RAM on a CPU host). Least "
        "recently used models are moved to CPU RAM or dropped to keep within it.",
    )
    swap_after_seconds: float = Field(
        default=60.0,
        ge=0,
        description="A worker prefers predictions of models it holds in memory, unless another model's oldest "
        "queued prediction has waited this long.",
    )
    shutdown_grace_seconds: float = Field(
        default=10.0, ge=0, description="On shutdown, how long running predictions may take to finish."
    )
    poll_interval: float = Field(
        default=2.0, gt=0, description="Seconds an idle worker sleeps between queue checks when not woken."
    )
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite synchronous pragma (WAL mode). NORMAL survives process crashes; FULL also power loss.",
    )
    models_file: Path | None = Field(
        default=None,
        description="TOML file listing the models served here and those forwarded to an upstream Replicate-format "
        "provider (see README, Gateway). Default: the built-in FLUX models, run locally.",
    )
    extra_models: list[str] = Field(
        default_factory=list,
        description="Import paths 'module:attr' of extra ModelSpecs (or lists of them) to serve, "
        "e.g. fluxserve.predictors.fixtures:ALL for tests and benchmarks.",
    )
    log_level: str = Field(default="info", description="Log level: debug, info, warning, error.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines as text, or as JSON objects (ts, level, logger, message, prediction_id) for collectors.",
    )

    @field_validator("worker_models", mode="before")
    @classmethod
    def _worker_models(cls, value: Any) -> Any:
        # "a/b,c/d" from the environment (a JSON list works too); empty means every model.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            value = [part.strip() for part in text.split(",") if part.strip()]
        return value or None

    @field_validator("go_fast_compile_mode", mode="before")
    @classmethod
    def _compile_mode(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return None if value in ("", "default") else value
        return value

    @field_validator("go_fast_compile_dynamic", mode="before")
    @classmethod
    def _compile_dynamic(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip().lower()
        if value not in ("auto", "true", "false", "1", "0"):
            raise ValueError(f"FLUXSERVE_GO_FAST_COMPILE_DYNAMIC must be auto, true or false, not {value!r}")
        return None if value == "auto" else value in ("true", "1")

    @field_validator("go_fast_warmup", mode="before")
    @classmethod
    def _warmup(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip().lower()
        if value not in ("all", "one", "none"):
            raise ValueError(f"FLUXSERVE_GO_FAST_WARMUP must be all, one or none, not {value!r}")
        return value

    @field_validator("go_fast_steps")
    @classmethod
    def _steps(cls, value: str) -> str:
        # Checked at start like every other setting, not first when a model loads. Imported here: the step
        # names belong to go_fast, and its options module imports nothing heavy.
        from fluxserve.predictors.go_fast.options import parse_steps

        parse_steps(value)
        return value

    @field_validator("go_fast_attention", mode="before")
    @classmethod
    def _attention(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("compile_cache_dir", mode="before")
    @classmethod
    def _compile_cache_dir(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            # An empty value means unset; a quoted "~/…" reaches us unexpanded, so expand it here.
            return Path(value).expanduser() if str(value) else None
        return value

    @field_validator("go_fast_on_cpu", mode="before")
    @classmethod
    def _on_cpu(cls, value: Any) -> Any:
        # A test switch: only an explicit yes turns it on; anything else (an empty value too) leaves it off.
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes")
        return value

    def resolved_database_url(self) -> str:
        """The database URL in use: the setting, or SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'fluxserve.db'}"

    def default_api_base(self) -> str:
        """The API base used in webhook bodies of predictions whose creating request is unknown."""
        origin = self.public_url.rstrip("/") if self.public_url else f"http://{self.host}:{self.port}"
        return origin + "/v1"

    def resolved_blob_dir(self) -> Path:
        """Directory holding output files (when not in S3)."""
        return self.blob_dir or self.data_dir / "outputs"

    @property
    def scratch_dir(self) -> Path:
        """Directory where predictors write files before they are stored."""
        return self.data_dir / "tmp"

    @property
    def noncommercial_accepted(self) -> bool:
        """Whether non-commercial models are served: the operator accepted their licenses, or ``--demo``
        serves random weights that no license covers."""
        return self.accept_noncommercial_licenses or self.demo

    @property
    def demo_weights_dir(self) -> Path:
        """Directory holding the tiny random pipelines of ``--demo``."""
        return self.data_dir / "demo-weights"
