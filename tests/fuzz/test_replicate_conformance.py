"""Conformance to Replicate's HTTP API: fuzz a real fluxserve against Replicate's own OpenAPI document.

``replicate_openapi.json`` (next to this file) is a reduced document written from the facts of the one Replicate
publishes (its ``info.description`` names the source and the commit it was read at): CI has no network, and the
source's prose is not ours to copy. Schemathesis generates requests from it and sends them to a real
``fluxserve serve --demo`` on loopback (SQLite) under ``/v1``; every response must:

- not be a 5xx (``not_a_server_error``);
- carry a status code Replicate documents (``status_code_conformance``);
- carry a Content-Type Replicate documents for it (``content_type_conformance``);
- have a body and headers that validate against Replicate's schemas (``response_schema_conformance``,
  ``response_headers_conformance``).

Which operations are fuzzed is decided at run time from the server's own ``GET /openapi.json``: every operation
of the reduced document is a test, and one the server does not serve (same method, same path under ``/v1``,
whatever its parameters are called) is skipped, so endpoints added later are fuzzed as soon as they exist.

Only schema-valid requests are generated (positive mode): Replicate's document says nothing of how invalid ones
are answered, and ``test_schemathesis.py`` already sends invalid data to the same handlers. Schema-valid is not
enough to name something that exists (a model, a prediction, a file: their ids are unguessable), so every other
case of an operation gets real names, gathered from the server before the fuzzing starts (see
``_name_real_things``); the others keep what was generated and mostly get a 404 or a 422. Those two answers are
added to the reduced document where Replicate leaves them out (``components/responses``, marked ``x-added``), with
the problem+json shape Replicate documents for its files operations, which is the shape of every fluxserve error.
Every operation taking path or query parameters has the 422: fluxserve refuses a URL holding a NUL anywhere
(PostgreSQL text cannot store one) before any route sees it.

The key is sent with every request. Replicate documents ``GET /search`` as open to anyone (``security: []``): its
catalogue is public. A self-hosted server's list of models is not (``GET /models`` needs a key on both), so
fluxserve answers 401 there without a key, on purpose; that case is not sent.

Predictions' data is kept for a few seconds only (``FLUXSERVE_DATA_RETENTION_SECONDS``), so the bodies checked
include predictions whose input, output and logs were removed as well as fresh ones.

Each operation is a test function of its own (``_conformance_test``): one ``schema.parametrize()`` test gives all
its operations the same pytest node id (schemathesis 4 on pytest 9), and pytest-xdist then runs only one of them.
So this module runs under ``pytest -n 2 --dist loadfile`` (the whole module in one process, with one server) and is
not marked serial.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.core.result import Err

from fluxserve.api.predictions import parse_prefer_wait
from tests.conftest import make_server
from tests.fuzz import CHECKS
from tests.support import Server, wait_for

DOCUMENT = Path(__file__).with_name("replicate_openapi.json")
# 28 operations; parameterless ones exhaust their space in a few cases. With the explicit (coverage) cases this is
# ~1,000 requests, and the module (server start included) stays well under a minute on two shared cores.
MAX_EXAMPLES = 30
FIXTURES = "fluxserve-fixtures"
# Creates go to the no-torch fixture model that answers at once, so a valid create never waits on a FLUX pipeline.
NOOP = (FIXTURES, "noop")
# Short enough that the predictions made before the fuzzing have had their data removed by the time it runs.
RETENTION_SECONDS = 2

Case = schemathesis.Case[Any]

schema = schemathesis.openapi.from_path(DOCUMENT)
# No Authorization header is generated from the bearer scheme: the test sends the server's key itself.
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE], with_security_parameters=False)


def _operations() -> list[schemathesis.APIOperation[Any, Any, Any, Any]]:
    """The reduced document's operations (a malformed one stops the module here, rather than going missing)."""
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    return operations


def _route(method: str, path: str) -> tuple[str, str]:
    """``(METHOD, path)`` with every ``{parameter}`` blanked: Replicate and fluxserve name them differently."""
    return method.upper(), re.sub(r"\{[^}]*\}", "{}", path)


