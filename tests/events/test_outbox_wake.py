"""The webhook outbox is claimed only when there is something in it: a finished prediction without a
``completed`` webhook costs no outbox query, one with it costs one claim per delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.inprocess import InProcess, open_inprocess
from tests.webhook_receiver import WebhookReceiver

#: So long that, during a test, every claim the sender makes is one a wake asked for.
POLL_SECONDS = 3600.0


@pytest.fixture
async def fs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    """A SQLite runtime whose webhook sender polls once an hour, so its claim count is its wake count."""
    async with open_inprocess(tmp_path_factory.mktemp("outbox"), allow_loopback_urls=True) as instance:
        runtime = instance.runtime
        (task,) = [t for t in runtime._tasks if t.get_name() == "fluxserve-webhooks"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        runtime._tasks.remove(task)
        runtime._tasks.append(asyncio.create_task(runtime.webhooks.run(poll_seconds=POLL_SECONDS)))
        await _settle(instance, claims=1)
        yield instance


async def _settle(fs: InProcess, *, claims: int, seconds: float = 10.0) -> None:
    """Wait until the sender has made ``claims`` claims and is idle (or ``seconds`` pass)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while fs.runtime.webhooks.claims < claims and loop.time() < deadline:  # noqa: ASYNC110 (a counter, no event)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # room for a claim too many to show


async def _run(fs: InProcess, prompt: str, **body: object) -> None:
    response = await fs.client.post(
        "/v1/models/fluxserve-fixtures/noop/predictions", json={"input": {"prompt": prompt}, **body}
    )
    assert response.status_code == 201, response.text
    done = await fs.wait_for(response.json()["id"])
    assert done["status"] == "succeeded", done


async def test_predictions_without_webhook_cost_no_outbox_claim(fs: InProcess) -> None:
    for n in range(5):
        await _run(fs, f"no webhook {n}")
    await _settle(fs, claims=2, seconds=0.5)
    assert fs.runtime.webhooks.claims == 1


async def test_output_only_webhook_costs_no_outbox_claim(fs: InProcess) -> None:
    receiver = WebhookReceiver().start()
    try:
        await _run(fs, "output only", webhook=receiver.url, webhook_events_filter=["output"])
        await asyncio.to_thread(receiver.wait_for, lambda got: len(got) >= 1, 10)
        await _settle(fs, claims=2, seconds=0.5)
        assert len(receiver.received) == 1, [r.json["status"] for r in receiver.received]
        assert fs.runtime.webhooks.claims == 1
    finally:
        receiver.stop()


async def test_completed_webhook_costs_one_claim_per_delivery(fs: InProcess) -> None:
    receiver = WebhookReceiver().start()
    try:
        for n in range(3):
            await _run(fs, f"with webhook {n}", webhook=receiver.url, webhook_events_filter=["completed"])
            await asyncio.to_thread(receiver.wait_for, lambda _got, n=n: len(receiver.completed()) > n, 10)
            await _settle(fs, claims=2 + n)
            assert fs.runtime.webhooks.claims == 2 + n
        assert [r.json["input"]["prompt"] for r in receiver.completed()] == [f"with webhook {n}" for n in range(3)]
    finally:
        receiver.stop()
