"""The store on real SQLite and PostgreSQL: the prediction row is the job."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fluxserve.lifecycle import Status
from fluxserve.schema import utcnow
from fluxserve.service.predictions import new_prediction_id
from fluxserve.store.keys import hash_token
from fluxserve.store.rows import PredictionRow
from fluxserve.store.store import Store


async def _new(store: Store, key_id: str, model: str = "o/a", offset_ms: int = 0) -> PredictionRow:
    row = PredictionRow(
        id=new_prediction_id(),
        key_id=key_id,
        model=model,
        version="hidden",
        input={"prompt": "x"},
        status=Status.STARTING,
        created_at=utcnow() + timedelta(milliseconds=offset_ms),
    )
    await store.insert_prediction(row)
    return row


async def test_keys_are_stored_hashed(store: Any) -> None:
    key, token = await store.create_key("alice")
    assert key.token_hash == hash_token(token) and token not in key.token_hash
    assert (await store.key_by_token(token)).id == key.id
    assert await store.key_by_token(token + "x") is None
    assert await store.count_keys() == 1


async def test_insert_get_roundtrip_keeps_timezones_and_json(store: Any) -> None:
    key, _ = await store.create_key("k")
    row = await _new(store, key.id)
    got = await store.get_prediction(row.id)
    assert got.created_at == row.created_at and got.created_at.tzinfo is not None
    assert got.input == {"prompt": "x"} and got.status == Status.STARTING
    assert await store.get_prediction(row.id, "someone-else") is None


async def test_claim_takes_oldest_of_served_models_once(store: Any) -> None:
    key, _ = await store.create_key("k")
    newer = await _new(store, key.id, offset_ms=10)
    older = await _new(store, key.id, offset_ms=0)
    other = await _new(store, key.id, model="o/b", offset_ms=-10)
    first = await store.claim(["o/a"], "w1", 30)
    assert first.id == older.id and first.status == Status.PROCESSING and first.lease_token
    assert first.started_at is not None and first.attempts == 1
    second = await store.claim(["o/a"], "w1", 30)
    assert second.id == newer.id
    assert await store.claim(["o/a"], "w1", 30) is None
    assert (await store.claim(["o/b", "o/c"], "w2", 30)).id == other.id


async def test_concurrent_claims_never_share_a_row(store: Any) -> None:
    key, _ = await store.create_key("k")
    rows = [await _new(store, key.id, offset_ms=i) for i in range(6)]
    claimed = await asyncio.gather(*(store.claim(["o/a"], f"w{i}", 30) for i in range(10)))
    ids = [c.id for c in claimed if c is not None]
    assert sorted(ids) == sorted(r.id for r in rows)


async def test_writes_are_compare_and_set_on_the_lease(store: Any) -> None:
    key, _ = await store.create_key("k")
    await _new(store, key.id)
    claimed = await store.claim(["o/a"], "w1", 30)
    assert await store.update_running(claimed.id, "wrong", lease_seconds=30, logs="x") is None
    assert await store.update_running(claimed.id, claimed.lease_token, lease_seconds=30, logs="step 1\n") is False
    done = dict(output=["u"], logs="l", error=None, metrics={"predict_time": 1.0}, completed_at=utcnow())
    assert not await store.finish(claimed.id, "wrong", status=Status.SUCCEEDED, **done)
    assert await store.finish(claimed.id, claimed.lease_token, status=Status.SUCCEEDED, **done)
    # Terminal rows never change again, even for the token that finished them.
    assert not await store.finish(claimed.id, claimed.lease_token, status=Status.FAILED, **done)
    final = await store.get_prediction(claimed.id)
    assert (final.status, final.output, final.logs, final.lease_token) == (Status.SUCCEEDED, ["u"], "l", None)


async def test_cancel_queued_is_immediate_running_is_flagged_terminal_unchanged(store: Any) -> None:
    key, _ = await store.create_key("k")
    queued = await _new(store, key.id, offset_ms=50)
    running_row = await _new(store, key.id)
    running = await store.claim(["o/a"], "w", 30)
    assert running.id == running_row.id
    canceled = await store.request_cancel(queued.id, key.id)
    assert canceled.status == Status.CANCELED and canceled.completed_at is not None
    flagged = await store.request_cancel(running.id, key.id)
    assert flagged.status == Status.PROCESSING and flagged.cancel_requested
    assert await store.update_running(running.id, running.lease_token, lease_seconds=30) is True
    assert await store.request_cancel(running.id, "other-key") is None
    again = await store.request_cancel(queued.id, key.id)
    assert again.completed_at == canceled.completed_at


async def test_reaper_fails_only_expired_leases(store: Any) -> None:
    key, _ = await store.create_key("k")
    await _new(store, key.id)
    await _new(store, key.id, offset_ms=5)
    short = await store.claim(["o/a"], "w", 0.01)
    long = await store.claim(["o/a"], "w", 60)
    await asyncio.sleep(0.05)
    _, reaped = await store.release_processing("lost", "resuming", expired_before=utcnow())
    assert reaped == [short.id]
    assert (await store.get_prediction(short.id)).status == Status.FAILED
    assert (await store.get_prediction(long.id)).status == Status.PROCESSING


async def test_list_is_newest_first_with_keyset_cursor(store: Any) -> None:
    key, _ = await store.create_key("k")
    other, _ = await store.create_key("other")
    rows = [await _new(store, key.id, offset_ms=i) for i in range(5)]
    await _new(store, other.id)
    page = await store.list_predictions(key.id, limit=3)
    assert [r.id for r in page] == [r.id for r in reversed(rows)][:3]
    rest = await store.list_predictions(key.id, limit=3, before=(page[-1].created_at, page[-1].id))
    assert [r.id for r in rest] == [rows[1].id, rows[0].id]
    back = await store.list_predictions(key.id, limit=3, after=(rest[0].created_at, rest[0].id))
    assert [r.id for r in back] == [r.id for r in page]


async def test_usage_sums_status_images_and_seconds_per_key_and_window(store: Any) -> None:
    alice, _ = await store.create_key("alice")
    bob, _ = await store.create_key("bob")
    done = utcnow()
    finished = [
        (Status.SUCCEEDED, {"predict_time": 1.25, "total_time": 2.0, "image_count": 3}),
        (Status.FAILED, {"predict_time": 0.5, "total_time": 0.6}),
        (Status.CANCELED, None),  # canceled while queued: never ran, no metrics
    ]
    rows = []
    for i, (status, metrics) in enumerate(finished):
        row = await _new(store, alice.id, offset_ms=i)
        if metrics is None:
            await store.request_cancel(row.id, alice.id)
        else:
            claimed = await store.claim(["o/a"], "w", 30)
            assert await store.finish(
                claimed.id, claimed.lease_token, status=status, output=None, logs="", error=None,
                metrics=metrics, completed_at=done,
            )  # fmt: skip
        rows.append(row)
    await _new(store, alice.id, offset_ms=10)  # still queued
    await _new(store, bob.id)
    await store.mark_data_removed(rows[0].id)  # retention keeps status and metrics

    usage = await store.usage()
    mine = usage[alice.id]
    assert (mine.predictions, mine.succeeded, mine.failed, mine.canceled, mine.in_progress) == (4, 1, 1, 1, 1)
    assert (mine.image_count, mine.predict_time) == (3, 1.75)
    assert (usage[bob.id].predictions, usage[bob.id].image_count, usage[bob.id].predict_time) == (1, 0, 0.0)
    assert set(await store.usage(bob.id)) == {bob.id}
    window = (await store.usage(alice.id, created_after=rows[0].created_at, created_before=rows[2].created_at))[
        alice.id
    ]
    assert (window.predictions, window.failed, window.predict_time) == (1, 1, 0.5)
    assert await store.usage(alice.id, created_after=done + timedelta(hours=1)) == {}


async def test_predictions_with_a_checkpoint_are_requeued_not_failed(store: Any) -> None:
    key, _ = await store.create_key("k")
    resumable = await _new(store, key.id)
    plain = await _new(store, key.id, offset_ms=1)
    first = await store.claim(["o/a"], "w1", 0.01)
    second = await store.claim(["o/a"], "w1", 0.01)
    assert (first.id, second.id) == (resumable.id, plain.id)
    await store.update_running(resumable.id, first.lease_token, lease_seconds=0.01, logs="line one\n",
                               checkpoint={"upstream_id": "abc"})  # fmt: skip
    await asyncio.sleep(0.05)
    now = utcnow()
    requeued, failed = await store.release_processing("lost", "resuming", expired_before=now)
    assert requeued == [resumable.id]
    assert failed == [plain.id]
    requeued = await store.get_prediction(resumable.id)
    assert requeued.status == Status.STARTING and requeued.lease_token is None
    assert requeued.logs == "line one\nresuming\n"
    again = await store.claim(["o/a"], "w2", 30)
    assert again.id == resumable.id and again.checkpoint == {"upstream_id": "abc"} and again.attempts == 2
    # The old worker's lease is gone: its writes no longer land.
    assert await store.update_running(resumable.id, first.lease_token, lease_seconds=30) is None
    assert (await store.get_prediction(plain.id)).status == Status.FAILED


async def test_queue_positions_are_logged_once_per_move(store: Any) -> None:
    key, _ = await store.create_key("k")
    rows = [await _new(store, key.id, offset_ms=-5000 + i) for i in range(3)]
    await _new(store, key.id, model="o/b", offset_ms=-6000)  # another model's queue does not count
    fresh = await _new(store, key.id)  # created after the cutoff: not told yet

    def line(ahead: int) -> str:
        return f"ahead {ahead}\n"

    cutoff = utcnow() - timedelta(seconds=1)
    moved = await store.log_queue_positions("o/a", limit=50, line=line, created_before=cutoff)
    assert moved == [r.id for r in rows]
    # Nothing moved: nothing is written again (several workers may run this side by side).
    assert await store.log_queue_positions("o/a", limit=50, line=line, created_before=cutoff) == []
    await store.claim(["o/a"], "w1", 30)
    moved = await store.log_queue_positions("o/a", limit=50, line=line, created_before=cutoff)
    assert moved == [rows[1].id, rows[2].id]
    assert (await store.get_prediction(rows[2].id)).logs == "ahead 2\nahead 1\n"
    assert (await store.get_prediction(fresh.id)).logs == ""
    assert await store.oldest_queued(["o/b"]) is not None
    assert await store.oldest_queued(["o/zzz"]) is None


async def test_fail_queued_fails_only_that_models_waiting_predictions(store: Any) -> None:
    key, _ = await store.create_key("k")
    waiting = await _new(store, key.id)
    running = await _new(store, key.id, offset_ms=-10)
    await store.claim(["o/a"], "w1", 30)
    other = await _new(store, key.id, model="o/b")
    assert await store.fail_queued("o/a", "Model o/a could not be loaded: no weights") == [waiting.id]
    failed = await store.get_prediction(waiting.id)
    assert (failed.status, failed.error) == (Status.FAILED, "Model o/a could not be loaded: no weights")
    assert failed.completed_at is not None
    assert (await store.get_prediction(running.id)).status == Status.PROCESSING
    assert (await store.get_prediction(other.id)).status == Status.STARTING


async def test_worker_records_carry_model_states_and_operator_requests(store: Any) -> None:
    states = {"o/a": {"state": "loading", "since": utcnow().isoformat()}}
    assert await store.workers.heartbeat("w1", "host", ["o/a", "o/b"], states) == []
    await store.workers.heartbeat("w2", "host", ["o/b"], {})
    live = await store.workers.live(utcnow() - timedelta(seconds=30))
    assert [(w.id, w.model_states) for w in live] == [("w1", states), ("w2", {})]
    # A request reaches every live worker serving the model, once.
    assert await store.workers.request("o/a", "unload", utcnow() - timedelta(seconds=30)) == ["w1"]
    assert sorted(await store.workers.request("o/b", "load", utcnow() - timedelta(seconds=30))) == ["w1", "w2"]
    assert await store.workers.heartbeat("w1", "host", ["o/a", "o/b"], states) == [
        {"action": "unload", "model": "o/a"},
        {"action": "load", "model": "o/b"},
    ]
    assert await store.workers.heartbeat("w1", "host", ["o/a", "o/b"], states) == []
