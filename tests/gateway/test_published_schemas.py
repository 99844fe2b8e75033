"""The schemas fluxserve ships for Black Forest Labs' API-only models, and how the gateway uses them.

(a) flux-1.1-pro, flux-1.1-pro-ultra and flux-pro against the npm package all-the-public-replicate-models, field by
field; (b) the FLUX.2 and Kontext models against the facts of their Replicate pages (named in
src/fluxserve/catalog/bfl_api_fields.py); (c) a models file of bare ``provider = "…"`` lines: with the provider
unreachable every model is listed, ready, takes a valid create and refuses a bad input with a 422 naming the field,
and with a provider that has no models route (CometAPI) the prediction is forwarded; (d) a provider that publishes
its own schema wins over the shipped one (and the disk cache over the shipped one when the provider is down).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxserve.catalog.bfl_api import PUBLISHED_SCHEMAS, URI_OUTPUT, PublishedModel
from fluxserve.catalog.fields import validate_input
from fluxserve.config import Settings
from fluxserve.gateway.models import cache_path, load_schema
from fluxserve.gateway.routes import load_routes
from fluxserve.gateway.served import build_registry
from fluxserve.gateway.specs import fields_from_openapi, initial_spec
from tests.catalog.test_replicate_schemas import PACKAGE_DIR, input_differences
from tests.inprocess import open_inprocess
from tests.support import free_port

BFL = "black-forest-labs"
PACKAGE_MODELS = [f"{BFL}/flux-1.1-pro", f"{BFL}/flux-1.1-pro-ultra", f"{BFL}/flux-pro"]
FLUX2 = [f"{BFL}/flux-2-pro", f"{BFL}/flux-2-flex", f"{BFL}/flux-2-max"]
KONTEXT = [f"{BFL}/flux-kontext-pro", f"{BFL}/flux-kontext-max"]
ALL = PACKAGE_MODELS + FLUX2 + KONTEXT
TOKEN_ENV = "FLUXSERVE_TEST_BFL_TOKEN"
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a")).decode()


def schemas(model: PublishedModel) -> dict[str, Any]:
    found: dict[str, Any] = model.doc["components"]["schemas"]
    return found


def props(model: PublishedModel) -> dict[str, Any]:
    found: dict[str, Any] = schemas(model)["Input"]["properties"]
    return found


def enum(model: PublishedModel, name: str) -> list[Any]:
    ref = props(model)[name]["allOf"][0]["$ref"].rsplit("/", 1)[-1]
    members: list[Any] = schemas(model)[ref]["enum"]
    return members


def order(model: PublishedModel) -> list[str]:
    return sorted(props(model), key=lambda name: props(model)[name]["x-order"])


def valid_input(ref: str) -> dict[str, Any]:
    """A small valid input of each model (Kontext edits an image; the others only need a prompt)."""
    if ref in KONTEXT:
        return {"prompt": "make it blue", "input_image": "https://example.com/in.png", "aspect_ratio": "1:1"}
    return {"prompt": "a red fox", "seed": 3}


# --- (a) the three models the npm package has -----------------------------------------------------------------


@pytest.fixture(scope="module")
def replicate_models() -> dict[str, dict[str, Any]]:
    """The package's models by ``owner/name`` (models.json is ~60 MB: read once for the module)."""
    models_json = PACKAGE_DIR / "models.json"
    if not models_json.is_file():
        if os.environ.get("CI"):
            pytest.fail("tests/js/node_modules is required in CI (scripts/test runs npm ci)")
        pytest.skip("all-the-public-replicate-models is not installed (run: npm ci --prefix tests/js)")
    with models_json.open(encoding="utf-8") as f:
        models: list[dict[str, Any]] = json.load(f)
    return {f"{m['owner']}/{m['name']}": m for m in models}


