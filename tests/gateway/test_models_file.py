"""The models file, schema conversion and the schema cache of forwarded models."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from fluxserve.catalog.fields import validate_input
from fluxserve.config import Settings
from fluxserve.gateway.models import cache_path, load_schema
from fluxserve.gateway.routes import ModelsFileError, load_routes, normalise_base_url
from fluxserve.gateway.served import build_registry
from fluxserve.gateway.specs import fields_from_openapi
from tests.support import free_port

BUILTIN = {"black-forest-labs/flux-schnell", "black-forest-labs/flux-dev"}

# The shape Replicate publishes for black-forest-labs/flux-kontext-pro (Cog: enums as allOf refs).
KONTEXT_PRO = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "title": "Input",
                "required": ["prompt"],
                "properties": {
                    "seed": {"type": "integer", "title": "Seed", "x-order": 4},
                    "prompt": {"type": "string", "title": "Prompt", "x-order": 0},
                    "input_image": {"type": "string", "format": "uri", "title": "Input Image", "x-order": 1},
                    "aspect_ratio": {
                        "allOf": [{"$ref": "#/components/schemas/aspect_ratio"}],
                        "default": "match_input_image",
                        "x-order": 2,
                    },
                    "safety_tolerance": {
                        "type": "integer",
                        "default": 2,
                        "maximum": 6,
                        "minimum": 0,
                        "x-order": 5,
                    },
                    "prompt_upsampling": {"type": "boolean", "default": False, "x-order": 6},
                    "extra": {"type": "object", "x-order": 7},
                },
            },
            "aspect_ratio": {"enum": ["match_input_image", "1:1", "16:9"], "type": "string"},
            "Output": {"type": "string", "format": "uri"},
        }
    }
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_routes_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PROVIDER_TOKEN", "secret")
    routes = load_routes(
        write(
            tmp_path,
            """
[providers.comet]
base_url = "https://api.cometapi.com/replicate"
token_env = "TEST_PROVIDER_TOKEN"
stream = false
[models."black-forest-labs/flux-schnell"]
weights = "/srv/schnell"
[models."black-forest-labs/flux-kontext-pro"]
provider = "comet"
""",
        ),
        BUILTIN,
    )
    assert [(r.ref, r.weights) for r in routes.local] == [("black-forest-labs/flux-schnell", "/srv/schnell")]
    (route,) = routes.upstream
    assert route.upstream_model == "black-forest-labs/flux-kontext-pro"
    assert route.provider.base_url == "https://api.cometapi.com/replicate/v1"
    assert route.provider.stream is False and route.provider.token() == "secret"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.x]\n", "must look like owner/name"),
        ('[models."a/b"]\n', "no local implementation of it"),
        ('[models."a/b"]\nprovider = "nope"\n', "is not defined under [providers]"),
        ('[providers.p]\nbase_url = "ftp://x"\ntoken_env = "T"\n[models."a/b"]\nprovider="p"\n', "http(s) URL"),
        ('[providers.p]\nbase_url = "https://x"\ntoken_env = "UNSET_TOKEN_VAR"\n', "UNSET_TOKEN_VAR"),
        ('[models."black-forest-labs/flux-dev"]\nwieghts = "/x"\n', "unknown key(s) wieghts"),
        ("not toml [", "not valid TOML"),
        ('[models."black-forest-labs/flux-dev"]\n[collections.x]\nmodels = ["a/b"]\n', "not served: a/b"),
        ('[models."black-forest-labs/flux-dev"]\n[collections.Big]\nmodels = []\n', "lower-case letters"),
        ('[models."black-forest-labs/flux-dev"]\n[collections.x]\nmodels = "a/b"\n', "list of owner/name"),
        ('[models."black-forest-labs/flux-dev"]\nreadme = "missing.md"\n', "cannot read missing.md"),
    ],
)
def test_routes_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ModelsFileError) as caught:
        load_routes(write(tmp_path, text), BUILTIN)
    assert message in str(caught.value) and str(tmp_path / "models.toml") in str(caught.value)


def test_collections_and_readmes(tmp_path: Path) -> None:
    (tmp_path / "dev.md").write_text("# FLUX.1 [dev] here\n")
    path = write(
        tmp_path,
        """
[models."black-forest-labs/flux-schnell"]
[models."black-forest-labs/flux-dev"]
readme = "dev.md"
[collections.portraits]
name = "Portraits"
description = "For faces"
models = ["black-forest-labs/flux-dev"]
""",
    )
    routes = load_routes(path, BUILTIN)
    (portraits,) = routes.collections
    assert (portraits.slug, portraits.name, portraits.description) == ("portraits", "Portraits", "For faces")
    assert portraits.models == ("black-forest-labs/flux-dev",)
    assert routes.readmes == {"black-forest-labs/flux-dev": "# FLUX.1 [dev] here\n"}
    registry = build_registry(Settings(models_file=path, data_dir=tmp_path))
    assert sorted(registry.collections) == ["flux", "portraits"]
    assert registry.collections["flux"].models == ("black-forest-labs/flux-schnell", "black-forest-labs/flux-dev")
    assert registry.readmes["black-forest-labs/flux-dev"].startswith("# FLUX.1 [dev]")


def test_base_url_normalisation() -> None:
    assert normalise_base_url("https://api.replicate.com/v1/") == "https://api.replicate.com/v1"
    assert normalise_base_url("https://api.cometapi.com/replicate") == "https://api.cometapi.com/replicate/v1"


def test_fields_from_a_replicate_schema_validate_like_the_provider() -> None:
    fields = fields_from_openapi(KONTEXT_PRO)
    assert [f.name for f in fields] == [
        "prompt",
        "input_image",
        "aspect_ratio",
        "seed",
        "safety_tolerance",
        "prompt_upsampling",
        "extra",
    ]
    by_name = {f.name: f for f in fields}
    assert by_name["input_image"].type == "uri" and by_name["extra"].type == "json"
    assert by_name["aspect_ratio"].choices == ("match_input_image", "1:1", "16:9")
    assert by_name["prompt"].required
    ok = validate_input(fields, {"prompt": "x", "safety_tolerance": "3", "extra": {"any": [1]}})
    assert not ok.errors and ok.values["safety_tolerance"] == 3 and ok.values["aspect_ratio"] == "match_input_image"
    bad = validate_input(fields, {"aspect_ratio": "7:3", "safety_tolerance": 9})
    assert {e.field for e in bad.errors} == {"input.prompt", "input.aspect_ratio", "input.safety_tolerance"}


async def test_unreachable_provider_falls_back_to_the_cached_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_PROVIDER_TOKEN", "secret")
    path = write(
        tmp_path,
        f"""
[providers.down]
base_url = "http://127.0.0.1:{free_port()}/v1"
token_env = "TEST_PROVIDER_TOKEN"
[models."someone/kontext-like"]
provider = "down"
""",
    )
    # A model whose schema fluxserve does not ship (shipped ones fall back to that: test_published_schemas.py).
    (route,) = load_routes(path, BUILTIN).upstream
    async with httpx.AsyncClient() as client:
        spec = await load_schema(route, tmp_path, client)
        assert spec.unavailable is not None and "could not be fetched" in spec.unavailable
        cached = cache_path(tmp_path, route)
        cached.parent.mkdir(parents=True)
        cached.write_text(json.dumps(KONTEXT_PRO))
        spec = await load_schema(route, tmp_path, client)
    assert spec.unavailable is None and spec.inputs[0].name == "prompt" and spec.openapi_schema == KONTEXT_PRO
