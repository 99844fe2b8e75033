"""The models file (``FLUXSERVE_MODELS_FILE``): which models run here and which are forwarded upstream.

A TOML file with two tables::

    [providers.replicate]
    base_url = "https://api.replicate.com/v1"      # or https://api.cometapi.com/replicate/v1
    token_env = "REPLICATE_API_TOKEN"               # the variable holding the operator's provider token

    [models."black-forest-labs/flux-schnell"]       # runs here (a built-in model)
    weights = "/srv/weights/FLUX.1-schnell"         # optional: overrides FLUXSERVE_FLUX_SCHNELL_WEIGHTS

    [models."black-forest-labs/flux-kontext-pro"]   # forwarded
    provider = "replicate"
    upstream_model = "black-forest-labs/flux-kontext-pro"   # optional: default is the same name
    version = "…"                                   # optional: use the version route with this id

    [collections.portraits]                         # optional: a group of served models (GET /v1/collections)
    name = "Portraits"
    description = "Models we use for portraits"
    models = ["black-forest-labs/flux-dev"]

A model's table may also name a ``readme`` (a Markdown file, relative to the models file) that
``GET /v1/models/{owner}/{name}/readme`` returns instead of the card fluxserve writes from the schema.

When the file is given it is the whole list: built-in models it does not name are not served. Every error
names the file and the key at fault, so a typo stops the process at start with a message that says where.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from fluxserve.catalog.registry import Collection

InputFiles = Literal["auto", "data_uri", "upload"]

_REF = re.compile(r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*$", re.IGNORECASE)
_VERSION = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")

_PROVIDER_KEYS = {"base_url", "token_env", "concurrency", "stream", "input_files", "timeout", "unreachable_seconds"}
_MODEL_KEYS = {"provider", "upstream_model", "version", "input_schema", "weights", "description", "readme"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


class ModelsFileError(ValueError):
    """The models file cannot be used; the message names the file and the offending key."""


@dataclass(frozen=True)
class Provider:
    """An upstream that speaks the Replicate HTTP API (Replicate itself, CometAPI, another fluxserve)."""

    name: str
    #: The API base including its version segment: ``https://api.replicate.com/v1`` or ``…/replicate/v1``.
    base_url: str
    token_env: str
    #: Predictions forwarded to this provider at once, per worker process (they wait on the network, not a GPU).
    concurrency: int = 16
    #: Follow ``urls.stream`` for prompt updates (polling remains the fallback when the stream fails).
    stream: bool = True
    #: How file inputs travel upstream: ``auto`` sends data URIs up to 256 KiB and uploads larger files to the
    #: provider's ``/files``; ``data_uri`` always inlines (CometAPI documents no files route); ``upload`` always
    #: uploads.
    input_files: InputFiles = "auto"
    #: Seconds one HTTP request to the provider may take.
    timeout: float = 30.0
    #: How long the provider may stay unreachable while a prediction is followed before it is failed.
    unreachable_seconds: float = 120.0

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of the provider (output URLs on it may be fetched with the token)."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def token(self) -> str:
        """The provider token from the environment (checked present when the file is loaded)."""
        return os.environ.get(self.token_env, "")


@dataclass(frozen=True)
class UpstreamRoute:
    """A model served by forwarding each prediction to a provider."""

    ref: str
    provider: Provider
    upstream_model: str
    version: str | None = None
    #: A local JSON file holding the model's OpenAPI schema (for providers without a models route).
    input_schema: Path | None = None
    description: str | None = None


@dataclass(frozen=True)
class LocalRoute:
    """A built-in model served on this deployment's own GPUs."""

    ref: str
    weights: str | None = None


@dataclass(frozen=True)
class ModelRoutes:
    """Everything the models file says, in file order."""

    local: tuple[LocalRoute, ...]
    upstream: tuple[UpstreamRoute, ...]
    collections: tuple[Collection, ...] = ()
    #: Readme text by model (from each model's ``readme`` file).
    readmes: dict[str, str] = field(default_factory=dict)


def normalise_base_url(url: str) -> str:
    """Strip trailing slashes; a base without ``/v1`` at its end gets it (``…/replicate`` → ``…/replicate/v1``)."""
    url = url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    return url


