"""Property-based fuzzing of the HTTP API against its own OpenAPI document (``GET /openapi.json``).

Schemathesis generates requests for every documented operation (valid and invalid bodies, paths, queries,
headers) and sends them to a real ``fluxserve serve --demo`` on loopback (SQLite only: the store is tested on
both backends elsewhere, and one server keeps CI time down). Every response must:

- not be a 5xx (``not_a_server_error``);
- carry a documented status code (``status_code_conformance``);
- carry a documented Content-Type (``content_type_conformance``);
- have a body and headers that validate against the documented schema (``response_schema_conformance``,
  ``response_headers_conformance``).

Nothing in the document is left out. Two groups are only ever exercised on their error paths, since their
ids are unguessable 26-character capabilities and schemathesis has no way to learn a real one:

- ``GET …/predictions/{id}/stream`` (``text/event-stream``, open until the prediction ends): a real id would
  hold the request open; a generated one is a 404 problem. ``tests/e2e/test_stream.py`` covers the stream.
- ``GET|HEAD …/outputs/{id}/{file}`` (image bytes): a generated path is a 404 problem; ``tests/e2e`` covers
  the files themselves.

``/p/{id}``, ``/p/{id}/fragment`` and ``/`` are HTML pages outside the OpenAPI document
(``include_in_schema=False`` / pages router), so schemathesis never sees them; ``tests/e2e/test_pages_http.py``.

``Prefer``: a generated value that ``parse_prefer_wait`` reads as ``wait`` or ``wait=N`` is rewritten to
``wait=1``, so a create that happens to be valid holds the request for at most a second instead of 60 s;
every other generated value (which the server ignores) is sent as is.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from fluxserve.api.predictions import parse_prefer_wait
from tests.conftest import make_server
from tests.fuzz import CHECKS
from tests.support import Server

# 38 operations (19 under each prefix) are fuzzed; parameterless ones (GET /models, /account, …) exhaust their
# space after a few cases, the rest reach this bound; with the coverage phase's extra cases (unsupported
# methods, boundary values) the total is ~2,200 requests in ~25-30 s, well over MIN_CASES.
MAX_EXAMPLES = 50
MIN_CASES = 1000
# The last test checks how many cases all the others ran: scripts/test distributes whole modules (--dist loadfile),
# so they all run in one process.
CASES: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()
STARTED = time.monotonic()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[Server]:
    """One server on SQLite, for this module only."""
    srv = make_server(tmp_path_factory.mktemp("fuzz-server"), tiny_weights, None)
    srv.start()
    yield srv
    srv.stop()
    # Whatever the fuzzer found, the server must not have logged an unhandled error.
    assert "unhandled error" not in srv.logs(), srv.logs()[-4000:]


def _openapi_document() -> dict[str, Any]:
    """The document ``GET /openapi.json`` serves, built at collection time (the server starts later).

    ``test_served_document_is_the_fuzzed_one`` checks that the running server serves exactly this. (A lazy
    ``schemathesis.pytest.from_fixture`` schema would fetch it from the server, but its subtests do not
    work with pytest 9.)
    """
    from fluxserve.api.app import create_app
    from fluxserve.config import Settings
    from fluxserve.runtime import open_api_state

    return create_app(Settings(), open_api_state).openapi()


DOCUMENT = _openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_served_document_is_the_fuzzed_one(fuzz_server: Server) -> None:
    """The running server serves the document the cases below were generated from."""
    assert httpx.get(f"{fuzz_server.base}/openapi.json").json() == DOCUMENT


def _fuzz(case: schemathesis.Case, fuzz_server: Server) -> None:
    """Every generated request gets a documented, schema-conforming, non-5xx answer."""
    prefer = (case.headers or {}).get("prefer")
    if prefer is not None and parse_prefer_wait(prefer) is not None:
        case.headers["prefer"] = "wait=1"
    CASES[f"{case.method} {case.path}"] += 1
    params = case.path_parameters or {}
    if "owner" in params and CASES[f"{case.method} {case.path}"] % 2:
        # Random owner/name pairs are all 404s; every other case names a served model instead, so the
        # success bodies (Model, Version, Prediction) are validated too. Creates go to the no-torch fixture
        # model ``noop``, which answers at once, so a valid create never waits on a tiny FLUX pipeline.
        params["owner"], params["name"] = "fluxserve-fixtures", "noop"
    response = case.call_and_validate(
        base_url=fuzz_server.base,
        headers={"Authorization": f"Bearer {fuzz_server.key}"},
        checks=CHECKS,
        timeout=30,
    )
    STATUSES[response.status_code] += 1


def _operation_test(operation_id: str) -> Callable[[schemathesis.Case, Server], None]:
    """The fuzz test of one operation: a function of its own, so that its pytest node id is its own (one
    ``schema.parametrize()`` over every operation gives them all one node id, and pytest-xdist then runs one)."""

    @schema.include(operation_id=operation_id).parametrize()
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,  # no .hypothesis/ directory: derandomized runs replay the same cases anyway
        suppress_health_check=list(HealthCheck),
    )
    def test(case: schemathesis.Case, fuzz_server: Server) -> None:
        _fuzz(case, fuzz_server)

    test.__doc__ = f"{operation_id}: every generated request gets a documented, non-5xx answer."
    operation_test: Callable[[schemathesis.Case, Server], None] = test
    return operation_test


for _path in DOCUMENT["paths"].values():
    for _operation in _path.values():
        if isinstance(_operation, dict) and "operationId" in _operation:
            globals()[f"test_{_operation['operationId']}"] = _operation_test(_operation["operationId"])


def test_enough_cases_ran() -> None:
    """The fuzz test above ran at least MIN_CASES generated requests (runs after it: same module, later)."""
    if not CASES:
        pytest.skip("only meaningful after the operations' tests above, in the same run")
    total = sum(CASES.values())
    elapsed = time.monotonic() - STARTED
    print(f"schemathesis: {total} cases over {len(CASES)} operations in {elapsed:.1f}s")
    print(f"  status codes: {dict(sorted(STATUSES.items()))}")
    for op, n in sorted(CASES.items()):
        print(f"  {n:5d}  {op}")
    assert total >= MIN_CASES, CASES