@dataclass
class World:
    """The server under test, what it serves, and real names for the cases that should find something."""

    server: Server
    client: httpx.Client
    served: set[tuple[str, str]]
    models: list[tuple[str, str, str]]  # owner, name, latest version id
    predictions: list[str]  # data removed ones first; fuzzed creates append fresh ones
    hardware: str = "cpu"
    collections: list[str] = field(default_factory=list)
    deployment: tuple[str, str] | None = None
    file: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    def serves(self, method: str, path: str) -> bool:
        """Whether the server's own document has this operation."""
        return _route(method, path) in self.served

    def version_of(self, owner: str, name: str) -> str:
        """The latest version id of a served model."""
        return next(v for o, n, v in self.models if (o, n) == (owner, name))

    def deployment_body(self, name: str) -> dict[str, Any]:
        """A create body for a deployment of noop that fluxserve accepts."""
        return {
            "name": name,
            "model": "/".join(NOOP),
            "version": self.version_of(*NOOP),
            "hardware": self.hardware,
            "min_instances": 0,
            "max_instances": 1,
        }

    def new_deployment(self, name: str) -> tuple[str, str]:
        """A deployment made for one case to remove."""
        created = self.client.post("/deployments", json=self.deployment_body(name))
        created.raise_for_status()
        return created.json()["owner"], created.json()["name"]

    def new_file(self) -> dict[str, Any]:
        """A file uploaded for one case to remove."""
        return _upload(self.client)


