"""Signed webhooks from a real server to a real receiver on loopback."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import replicate
import standardwebhooks

from tests.conftest import make_server
from tests.support import Server, wait_for
from tests.webhook_receiver import WebhookReceiver

LOOPBACK = {"FLUXSERVE_ALLOW_LOOPBACK_URLS": "true"}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    yield r
    r.stop()


@pytest.fixture
def hook_server(tmp_path: Path, tiny_weights: Path) -> Iterator[Server]:
    server = make_server(tmp_path, tiny_weights, None, extra_env=LOOPBACK).start()
    yield server
    server.stop()


def _secret(server: Server) -> str:
    with server.client() as client:
        key: str = client.get("/webhooks/default/secret").json()["key"]
    return key


def test_default_events_are_signed_and_verify(hook_server: Server, receiver: WebhookReceiver) -> None:
    secret = _secret(hook_server)
    assert secret.startswith("whsec_") and len(secret.split("_")) == 2
    with hook_server.client() as client:
        created = client.post(
            "/models/fluxserve-fixtures/writes-image/predictions",
            json={"input": {"count": 1}, "webhook": receiver.url},
        ).json()
        final = wait_for(client, created["id"])
    got = receiver.wait_for(lambda r: len(r) >= 2)
    # Default filter: new outputs and completion (no start, no logs).
    assert [r.json["status"] for r in got] == ["succeeded", "succeeded"]
    assert got[0].headers["webhook-id"] != got[1].headers["webhook-id"]
    assert got[-1].json == final  # the body is the prediction as GET returns it
    wh = standardwebhooks.Webhook(secret)
    official = replicate.Client(api_token="unused")
    signing = replicate.webhook.WebhookSigningSecret(key=secret)
    for request in got:
        wh.verify(request.body, request.headers)
        # Raises on a bad signature, returns None when valid.
        official.webhooks.validate(headers=request.headers, body=request.body.decode(), secret=signing)
    tampered = dict(got[0].headers, **{"webhook-signature": got[1].headers["webhook-signature"]})
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        wh.verify(got[0].body, tampered)
    with pytest.raises(replicate.webhook.InvalidSignatureError):
        official.webhooks.validate(headers=tampered, body=got[0].body.decode(), secret=signing)


def test_event_filter_and_log_throttling(hook_server: Server, receiver: WebhookReceiver) -> None:
    with hook_server.client() as client:
        created = client.post(
            "/models/fluxserve-fixtures/slow-steps/predictions",
            json={
                "input": {"steps": 30, "step_seconds": 0.05},
                "webhook": receiver.url,
                "webhook_events_filter": ["start", "logs", "completed"],
            },
        ).json()
        assert created["webhook_events_filter"] == ["start", "logs", "completed"]
        wait_for(client, created["id"])
    got = receiver.wait_for(lambda r: any(x.json["status"] == "succeeded" for x in r))
    statuses = [r.json["status"] for r in got]
    assert statuses[0] == "processing" and statuses[-1] == "succeeded"
    logs_events = got[1:-1]
    # 30 steps in ~1.5 s: logs webhooks are throttled to one per 500 ms (plus the trailing one).
    assert 1 <= len(logs_events) <= 6
    assert len(receiver.completed()) == 1


def test_terminal_webhook_retries_with_the_same_id_and_3xx_fails(
    hook_server: Server, receiver: WebhookReceiver
) -> None:
    receiver.respond = lambda n: {0: 500, 1: 302}.get(n, 204)
    with hook_server.client() as client:
        created = client.post(
            "/models/fluxserve-fixtures/noop/predictions",
            json={"input": {"prompt": "x"}, "webhook": receiver.url, "webhook_events_filter": ["completed"]},
        ).json()
    got = receiver.wait_for(lambda r: len(r) >= 3, timeout=20)
    assert [r.answered for r in got] == [500, 302, 204]
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert all(r.json["id"] == created["id"] for r in got)
    time.sleep(1.5)
    assert len(receiver.received) == 3  # delivered: no more attempts


def test_outbox_survives_a_restart_mid_retry(hook_server: Server, receiver: WebhookReceiver) -> None:
    receiver.respond = lambda n: 503 if n < 2 else 200
    with hook_server.client() as client:
        created = client.post(
            "/models/fluxserve-fixtures/noop/predictions",
            json={"input": {"prompt": "x"}, "webhook": receiver.url, "webhook_events_filter": ["completed"]},
        ).json()
    receiver.wait_for(lambda r: len(r) >= 1)
    hook_server.stop()
    stopped_with = len(receiver.received)
    hook_server.start()
    got = receiver.wait_for(lambda r: any(x.answered == 200 for x in r), timeout=30)
    assert got[-1].answered == 200 and stopped_with < len(got)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert got[-1].json["id"] == created["id"]


def test_killed_server_sends_exactly_one_terminal_webhook(hook_server: Server, receiver: WebhookReceiver) -> None:
    with hook_server.client() as client:
        created = client.post(
            "/models/fluxserve-fixtures/slow-steps/predictions",
            json={"input": {"steps": 400, "step_seconds": 0.05}, "webhook": receiver.url},
        ).json()
        wait_for(client, created["id"], until=lambda p: p["status"] == "processing")
    hook_server.stop(signal.SIGKILL)
    hook_server.start()
    receiver.wait_for(lambda r: len(receiver.completed()) >= 1)
    time.sleep(2)
    completed = receiver.completed()
    assert len(completed) == 1
    assert completed[0].json["status"] == "failed"


def test_webhooks_to_private_addresses_are_refused(tmp_path: Path, tiny_weights: Path) -> None:
    receiver = WebhookReceiver().start()
    server = make_server(tmp_path, tiny_weights, None).start()  # loopback NOT allowed
    try:
        with server.client() as client:
            done = client.post(
                "/models/fluxserve-fixtures/noop/predictions",
                json={"input": {"prompt": "x"}, "webhook": receiver.url},
                headers={"Prefer": "wait=10"},
            ).json()
        assert done["status"] == "succeeded"
        time.sleep(2)
        assert receiver.received == []
    finally:
        server.stop()
        receiver.stop()
