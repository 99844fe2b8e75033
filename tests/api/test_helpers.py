"""Small pure pieces of the API: Prefer parsing, ids, cursors, 422 details."""

from __future__ import annotations

import re

import pytest

from fluxserve.api.predictions import parse_prefer_wait
from fluxserve.errors import InputValidationFailed, InvalidField, InvalidRequest
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


@pytest.mark.parametrize(
    ("field", "description", "line"),
    [
        # A URI error names its input as a prediction's error does ("image: …"): the detail names it once.
        (
            "input.image",
            "image: must be an http(s) URL (got 'ftp://x')",
            "- input.image: must be an http(s) URL (got 'ftp://x')",
        ),
        (
            "input.input_images[1]",
            "input_images[1]: the data URI is not valid base64",
            "- input.input_images[1]: the data URI is not valid base64",
        ),
        ("input.lora_weights", "lora_weights: not a LoRA", "- input.lora_weights: not a LoRA"),
        ("input.prompt", "prompt is required", "- input.prompt is required"),
        (
            "input.num_outputs",
            "num_outputs must be less than or equal to 4 (got 9)",
            "- input.num_outputs must be less than or equal to 4 (got 9)",
        ),
        ("input", "input must be a JSON object", "- input must be a JSON object"),
        # Descriptions that name the field elsewhere stand alone; others follow it.
        (
            "input.foo",
            "Additional property foo is not allowed (this model takes: prompt)",
            "- Additional property foo is not allowed (this model takes: prompt)",
        ),
        (
            "input.input_images",
            "Give either input_image or input_images, not both",
            "- Give either input_image or input_images, not both",
        ),
        ("input.steps", "out of range", "- input.steps: out of range"),
        ("input.image", "images must be PNG", "- input.image: images must be PNG"),
    ],
)
def test_a_422_detail_names_each_field_once(field: str, description: str, line: str) -> None:
    error = InputValidationFailed.of([InvalidField("invalid", field, description)])
    assert error.detail == line + "\n"
    # The record the client gets is the one validation made.
    assert error.invalid_fields == [InvalidField("invalid", field, description)]
