"""PredictionService in-process on SQLite and PostgreSQL: create, validation, cancel, wait and list pages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fluxserve.errors import InputValidationFailed, InvalidField
from fluxserve.lifecycle import Status
from fluxserve.schema import PredictionRequest
from fluxserve.service import predictions as service_module
from tests.inprocess import BACKENDS, InProcess, database_for, open_inprocess

NOOP = "fluxserve-fixtures/noop"
SLOW = "fluxserve-fixtures/slow-steps"


@pytest.fixture(scope="module", params=BACKENDS)
async def fs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    """One runtime per backend whose worker serves only the noop fixture: slow-steps predictions stay queued."""
    with database_for(request.param) as url:
        async with open_inprocess(
            tmp_path_factory.mktemp(f"service-{request.param}"), url, worker_models=[NOOP]
        ) as instance:
            yield instance


def _request(**inputs: object) -> PredictionRequest:
    return PredictionRequest(input=dict(inputs))


async def test_create_stores_a_starting_row(fs: InProcess) -> None:
    spec = fs.service.model("fluxserve-fixtures", "slow-steps")
    row = await fs.service.create(fs.key, spec, "hidden", _request(steps=3))
    assert row.status == Status.STARTING
    stored = await fs.store.get_prediction(row.id, fs.key.id)
    assert stored is not None
    assert stored.status == Status.STARTING
    assert stored.model == SLOW
    assert stored.key_id == fs.key.id
    assert stored.input == {"steps": 3}


async def test_invalid_input_names_the_fields(fs: InProcess) -> None:
    spec = fs.service.model("fluxserve-fixtures", "slow-steps")
    before = await fs.service.list(fs.key)
    with pytest.raises(InputValidationFailed) as raised:
        await fs.service.create(fs.key, spec, "hidden", _request(steps=0, step_seconds="fast"))
    fields = raised.value.invalid_fields
    assert fields is not None
    assert all(isinstance(f, InvalidField) for f in fields)
    assert {f.field for f in fields} == {"input.steps", "input.step_seconds"}
    assert raised.value.status == 422
    # Nothing was stored.
    after = await fs.service.list(fs.key)
    assert [r.id for r in after.results] == [r.id for r in before.results]


async def test_cancel_of_a_queued_prediction(fs: InProcess) -> None:
    spec = fs.service.model("fluxserve-fixtures", "slow-steps")
    row = await fs.service.create(fs.key, spec, "hidden", _request(steps=2))
    canceled = await fs.service.cancel(fs.key, row.id)
    assert canceled.status == Status.CANCELED
    assert canceled.completed_at is not None
    stored = await fs.service.get(fs.key, row.id)
    assert stored.status == Status.CANCELED
    # A second cancel returns the terminal row unchanged.
    again = await fs.service.cancel(fs.key, row.id)
    assert again.status == Status.CANCELED
    assert again.completed_at == stored.completed_at


async def test_wait_returns_the_terminal_prediction(fs: InProcess) -> None:
    spec = fs.service.model("fluxserve-fixtures", "noop")
    row = await fs.service.create(fs.key, spec, "hidden", _request(prompt="hello in-process"), wait=15)
    assert row.status == Status.SUCCEEDED
    assert row.output == "hello in-process"
    assert row.completed_at is not None


async def test_wait_times_out_on_a_queued_prediction(fs: InProcess) -> None:
    spec = fs.service.model("fluxserve-fixtures", "slow-steps")
    row = await fs.service.create(fs.key, spec, "hidden", _request(steps=1), wait=0.3)
    # No worker serves slow-steps here: the wait ends with the prediction still queued.
    assert row.status == Status.STARTING
    await fs.service.cancel(fs.key, row.id)


async def test_list_pages_by_key(fs: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "PAGE_SIZE", 2)
    key, _token = await fs.new_key("lister")
    other, _ = await fs.new_key("other")
    spec = fs.service.model("fluxserve-fixtures", "slow-steps")
    rows = [await fs.service.create(key, spec, "hidden", _request(steps=1)) for _ in range(5)]
    created = [r.id for r in rows]
    # The store's order: newest first, ties on created_at broken by id.
    newest_first = [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)]
    foreign = await fs.service.create(other, spec, "hidden", _request(steps=1))
    seen: list[str] = []
    page = await fs.service.list(key)
    assert page.previous_cursor is None
    pages = 0
    while True:
        pages += 1
        assert len(page.results) <= 2
        assert all(r.key_id == key.id for r in page.results)
        seen.extend(r.id for r in page.results)
        if page.next_cursor is None:
            break
        page = await fs.service.list(key, cursor=page.next_cursor)
        assert page.previous_cursor is not None
    assert pages == 3
    # Newest first, every prediction of the key exactly once, none of the other key's.
    assert seen == newest_first
    assert foreign.id not in seen
    # Walking back from the last page gives the middle page again.
    assert page.previous_cursor is not None
    back = await fs.service.list(key, cursor=page.previous_cursor)
    assert [r.id for r in back.results] == seen[2:4]
    other_page = await fs.service.list(other)
    assert [r.id for r in other_page.results] == [foreign.id]
    for pid in [*created, foreign.id]:
        owner = key if pid != foreign.id else other
        await fs.service.cancel(owner, pid)


async def test_get_of_another_keys_prediction_is_not_found(fs: InProcess) -> None:
    from fluxserve.errors import NotFound

    spec = fs.service.model("fluxserve-fixtures", "slow-steps")
    row = await fs.service.create(fs.key, spec, "hidden", _request(steps=1))
    other, _ = await fs.new_key("stranger")
    with pytest.raises(NotFound):
        await fs.service.get(other, row.id)
    with pytest.raises(NotFound):
        await fs.service.cancel(other, row.id)
    assert (await fs.service.get(fs.key, row.id)).status == Status.STARTING
    await fs.service.cancel(fs.key, row.id)