@pytest.mark.parametrize("ref", PACKAGE_MODELS)
def test_shipped_schema_equals_the_npm_packages(replicate_models: dict[str, dict[str, Any]], ref: str) -> None:
    """Input (names, types, defaults, enums in order, bounds, required, x-order, titles, descriptions), Output,
    the description and the latest version id, as Replicate publishes them."""
    model, theirs = PUBLISHED_SCHEMAS[ref], replicate_models[ref]
    latest = theirs["latest_version"]
    assert model.version_id == latest["id"]
    assert model.description == theirs["description"]
    ours, their_schemas = schemas(model), latest["openapi_schema"]["components"]["schemas"]
    lines = input_differences(f"{ref} Input", ours["Input"], their_schemas["Input"], (ours, their_schemas))
    assert not lines, "schema differs from Replicate's:\n" + "\n".join(lines)
    assert json.dumps(ours["Output"], sort_keys=True) == json.dumps(their_schemas["Output"], sort_keys=True)


def test_the_newer_models_are_not_in_the_package(replicate_models: dict[str, dict[str, Any]]) -> None:
    """Once the package has one of them, it should be compared with the package instead of hand facts."""
    assert [ref for ref in FLUX2 + KONTEXT if ref in replicate_models] == []


# --- (b) the facts of the newer models ---------------------------------------------------------------------


@dataclass
class Facts:
    """What a model's Replicate page states (see src/fluxserve/catalog/bfl_api_fields.py for the sources)."""

    fields: list[str]
    defaults: dict[str, Any]
    bounds: dict[str, tuple[float, float]]
    enums: dict[str, list[str]]
    max_images: int | None = None
    nullable: list[str] = field(default_factory=list)


FLUX2_RATIOS = ["match_input_image", "custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"]
FLUX2_ENUMS = {
    "aspect_ratio": FLUX2_RATIOS,
    "resolution": ["match_input_image", "0.5 MP", "1 MP", "2 MP", "4 MP"],
    "output_format": ["webp", "jpg", "png"],
}
FLUX2_DEFAULTS = {
    "input_images": [],
    "aspect_ratio": "1:1",
    "resolution": "1 MP",
    "safety_tolerance": 2,
    "output_format": "webp",
    "output_quality": 80,
}
FLUX2_BOUNDS = {"width": (256, 2048), "height": (256, 2048), "safety_tolerance": (1, 5), "output_quality": (0, 100)}
FLUX2_FIELDS = ["prompt", "input_images", "aspect_ratio", "resolution", "width", "height", "safety_tolerance", "seed"]
KONTEXT_RATIOS = ["match_input_image", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "4:5", "5:4", "21:9", "9:21"]


def kontext_facts(fields: list[str]) -> Facts:
    """Kontext [pro] and [max] state the same facts; only their order differs."""
    return Facts(
        fields,
        {
            "aspect_ratio": "match_input_image",
            "output_format": "png",
            "safety_tolerance": 2,
            "prompt_upsampling": False,
        },
        {"safety_tolerance": (0, 6)},
        {"aspect_ratio": [*KONTEXT_RATIOS, "2:1", "1:2"], "output_format": ["jpg", "png"]},
        nullable=["seed", "input_image"],
    )


FACTS = {
    f"{BFL}/flux-2-pro": Facts(
        [*FLUX2_FIELDS, "output_format", "output_quality"], FLUX2_DEFAULTS, FLUX2_BOUNDS, FLUX2_ENUMS, 8,
        ["width", "height"],
    ),
    f"{BFL}/flux-2-max": Facts(
        [*FLUX2_FIELDS, "output_format", "output_quality"], FLUX2_DEFAULTS, FLUX2_BOUNDS, FLUX2_ENUMS, 8,
        ["width", "height"],
    ),
    f"{BFL}/flux-2-flex": Facts(
        [*FLUX2_FIELDS, "prompt_upsampling", "steps", "guidance", "output_format", "output_quality"],
        {**FLUX2_DEFAULTS, "prompt_upsampling": True, "steps": 30, "guidance": 4.5},
        {**FLUX2_BOUNDS, "steps": (1, 50), "guidance": (1.5, 10)},
        FLUX2_ENUMS,
        10,
        ["width", "height"],
    ),
    f"{BFL}/flux-kontext-pro": kontext_facts(
        ["aspect_ratio", "output_format", "seed", "prompt", "input_image", "safety_tolerance", "prompt_upsampling"]
    ),
    f"{BFL}/flux-kontext-max": kontext_facts(
        ["prompt", "input_image", "aspect_ratio", "prompt_upsampling", "seed", "output_format", "safety_tolerance"]
    ),
}  # fmt: skip