def _upload(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/files", files={"content": ("hello.txt", b"hello", "text/plain")})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[World]:
    """One server on SQLite for this module, with predictions of each ending, a deployment and a file."""
    srv = make_server(
        tmp_path_factory.mktemp("replicate-conformance"),
        tiny_weights,
        None,
        extra_env={"FLUXSERVE_DATA_RETENTION_SECONDS": str(RETENTION_SECONDS)},
    )
    srv.start()
    try:
        with srv.client() as client:
            document = httpx.get(f"{srv.base}/openapi.json").json()
            served = {
                _route(method, path.removeprefix("/v1"))
                for path, item in document["paths"].items()
                if path.startswith("/v1/")
                for method in item
            }
            yield _build_world(srv, client, served)
    finally:
        srv.stop()
    # Whatever the fuzzer found, the server must not have logged an unhandled error.
    assert "unhandled error" not in srv.logs(), srv.logs()[-4000:]


def _build_world(srv: Server, client: httpx.Client, served: set[tuple[str, str]]) -> World:
    models = [(m["owner"], m["name"], m["latest_version"]["id"]) for m in client.get("/models").json()["results"]]
    world = World(server=srv, client=client, served=served, models=models, predictions=[])
    succeeded = client.post(f"/models/{FIXTURES}/noop/predictions", json={"input": {"prompt": "hi"}}).json()
    failed = client.post(f"/models/{FIXTURES}/raises-in-predict/predictions", json={"input": {}}).json()
    canceled = client.post(f"/models/{FIXTURES}/slow-steps/predictions", json={"input": {"steps": 100}}).json()
    client.post(f"/predictions/{canceled['id']}/cancel")
    world.predictions = [succeeded["id"], failed["id"], canceled["id"]]
    if world.serves("GET", "/hardware"):
        world.hardware = client.get("/hardware").json()[0]["sku"]
    if world.serves("GET", "/collections"):
        world.collections = [c["slug"] for c in client.get("/collections").json()["results"]]
    if world.serves("POST", "/files"):
        world.file = _upload(client)
    if world.serves("POST", "/deployments"):
        world.deployment = world.new_deployment("conformance")
        # A prediction through it, so that lists show a prediction's `deployment` too.
        owner, name = world.deployment
        client.post(f"/deployments/{owner}/{name}/predictions", json={"input": {}})
    for prediction_id in world.predictions:
        wait_for(client, prediction_id, timeout=30, until=lambda p: p["data_removed"])
    return world


def _name_real_things(case: Case, world: World, n: int) -> None:
    """Point the case at things that exist: a served model, a real prediction, deployment, file or collection.

    Values stay valid for Replicate's document (strings where it asks for strings, and so on), so every check
    still applies; they only reach what a random value cannot (a success, whose body is then validated).
    """
    params = case.path_parameters if case.path_parameters is not None else {}
    headers = case.headers if case.headers is not None else {}
    body = case.body if isinstance(case.body, dict) else None
    pick = n // 2
    if "model_owner" in params:
        owner, name, version = world.models[pick % len(world.models)]
        if case.method == "POST":
            owner, name = NOOP
            version = world.version_of(*NOOP)
        params.update(model_owner=owner, model_name=name)
        if "version_id" in params:
            params["version_id"] = version
    if "deployment_owner" in params and world.deployment:
        owner, name = world.new_deployment(f"conformance-delete-{n}") if case.method == "DELETE" else world.deployment
        params.update(deployment_owner=owner, deployment_name=name)
    if "prediction_id" in params:
        # Alternately one of the first predictions (data removed by now) and one of the latest a case made.
        pool = world.predictions[:3] if pick % 2 else world.predictions[-3:]
        params["prediction_id"] = pool[pick % len(pool)]
    if "collection_slug" in params and world.collections:
        params["collection_slug"] = world.collections[pick % len(world.collections)]
    if "file_id" in params and world.file:
        file = world.new_file() if case.method == "DELETE" else world.file
        params["file_id"] = file["id"]
        if case.path.endswith("/download"):
            signed = parse_qs(urlsplit(file["urls"]["download"]).query)
            case.query = {
                "owner": signed["owner"][0],
                "expiry": int(signed["expiry"][0]),
                "signature": signed["signature"][0],
            }
    if case.method == "POST" and case.path.endswith("/predictions"):
        body = body if body is not None else {}
        body["input"] = {"prompt": "conformance"}
        # A generated webhook would have the worker post to whatever the string names.
        body.pop("webhook", None)
        if case.path == "/predictions":
            body["version"] = world.version_of(*NOOP)
        case.body = body
        case.media_type = "application/json"
        # The create waits a second at most (noop answers sooner); a pattern value can hold it up to a minute.
        if parse_prefer_wait(headers.get("Prefer", "")) is not None:
            headers["Prefer"] = "wait=1"
        # Any string fits Replicate's schema, but only a duration (5 s or more) can be carried out.
        if "Cancel-After" in headers:
            headers["Cancel-After"] = "5m"
    if case.method == "POST" and case.path == "/deployments" and body is not None:
        instances = {k: body[k] for k in ("min_instances", "max_instances") if k in body}
        body.update(world.deployment_body(f"conformance-{n}"), **instances)
    if case.method == "PATCH" and case.path.startswith("/deployments/") and body is not None:
        if "version" in body:
            body["version"] = world.version_of(*NOOP)
        if "hardware" in body:
            body["hardware"] = world.hardware


def _check(case: Case, world: World) -> None:
    """Send one generated request; its status, Content-Type and body must be Replicate's, and never a 5xx."""
    operation = case.operation
    if not world.serves(operation.method, operation.path):
        pytest.skip(f"fluxserve does not serve {operation.label} (not in its GET /openapi.json)")
    label = operation.label
    world.cases[label] += 1
    odd = world.cases[label] % 2 == 1
    if odd:
        _name_real_things(case, world, world.cases[label])
    headers = {"Authorization": f"Bearer {world.server.key}"}
    response = case.call_and_validate(base_url=f"{world.server.base}/v1", headers=headers, checks=CHECKS, timeout=30)
    world.statuses[(label, response.status_code)] += 1
    if case.method == "POST" and case.path.endswith("/predictions") and response.status_code in (201, 202):
        world.predictions.append(response.json()["id"])


def _conformance_test(operation_id: str) -> Callable[[Case, World], None]:
    """The test of one operation, as a function of its own so that its pytest node id is its own (see above)."""

    @schema.include(operation_id=operation_id).parametrize()
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,  # no .hypothesis/ directory: derandomized runs replay the same cases anyway
        # No shrinking: a failing case is reported as generated (shrinking one costs hundreds of requests).
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def test(case: Case, world: World) -> None:
        _check(case, world)

    test.__doc__ = f"{operation_id}: every generated request gets an answer that Replicate's document allows."
    conformance_test: Callable[[Case, World], None] = test
    return conformance_test


for _operation in _operations():
    _operation_id = _operation.definition.raw["operationId"]
    globals()[f"test_{_operation_id.replace('.', '_')}"] = _conformance_test(_operation_id)


def test_summary(world: World) -> None:
    """Print what ran (after the operations' tests: same module, later), so that a log shows what was covered."""
    for label, n in sorted(world.cases.items()):
        codes = {code: k for (op, code), k in sorted(world.statuses.items()) if op == label}
        print(f"  {n:4d}  {label}  {codes}")
    missing = sorted(op.label for op in _operations() if not world.serves(op.method, op.path))
    print(f"{sum(world.cases.values())} cases in {time.monotonic() - world.started:.1f}s; not served: {missing}")