def load_routes(path: Path, builtin: set[str]) -> ModelRoutes:
    """Parse and check the models file; ``builtin`` names the models that can run locally."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelsFileError(f"models file {where} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"models file {where} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"providers", "models", "collections"}
    if unknown:
        raise ModelsFileError(
            f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}; use providers, models, collections"
        )
    providers = {name: _provider(where, name, table) for name, table in _table(where, data, "providers").items()}
    models = _table(where, data, "models")
    if not models:
        raise ModelsFileError(f"{where}: [models] lists no model")
    local: list[LocalRoute] = []
    upstream: list[UpstreamRoute] = []
    readmes: dict[str, str] = {}
    for ref, table in models.items():
        key = f'models."{ref}"'
        if not _REF.match(ref):
            raise ModelsFileError(f"{where}: {key}: a model name must look like owner/name")
        if not isinstance(table, dict):
            raise ModelsFileError(f"{where}: {key} must be a table")
        extra = set(table) - _MODEL_KEYS
        if extra:
            raise ModelsFileError(f"{where}: {key}: unknown key(s) {', '.join(sorted(extra))}")
        if "readme" in table:
            readmes[ref] = _readme(path, key, table["readme"])
        provider_name = table.get("provider")
        if provider_name is None:
            if ref not in builtin:
                raise ModelsFileError(
                    f"{where}: {key} names no provider, so it would run here, but this build has no local "
                    f"implementation of it (local models: {', '.join(sorted(builtin))})"
                )
            weights = table.get("weights")
            if weights is not None and not isinstance(weights, str):
                raise ModelsFileError(f"{where}: {key}.weights must be a string")
            local.append(LocalRoute(ref, weights))
            continue
        if provider_name not in providers:
            raise ModelsFileError(
                f"{where}: {key}.provider = {provider_name!r} is not defined under [providers] "
                f"(defined: {', '.join(sorted(providers)) or 'none'})"
            )
        if "weights" in table:
            raise ModelsFileError(f"{where}: {key}: weights apply to local models, not to forwarded ones")
        upstream_model = table.get("upstream_model", ref)
        if not isinstance(upstream_model, str) or not _REF.match(upstream_model):
            raise ModelsFileError(f"{where}: {key}.upstream_model must look like owner/name")
        version = table.get("version")
        if version is not None and (not isinstance(version, str) or not _VERSION.match(version)):
            raise ModelsFileError(f"{where}: {key}.version must be a version id string")
        schema_file = table.get("input_schema")
        schema_path: Path | None = None
        if schema_file is not None:
            if not isinstance(schema_file, str):
                raise ModelsFileError(f"{where}: {key}.input_schema must be a path string")
            schema_path = (path.parent / schema_file).resolve()
        description = table.get("description")
        upstream.append(
            UpstreamRoute(
                ref=ref,
                provider=providers[provider_name],
                upstream_model=upstream_model,
                version=version,
                input_schema=schema_path,
                description=description if isinstance(description, str) else None,
            )
        )
    served = {route.ref for route in local} | {route.ref for route in upstream}
    collections = tuple(
        _collection(where, slug, table, served) for slug, table in _table(where, data, "collections").items()
    )
    return ModelRoutes(tuple(local), tuple(upstream), collections, readmes)


def _readme(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ModelsFileError(f"{path}: {key}.readme must be a path string")
    try:
        return (path.parent / value).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelsFileError(f"{path}: {key}.readme: cannot read {value}: {exc}") from exc


def _collection(where: str, slug: str, table: Any, served: set[str]) -> Collection:
    key = f"collections.{slug}"
    if not _SLUG.match(slug):
        raise ModelsFileError(f"{where}: [{key}]: a collection slug is lower-case letters, digits and dashes")
    if not isinstance(table, dict):
        raise ModelsFileError(f"{where}: [{key}] must be a table")
    extra = set(table) - {"name", "description", "models"}
    if extra:
        raise ModelsFileError(f"{where}: [{key}]: unknown key(s) {', '.join(sorted(extra))}")
    name, description, models = table.get("name", slug), table.get("description", ""), table.get("models")
    if not isinstance(name, str) or not isinstance(description, str):
        raise ModelsFileError(f"{where}: [{key}]: name and description must be strings")
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ModelsFileError(f"{where}: [{key}].models must be a list of owner/name strings")
    missing = [m for m in models if m not in served]
    if missing:
        raise ModelsFileError(f"{where}: [{key}].models names model(s) not served: {', '.join(missing)}")
    return Collection(slug, name, description, tuple(models))


def _table(where: str, data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ModelsFileError(f"{where}: [{name}] must be a table")
    return value


def _provider(where: str, name: str, table: Any) -> Provider:
    key = f"providers.{name}"
    if not isinstance(table, dict):
        raise ModelsFileError(f"{where}: [{key}] must be a table")
    extra = set(table) - _PROVIDER_KEYS
    if extra:
        raise ModelsFileError(f"{where}: [{key}]: unknown key(s) {', '.join(sorted(extra))}")
    base_url = table.get("base_url")
    if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https"):
        raise ModelsFileError(f"{where}: [{key}].base_url must be an http(s) URL")
    if urlsplit(base_url).username or urlsplit(base_url).password:
        raise ModelsFileError(f"{where}: [{key}].base_url must not carry credentials; use token_env")
    token_env = table.get("token_env")
    if not isinstance(token_env, str) or not token_env:
        raise ModelsFileError(f"{where}: [{key}].token_env must name the environment variable holding the token")
    if not os.environ.get(token_env):
        raise ModelsFileError(f"{where}: [{key}]: environment variable {token_env} (token_env) is not set or empty")
    concurrency = table.get("concurrency", 16)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 1000:
        raise ModelsFileError(f"{where}: [{key}].concurrency must be an integer from 1 to 1000")
    stream = table.get("stream", True)
    if not isinstance(stream, bool):
        raise ModelsFileError(f"{where}: [{key}].stream must be true or false")
    input_files = table.get("input_files", "auto")
    if input_files not in ("auto", "data_uri", "upload"):
        raise ModelsFileError(f'{where}: [{key}].input_files must be "auto", "data_uri" or "upload"')
    numbers: dict[str, float] = {}
    for setting, default in (("timeout", 30.0), ("unreachable_seconds", 120.0)):
        value = table.get(setting, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ModelsFileError(f"{where}: [{key}].{setting} must be a positive number of seconds")
        numbers[setting] = float(value)
    return Provider(
        name=name,
        base_url=normalise_base_url(base_url),
        token_env=token_env,
        concurrency=concurrency,
        stream=stream,
        input_files=input_files,
        timeout=numbers["timeout"],
        unreachable_seconds=numbers["unreachable_seconds"],
    )