def test_every_shipped_model_is_checked() -> None:
    assert sorted(PUBLISHED_SCHEMAS) == sorted(ALL) == sorted(PACKAGE_MODELS + list(FACTS))


@pytest.mark.parametrize("ref", list(FACTS))
def test_shipped_schema_states_replicates_facts(ref: str) -> None:
    model, facts = PUBLISHED_SCHEMAS[ref], FACTS[ref]
    assert order(model) == facts.fields
    assert [props(model)[name]["x-order"] for name in facts.fields] == list(range(len(facts.fields)))
    assert schemas(model)["Input"]["required"] == ["prompt"]
    assert schemas(model)["Output"] == URI_OUTPUT == {"type": "string", "format": "uri", "title": "Output"}
    for name, default in facts.defaults.items():
        assert props(model)[name]["default"] == default, name
        assert type(props(model)[name]["default"]) is type(default), name
    for name in set(props(model)) - set(facts.defaults):
        assert "default" not in props(model)[name], name
    for name, (low, high) in facts.bounds.items():
        assert (props(model)[name]["minimum"], props(model)[name]["maximum"]) == (low, high), name
    for name, members in facts.enums.items():
        assert enum(model, name) == members, name
    assert sorted(name for name, prop in props(model).items() if prop.get("nullable")) == sorted(facts.nullable)
    assert all(prop.get("description") for prop in props(model).values())
    assert len(model.version_id) == 64 and int(model.version_id, 16) >= 0
    assert model.description and model.ref == ref
    if facts.max_images is not None:
        assert props(model)["input_images"]["items"] == {"type": "string", "format": "uri"}
        assert f"Maximum {facts.max_images} images" in props(model)["input_images"]["description"]
        assert model.item_limits() == {"input_images": facts.max_images}


def test_facts_the_brief_names() -> None:
    """The headline facts, spelled out: image limits, the flex extras, Kontext's safety range."""
    pro, flex, mx = (PUBLISHED_SCHEMAS[ref] for ref in FLUX2)
    assert [m.item_limits()["input_images"] for m in (pro, flex, mx)] == [8, 10, 8]
    assert "steps" not in props(pro) and "prompt_upsampling" not in props(pro) and "guidance" not in props(mx)
    assert (props(flex)["steps"]["default"], props(flex)["guidance"]["default"]) == (30, 4.5)
    assert props(flex)["prompt_upsampling"]["default"] is True
    for ref in KONTEXT:
        prop = props(PUBLISHED_SCHEMAS[ref])["safety_tolerance"]
        assert (prop["minimum"], prop["maximum"], prop["default"]) == (0, 6, 2)


def test_shipped_modules_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, fluxserve.gateway.specs, fluxserve.catalog.bfl_api; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- (c) and (d): the gateway -----------------------------------------------------------------------------------


