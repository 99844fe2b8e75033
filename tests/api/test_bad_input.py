"""The bad-input battery: every malformed value at every endpoint answers a clean 4xx problem (never a 5xx), names
what is wrong, stores nothing half-written and leaves the server healthy, on SQLite and on PostgreSQL.

Each row is (method, path, request options, the statuses allowed). A real runtime answers over ASGI; its worker is
off, so nothing here runs a model (what only a run can find out is tested with a worker elsewhere).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.inprocess import BACKENDS, InProcess, database_for, open_inprocess

NOOP = "/v1/models/fluxserve-fixtures/noop/predictions"
SLOW = "/v1/models/fluxserve-fixtures/slow-steps/predictions"
SCHNELL = "/v1/models/black-forest-labs/flux-schnell/predictions"
IMAGE = "/v1/models/fluxserve-fixtures/image-info/predictions"
PROBLEM = "application/problem+json"
JSON_HEADERS = {"Content-Type": "application/json"}

Case = tuple[str, str, dict[str, Any], tuple[int, ...]]


def raw(body: bytes | str) -> dict[str, Any]:
    """Request options sending ``body`` as it is."""
    return {"content": body.encode() if isinstance(body, str) else body, "headers": JSON_HEADERS}


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


MALFORMED_JSON = [
    "", "{", "}", "[", "nul", '{"input": }', '{"input": {"prompt": "x"}', "{'input': {}}", '{"input": NaN}',
    '{"input": {"steps": Infinity}}', '{"input": {"steps": 1e400}}', "\xff\xfe", '{"input": {}} trailing',
    '"just a string"', "42", "null", "[]", '{"input": "\\ud800"}',
]  # fmt: skip
DEEP = '{"input": {"prompt": ' + "[" * 5000 + "]" * 5000 + "}}"

BAD_BODIES: list[dict[str, Any]] = [
    {},
    {"input": None},
    {"input": []},
    {"input": "prompt"},
    {"input": 1},
    {"input": {}, "foo": 1},
    {"inptu": {}},
    {"input": {}, "webhook": 1},
    {"input": {}, "webhook_events_filter": "completed"},
    {"input": {}, "webhook_events_filter": ["finished"]},
    {"input": {}, "stream": [1]},
    {"input": {}, "version": 5},
]

BAD_SLOW_INPUTS: list[dict[str, Any]] = [
    {"steps": "abc"}, {"steps": True}, {"steps": 0}, {"steps": -1}, {"steps": 10_001}, {"steps": 2**70},
    {"steps": 1.5}, {"steps": []}, {"steps": {}}, {"steps": "9" * 5000}, {"step_seconds": "slow"},
    {"step_seconds": -0.1}, {"step_seconds": 61}, {"step_seconds": [1]}, {"seed": 2**64}, {"seed": -1},
    {"seed": "x"}, {"seed": 1.5}, {"seed": 10**30}, {"seed": False},
]  # fmt: skip

BAD_SCHNELL_INPUTS: list[dict[str, Any]] = [
    {}, {"prompt": None}, {"prompt": ["a"]}, {"prompt": {"a": 1}}, {"prompt": "x" * 100_001},
    {"prompt": "p", "aspect_ratio": "7:3"}, {"prompt": "p", "aspect_ratio": 1}, {"prompt": "p", "num_outputs": 0},
    {"prompt": "p", "num_outputs": 5}, {"prompt": "p", "num_outputs": "many"},
    {"prompt": "p", "num_inference_steps": 0}, {"prompt": "p", "num_inference_steps": 5},
    {"prompt": "p", "output_format": "gif"}, {"prompt": "p", "output_quality": 101},
    {"prompt": "p", "output_quality": -1}, {"prompt": "p", "megapixels": "2"}, {"prompt": "p", "go_fast": "yes"},
    {"prompt": "p", "disable_safety_checker": 1}, {"prompt": "p", "seed": 18446744073709551616},
    {"prompt": "p", "seed": -5},
]  # fmt: skip

BAD_IMAGE_URIS = [
    "", "not a url", "ftp://example.com/a.png", "file:///etc/passwd", "http://", "//example.com/a.png",
    "http://0177.0.0.1/a.png", "http://[::1/a.png", "javascript:alert(1)", "data:image/png;base64,!!!!",
    "data:text/plain;base64,aGVsbG8=", "http://example.com/\x00.png", "https://example.com:99999/a.png",
    "http://localhost:5000/v1/files/" + "a" * 26,  # the form of a file id, but no such file
]  # fmt: skip

BAD_WEBHOOKS = [
    "http://0177.0.0.1:5999/hook", "ftp://example.com/hook", "http://", "hook", "http://exa mple.com/",
    "http://example.com/\x00", "http://example.com:99999/", "javascript:alert(1)", "http://[::1/",
    "http://example.com/" + "x" * 3000, "//example.com/hook", "", "http://example.com/\r\nX-Injected: 1",
]  # fmt: skip

BAD_CANCEL_AFTER = ["soon", "1s", "4", "0", "-10s", "1000000000h", "5x", "1h 30m", "1e9", "NaN", "5 s"]

BAD_IDS = ["%00", "a%00b", "x" * 5000, "..%2F..%2Fetc", "%E2%80%AE", "%F0%9F%98%80", "'; DROP TABLE predictions;--"]

BAD_CURSORS = [
    "!!!", "%00", cursor("n|2026-01-01T00:00:00|abc"), cursor("x|2026-01-01T00:00:00+00:00|abc"),
    cursor("n|not a time|abc"), cursor("n|2026-01-01T00:00:00+00:00|a\x00b"), cursor("n|2026-01-01T00:00:00+00:00"),
    cursor("n|9999-12-31T23:59:59-23:59|abc"), "a" * 10_000, cursor("p|2026-01-01T00:00:00+00:00|ABC!"),
]  # fmt: skip

BAD_TIMES = ["yesterday", "2026-13-01", "0000-01-01", "9999-12-31T23:59:59-23:59", "%00", "111", "2026-01-01T25:00"]

BAD_DEPLOYMENTS: list[dict[str, Any]] = [
    {},
    {"name": "d"},
    {"name": "Bad Name", "model": "fluxserve-fixtures/noop", "version": "v", "hardware": "cpu",
     "min_instances": 0, "max_instances": 1},
    {"name": "d", "model": "nobody/nothing", "version": "v", "hardware": "cpu", "min_instances": 0,
     "max_instances": 1},
    {"name": "d", "model": "fluxserve-fixtures/noop", "version": "f" * 64, "hardware": "cpu", "min_instances": 0,
     "max_instances": 1},
    {"name": "d", "model": "fluxserve-fixtures/noop", "version": "v", "hardware": "tpu", "min_instances": 0,
     "max_instances": 1},
    {"name": "d", "model": "fluxserve-fixtures/noop", "version": "v", "hardware": "cpu", "min_instances": -1,
     "max_instances": 1},
    {"name": "d", "model": "fluxserve-fixtures/noop", "version": "v", "hardware": "cpu", "min_instances": 0,
     "max_instances": 10**9},
    {"name": "d", "model": "fluxserve-fixtures/noop", "version": "v", "hardware": "cpu", "min_instances": "0",
     "max_instances": []},
    {"name": "x" * 500, "model": "fluxserve-fixtures/noop", "version": "v", "hardware": "cpu", "min_instances": 0,
     "max_instances": 1},
]  # fmt: skip


def cases() -> list[Case]:
    """Every (method, path, options, allowed statuses) row of the battery."""
    rows: list[Case] = []
    for body in MALFORMED_JSON:
        rows.append(("POST", NOOP, raw(body), (422,)))
    rows.append(("POST", NOOP, raw(DEEP), (422,)))
    rows.append(("POST", NOOP, raw(b'{"input": {"prompt": "' + b"x" * (11 * 1024 * 1024) + b'"}}'), (413,)))
    for body in BAD_BODIES:
        rows.append(("POST", NOOP, {"json": body}, (422,)))
        rows.append(("POST", "/v1/predictions", {"json": {"version": "fluxserve-fixtures/noop", **body}}, (422,)))
    for inputs in BAD_SLOW_INPUTS:
        rows.append(("POST", SLOW, {"json": {"input": inputs}}, (422,)))
    for inputs in BAD_SCHNELL_INPUTS:
        rows.append(("POST", SCHNELL, {"json": {"input": inputs}}, (422,)))
    for uri in BAD_IMAGE_URIS:
        rows.append(("POST", IMAGE, {"json": {"input": {"image": uri}}}, (422,)))
    for url in BAD_WEBHOOKS:
        rows.append(("POST", NOOP, {"json": {"input": {}, "webhook": url}}, (422,)))
    for value in BAD_CANCEL_AFTER:
        rows.append(("POST", NOOP, {"json": {"input": {}}, "headers": {"Cancel-After": value}}, (422,)))
    for version in ["", "x", "f" * 64, "a/b", "a/b:c", "fluxserve-fixtures/noop:zzz", "../../etc", "a:b/c"]:
        rows.append(("POST", "/v1/predictions", {"json": {"version": version, "input": {}}}, (422,)))
    for pid in BAD_IDS:
        rows.append(("GET", f"/v1/predictions/{pid}", {}, (404, 422)))
        rows.append(("POST", f"/v1/predictions/{pid}/cancel", {}, (404, 422)))
        rows.append(("GET", f"/v1/files/{pid}", {}, (404, 422)))
        rows.append(("GET", f"/v1/predictions/{pid}/stream", {}, (404, 422)))
        rows.append(("GET", f"/p/{pid}", {}, (404, 422)))
        rows.append(("GET", f"/v1/models/{pid}/noop", {}, (404, 422)))
        rows.append(("GET", f"/v1/deployments/{pid}/x", {}, (404, 422)))
        rows.append(("GET", f"/v1/collections/{pid}", {}, (404, 422)))
    for value in BAD_CURSORS:
        rows.append(("GET", "/v1/predictions", {"params": {"cursor": value}}, (422,)))
    for value in BAD_TIMES:
        rows.append(("GET", "/v1/predictions", {"params": {"created_after": value}}, (422,)))
        rows.append(("GET", "/v1/account", {"params": {"created_before": value}}, (422,)))
    for source in ["cli", "", "API", "%00"]:
        rows.append(("GET", "/v1/predictions", {"params": {"source": source}}, (422,)))
    for body in BAD_DEPLOYMENTS:
        rows.append(("POST", "/v1/deployments", {"json": body}, (422,)))
    for params in [{"query": "x" * 501}, {"query": "flux", "limit": 0}, {"query": "flux", "limit": 51},
                   {"query": "flux", "limit": "many"}, {}]:  # fmt: skip
        rows.append(("GET", "/v1/search", {"params": params}, (422,)))
    for params in [{"owner": "x", "expiry": "1", "signature": "x"}, {"owner": "", "expiry": "", "signature": ""},
                   {"signature": "%%%"}, {"expiry": "9" * 400, "owner": "test", "signature": "AAAA"}]:  # fmt: skip
        rows.append(("GET", "/v1/files/nothing/download", {"params": params}, (404,)))
    for files in [
        {"metadata": (None, "{}")},
        {"content": ("a.txt", b"x", "text/plain"), "metadata": (None, "not json")},
        {"content": ("a.txt", b"x", "text/plain"), "metadata": (None, "[1, 2]")},
        {"content": ("a.txt", b"x", "text/plain"), "type": (None, "text/html\r\nX-Evil: 1")},
        {"content": ("a.txt", b"x", "text/plain"), "type": (None, "not a type")},
    ]:
        rows.append(("POST", "/v1/files", {"files": files}, (422,)))
    rows.append(("POST", "/v1/files", raw('{"not": "multipart"}'), (422,)))
    for auth in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token", "fs_raw-token-without-scheme", "Bearer x y"]:
        rows.append(("GET", "/v1/predictions", {"headers": {"Authorization": auth}}, (401,)))
    return rows


CASES = cases()


@pytest.fixture(scope="module", params=BACKENDS)
async def fs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    """A runtime without a worker, on each database."""
    with database_for(request.param) as url:
        async with open_inprocess(tmp_path_factory.mktemp("bad-input"), url, with_worker=False) as instance:
            yield instance


def test_the_battery_is_large() -> None:
    assert len(CASES) >= 150


async def test_bad_input_answers_a_clean_4xx(fs: InProcess) -> None:
    before = len((await fs.client.get("/v1/predictions")).json()["results"])
    failures = []
    for method, path, options, allowed in CASES:
        response = await fs.client.request(method, path, **options)
        problem = response.headers.get("content-type", "").startswith(PROBLEM)
        ok = response.status_code in allowed and ((response.status_code == 404 and path.startswith("/p/")) or problem)
        if ok and problem:
            body = response.json()
            ok = body.get("status") == response.status_code and isinstance(body.get("detail"), str)
            if response.status_code == 422 and "invalid_fields" in body:
                ok = ok and all(f["field"] and f["description"] for f in body["invalid_fields"])
        if not ok:
            failures.append(
                f"{method} {path[:80]} {str(options)[:120]} -> {response.status_code} {response.text[:200]}"
            )
    assert not failures, f"{len(failures)} of {len(CASES)} cases:\n" + "\n".join(failures)
    # Nothing half-written: no refused request left a prediction behind; the server still answers.
    assert len((await fs.client.get("/v1/predictions")).json()["results"]) == before
    assert (await fs.client.get("/health")).status_code == 200
    assert (await fs.client.post(NOOP, json={"input": {"prompt": "still fine"}})).status_code == 201


async def test_text_with_nul_and_lone_surrogates_is_stored_or_refused_never_a_503(fs: InProcess) -> None:
    created = await fs.client.post(NOOP, json={"input": {"prompt": "a\x00b"}})
    assert created.status_code == 201, created.text
    assert (await fs.client.get(f"/v1/predictions/{created.json()['id']}")).json()["input"]["prompt"] == "a\x00b"
    ignored = await fs.client.post(NOOP, json={"input": {"bad\x00key": 1}})
    assert ignored.status_code == 201, ignored.text
    assert "bad\\x00key" in ignored.json()["logs"]
    uploaded = await fs.client.post(
        "/v1/files", files={"content": ("a.txt", b"x", "text/plain")}, data={"filename": "dir/a\x00b\r\n.txt"}
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["name"] == "ab.txt"


async def test_list_pages_are_bounded_in_bytes(fs: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fluxserve.service.predictions.MAX_PAGE_BYTES", 200_000)
    async with fs.client_with((await fs.new_key("big-prompts"))[1]) as client:
        ids = [(await client.post(NOOP, json={"input": {"prompt": str(i) * 90_000}})).json()["id"] for i in range(5)]
        pages, url = [], "/v1/predictions"
        while url:
            page = (await client.get(url)).json()
            pages.append([p["id"] for p in page["results"]])
            url = page["next"]
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [pid for p in pages for pid in p] == ids[::-1]
        back = (await client.get(page["previous"])).json() if page["previous"] else None
        assert back is not None and [p["id"] for p in back["results"]] == pages[1]


async def test_the_outbox_gives_up_at_once_on_a_url_that_cannot_be_sent(fs: InProcess) -> None:
    # A row written before create refused such URLs (or by an older version): it must not be retried forever.
    from sqlalchemy import select

    from fluxserve.schema import utcnow
    from fluxserve.store.tables import webhook_deliveries

    row = {
        "id": "msg_unsendable_" + fs.store.dialect, "prediction_id": "p", "key_id": fs.key.id,
        "url": "http://0177.0.0.1:5999/hook", "body": "{}", "state": "pending", "attempts": 0,
        "next_attempt_at": utcnow(), "created_at": utcnow(),
    }  # fmt: skip
    await fs.store.db.write(lambda conn: conn.execute(webhook_deliveries.insert(), row))
    fs.runtime.webhooks.wake.set()
    stmt = select(webhook_deliveries.c.state, webhook_deliveries.c.attempts, webhook_deliveries.c.last_error).where(
        webhook_deliveries.c.id == row["id"]
    )
    for _ in range(100):
        state, attempts, error = await fs.store.db.read(lambda conn: conn.execute(stmt).one())
        if state != "pending":
            break
        await asyncio.sleep(0.1)
    assert (state, attempts) == ("failed", 1)
    assert "InvalidURL" in error and "0177.0.0.1" in error


async def test_a_predictor_error_holding_a_nul_is_stored(tmp_path_factory: pytest.TempPathFactory) -> None:
    with database_for("postgres") as url:
        async with open_inprocess(
            tmp_path_factory.mktemp("nul-error"), url, worker_models=["fluxserve-fixtures/raises-in-predict"]
        ) as fs:
            created = await fs.client.post(
                "/v1/models/fluxserve-fixtures/raises-in-predict/predictions",
                json={"input": {"message": "bad byte \x00 here"}},
            )
            done = await fs.wait_for(created.json()["id"])
    assert done["status"] == "failed"
    assert "bad byte \\x00 here" in done["error"]
