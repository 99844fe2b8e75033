"""Small pure pieces of the API: Prefer parsing, ids, cursors."""

from __future__ import annotations

import re

import pytest

from fluxserve.api.predictions import parse_prefer_wait
from fluxserve.errors import InvalidRequest
from fluxserve.lifecycle import Status
from fluxserve.service.params import decode_cursor
from fluxserve.service.predictions import new_prediction_id


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("wait", (60, "wait")),
        ("wait=5", (5, "wait=5")),
        ("wait=0", (1, "wait=1")),
        ("wait=600", (60, "wait=60")),
        ("respond-async, wait=10", (10, "wait=10")),
        ("return=minimal", None),
    ],
)
def test_prefer_wait(header: str | None, expected: tuple[int, str] | None) -> None:
    assert parse_prefer_wait(header) == expected


def test_ids_are_26_lowercase_base32() -> None:
    ids = {new_prediction_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[a-z2-7]{26}", i) for i in ids)


def test_bad_cursor_is_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        decode_cursor("not-a-cursor")


def test_status_machine() -> None:
    assert Status.SUCCEEDED.is_terminal and not Status.PROCESSING.is_terminal
    assert {s.value for s in Status} == {"starting", "processing", "succeeded", "failed", "canceled"}