@dataclass
class FakeProvider:
    """A Replicate-format provider on loopback: models route optional (CometAPI has none), creates recorded, every
    prediction succeeds at once with one PNG (a data URI, so the gateway downloads nothing)."""

    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    schema_requests: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _prediction(self, ref: str, body: dict[str, Any]) -> dict[str, Any]:
                return {"id": "up-1", "model": ref, "status": "succeeded", "input": body.get("input"),
                        "output": f"data:image/png;base64,{PNG}", "logs": "done\n", "error": None,
                        "metrics": {"predict_time": 1.5}, "urls": {}}  # fmt: skip

            def do_GET(self) -> None:
                path = self.path.removeprefix("/v1")
                if path.startswith("/models/"):
                    ref = path.removeprefix("/models/")
                    provider.schema_requests.append(ref)
                    if ref in provider.schemas:
                        version = {"id": "f" * 64, "openapi_schema": provider.schemas[ref]}
                        self._send(200, {"description": "the provider's words", "latest_version": version})
                    else:
                        self._send(404, {"detail": "Not found"})
                elif path.startswith("/predictions/"):
                    ref, body = provider.created[-1]
                    self._send(200, self._prediction(ref, body))
                else:
                    self._send(404, {"detail": "Not found"})

            def do_POST(self) -> None:
                path = self.path.removeprefix("/v1")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ref = path.removeprefix("/models/").removesuffix("/predictions")
                provider.created.append((ref, body))
                self._send(201, self._prediction(ref, body))

        return Handler


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    fake.server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def models_file(tmp_path: Path, base_url: str, refs: list[str] = ALL) -> Path:
    """The least an operator writes: a provider, and one line per model."""
    lines = [f'[providers.replicate]\nbase_url = "{base_url}"\ntoken_env = "{TOKEN_ENV}"\ntimeout = 2\n']
    lines += [f'[models."{ref}"]\nprovider = "replicate"\n' for ref in refs]
    path = tmp_path / "models.toml"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "r8_test-token")


@pytest.mark.usefixtures("token")
def test_forwarded_models_start_ready_with_the_shipped_schema(tmp_path: Path) -> None:
    """Before anything is fetched: ready, Replicate's schema and version id, no 503 window at start."""
    path = models_file(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    registry = build_registry(Settings(models_file=path, data_dir=tmp_path))
    for ref in ALL:
        spec = registry.get(ref)
        assert spec is not None and spec.unavailable is None and spec.provider == "replicate"
        assert spec.openapi_schema == PUBLISHED_SCHEMAS[ref].doc
        assert spec.description == PUBLISHED_SCHEMAS[ref].description
        assert registry.by_version(PUBLISHED_SCHEMAS[ref].version_id) is spec


@pytest.mark.usefixtures("token")
def test_a_schema_file_a_pinned_version_or_another_name_decide_otherwise(tmp_path: Path) -> None:
    """An operator's schema file is read at start (pending until then); a pinned version other than the shipped
    one has no shipped schema; a local name for a shipped upstream model has it, and so has a shipped name whose
    upstream model is named otherwise (the provider may name it so)."""
    (tmp_path / "mine.json").write_text(json.dumps({"properties": {"prompt": {"type": "string"}}}))
    path = tmp_path / "models.toml"
    path.write_text(f"""
[providers.p]
base_url = "http://127.0.0.1:{free_port()}/v1"
token_env = "{TOKEN_ENV}"
[models."{BFL}/flux-2-pro"]
provider = "p"
input_schema = "mine.json"
[models."{BFL}/flux-2-max"]
provider = "p"
version = "{"0" * 64}"
[models."{BFL}/flux-kontext-pro"]
provider = "p"
version = "{PUBLISHED_SCHEMAS[f"{BFL}/flux-kontext-pro"].version_id}"
[models."gw/pro"]
provider = "p"
upstream_model = "{BFL}/flux-2-pro"
[models."{BFL}/flux-1.1-pro"]
provider = "p"
upstream_model = "someone/else"
""")
    routes = {route.ref: route for route in load_routes(path, set()).upstream}
    states = {ref: initial_spec(route).unavailable is None for ref, route in routes.items()}
    assert states == {
        f"{BFL}/flux-2-pro": False,
        f"{BFL}/flux-2-max": False,
        f"{BFL}/flux-kontext-pro": True,
        "gw/pro": True,
        f"{BFL}/flux-1.1-pro": True,
    }


async def test_unreachable_provider_every_model_listed_validated_and_accepted(
    tmp_path: Path, token: None, caplog: pytest.LogCaptureFixture
) -> None:
    """(c) The provider does not answer at all: each model is listed with its shipped schema, a valid create is
    accepted (queued to be forwarded), a bad input is a 422 naming the field, the Replicate version id pins it."""
    path = models_file(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    caplog.set_level("WARNING", logger="fluxserve.gateway")
    async with open_inprocess(tmp_path / "gw", models_file=path, with_worker=False) as fs:
        listed = {f"{m['owner']}/{m['name']}": m for m in (await fs.client.get("/v1/models")).json()["results"]}
        for ref in ALL:
            published = PUBLISHED_SCHEMAS[ref]
            assert listed[ref]["latest_version"]["openapi_schema"] == published.doc
            assert listed[ref]["description"] == published.description
            created = await fs.client.post(f"/v1/models/{ref}/predictions", json={"input": valid_input(ref)})
            assert created.status_code in (201, 202), (ref, created.text)
            assert created.json()["status"] == "starting"
            bad = await fs.client.post(f"/v1/models/{ref}/predictions", json={"input": {"prompt": "x", "seed": "z"}})
            assert bad.status_code == 422 and bad.json()["invalid_fields"][0]["field"] == "input.seed", ref
            pinned = await fs.client.post(
                "/v1/predictions", json={"version": published.version_id, "input": valid_input(ref)}
            )
            assert pinned.status_code == 201 and pinned.json()["model"] == ref, pinned.text
            versions = (await fs.client.get(f"/v1/models/{ref}/versions")).json()["results"]
            assert published.version_id in [v["id"] for v in versions]
        too_tolerant = await fs.client.post(
            f"/v1/models/{BFL}/flux-2-pro/predictions", json={"input": {"prompt": "x", "safety_tolerance": 9}}
        )
        assert too_tolerant.status_code == 422
        (error,) = too_tolerant.json()["invalid_fields"]
        assert error["field"] == "input.safety_tolerance" and "less than or equal to 5" in error["description"]
        images = [f"https://example.com/{i}.png" for i in range(9)]
        too_many = await fs.client.post(
            f"/v1/models/{BFL}/flux-2-pro/predictions", json={"input": {"prompt": "x", "input_images": images}}
        )
        assert too_many.status_code == 422
        (error,) = too_many.json()["invalid_fields"]
        assert error["field"] == "input.input_images" and "at most 8 URIs (got 9)" in error["description"]
        ten = await fs.client.post(
            f"/v1/models/{BFL}/flux-2-flex/predictions", json={"input": {"prompt": "x", "input_images": images[:9]}}
        )
        assert ten.status_code == 201, ten.text
        for ref, value in ((f"{BFL}/flux-kontext-pro", 7), (f"{BFL}/flux-kontext-max", -1)):
            bad = await fs.client.post(
                f"/v1/models/{ref}/predictions", json={"input": {**valid_input(ref), "safety_tolerance": value}}
            )
            assert bad.status_code == 422 and bad.json()["invalid_fields"][0]["field"] == "input.safety_tolerance"
        bad_ratio = await fs.client.post(
            f"/v1/models/{BFL}/flux-1.1-pro-ultra/predictions",
            json={"input": {"prompt": "x", "aspect_ratio": "custom"}},
        )
        assert bad_ratio.status_code == 422
    assert "using the schema shipped with fluxserve" in caplog.text


async def test_provider_without_a_models_route_gets_the_prediction(
    tmp_path: Path, token: None, provider: FakeProvider
) -> None:
    """(c) CometAPI's case: its models route is missing, so the shipped schema validates (defaults filled in as
    Replicate would) and the prediction is forwarded and succeeds."""
    ref = f"{BFL}/flux-2-flex"
    path = models_file(tmp_path, provider.base_url, [ref])
    async with open_inprocess(tmp_path / "gw", models_file=path, allow_loopback_urls=True) as fs:
        assert provider.schema_requests == [ref]
        created = await fs.client.post(f"/v1/models/{ref}/predictions", json={"input": {"prompt": "a fox"}})
        assert created.status_code == 201, created.text
        done = await fs.wait_for(created.json()["id"])
    assert done["status"] == "succeeded", done
    ((upstream_ref, body),) = provider.created
    assert upstream_ref == ref
    sent = body["input"]
    assert sent["prompt"] == "a fox"
    assert (sent["steps"], sent["guidance"], sent["prompt_upsampling"], sent["resolution"]) == (30, 4.5, True, "1 MP")


def _changed_schema() -> dict[str, Any]:
    """flux-2-pro's shipped schema as a provider might publish a newer version: safety up to 6, a new field."""
    doc = json.loads(json.dumps(PUBLISHED_SCHEMAS[f"{BFL}/flux-2-pro"].doc))
    inputs = doc["components"]["schemas"]["Input"]["properties"]
    inputs["safety_tolerance"]["maximum"] = 6
    inputs["style"] = {"type": "string", "title": "Style", "x-order": 10, "description": "New upstream"}
    return dict(doc)


async def test_the_providers_schema_wins(tmp_path: Path, token: None, provider: FakeProvider) -> None:
    """(d) A provider that publishes a (different) schema: it is the one listed and validated here."""
    ref = f"{BFL}/flux-2-pro"
    provider.schemas[ref] = _changed_schema()
    path = models_file(tmp_path, provider.base_url, [ref])
    async with open_inprocess(tmp_path / "gw", models_file=path, with_worker=False) as fs:
        model = (await fs.client.get(f"/v1/models/{ref}")).json()
        assert model["latest_version"]["openapi_schema"] == provider.schemas[ref]
        assert model["description"] == "the provider's words"
        ok = await fs.client.post(
            f"/v1/models/{ref}/predictions", json={"input": {"prompt": "x", "safety_tolerance": 6, "style": "a"}}
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["input"] == {"prompt": "x", "safety_tolerance": 6, "style": "a"}
        pinned = await fs.client.post(
            "/v1/predictions", json={"version": PUBLISHED_SCHEMAS[ref].version_id, "input": {"prompt": "x"}}
        )
        assert pinned.status_code == 201, pinned.text


async def test_providers_schema_then_cache_then_shipped(tmp_path: Path, token: None) -> None:
    """(d) load_schema's order: the provider's answer (cached), else that cache, else the shipped schema."""
    ref = f"{BFL}/flux-2-pro"
    changed = _changed_schema()
    path = models_file(tmp_path, "https://up.example/v1", [ref])
    (route,) = load_routes(path, set()).upstream
    answers: list[httpx.Response] = [
        httpx.Response(200, json={"latest_version": {"openapi_schema": changed}}),
        httpx.Response(503),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == f"https://up.example/v1/models/{ref}"
        return answers.pop(0)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        fetched = await load_schema(route, tmp_path, client)
        assert fetched.openapi_schema == changed and fetched.unavailable is None
        assert json.loads(cache_path(tmp_path, route).read_text()) == changed
        # The provider's schema does not say how many images input_images takes: the shipped fact still holds.
        images = {f.name: f for f in fetched.inputs}["input_images"]
        assert images.max_items == 8
        assert PUBLISHED_SCHEMAS[ref].version_id in fetched.replicate_versions
        cached = await load_schema(route, tmp_path, client)
        assert cached.openapi_schema == changed and cached.unavailable is None
    cache_path(tmp_path, route).unlink()
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(404))) as client:
        shipped = await load_schema(route, tmp_path, client)
    assert shipped.openapi_schema == PUBLISHED_SCHEMAS[ref].doc and shipped.unavailable is None


def test_max_items_in_a_schema_bounds_a_file_list() -> None:
    """A provider schema that states ``maxItems`` is followed as is."""
    doc = {
        "components": {
            "schemas": {
                "Input": {
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "uri"}, "maxItems": 2}
                    }
                }
            }
        }
    }
    (images,) = fields_from_openapi(doc)
    assert images.max_items == 2
    result = validate_input((images,), {"images": ["https://a/1", "https://a/2", "https://a/3"]})
    assert [e.field for e in result.errors] == ["input.images"]
