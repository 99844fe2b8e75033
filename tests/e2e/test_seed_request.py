"""The seed request from the README, verbatim, field by field, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import httpx
from PIL import Image

from tests.support import Server

SEED_INPUT = {
    "prompt": "A paper boat floating on calm water at sunrise.",
    "aspect_ratio": "1:1",
    "output_format": "webp",
    "output_quality": 80,
}
ID = re.compile(r"^[a-z2-7]{26}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
PROGRESS = re.compile(r"^\s*(\d+)%\s*\|.+?\|\s*(\d+)\/(\d+)")  # replicate-python's Prediction.progress


def test_seed_request_field_by_field(server: Server) -> None:
    url = f"{server.base}/replicate/v1/models/black-forest-labs/flux-schnell/predictions"
    response = httpx.post(
        url,
        headers={"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"},
        json={"input": SEED_INPUT},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {
        "id", "model", "version", "input", "logs", "output", "data_removed", "error", "source", "status",
        "created_at", "urls",
    }  # fmt: skip
    assert ID.match(body["id"])
    assert body["model"] == "black-forest-labs/flux-schnell"
    assert body["version"] == "hidden"
    assert body["input"] == SEED_INPUT
    assert body["logs"] == ""
    assert body["output"] is None
    assert body["data_removed"] is False
    assert body["error"] is None
    assert body["source"] == "api"
    assert body["status"] == "starting"
    assert TIMESTAMP.match(body["created_at"])
    created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60
    prefix = f"{server.base}/replicate/v1/predictions/{body['id']}"
    assert body["urls"] == {
        "get": prefix,
        "cancel": f"{prefix}/cancel",
        "stream": f"{prefix}/stream",
        "web": f"{server.base}/p/{body['id']}",
    }

    with httpx.Client(headers={"Authorization": f"Bearer {server.key}"}, timeout=30) as client:
        done = body
        for _ in range(1200):
            done = client.get(body["urls"]["get"]).json()
            if done["status"] in ("succeeded", "failed", "canceled"):
                break
            assert done["status"] in ("starting", "processing")
            import time

            time.sleep(0.05)
        assert done["status"] == "succeeded", done
        assert done["error"] is None
        assert isinstance(done["output"], list) and len(done["output"]) == 1
        out_url = done["output"][0]
        assert out_url.startswith(f"{server.base}/replicate/v1/") and out_url.endswith("/out-0.webp")
        for key in ("started_at", "completed_at"):
            assert TIMESTAMP.match(done[key])
        metrics = done["metrics"]
        assert metrics["image_count"] == 1
        assert 0 < metrics["predict_time"] <= metrics["total_time"]
        # The model's first use may log its load first ("Loading …", "Loaded …"); then the seed comes first.
        logs = [line for line in done["logs"].splitlines() if not line.startswith(("Loading ", "Loaded "))]
        assert re.match(r"^Using seed: \d+$", logs[0])
        progress = [PROGRESS.match(line) for line in logs if PROGRESS.match(line)]
        assert progress and progress[-1].groups() == ("100", "4", "4")

        # Outputs need no auth (and tolerate it), with the right Content-Type.
        image_response = httpx.get(out_url, timeout=30)
        assert image_response.status_code == 200
        assert image_response.headers["content-type"] == "image/webp"
        image = Image.open(io.BytesIO(image_response.content))
        assert image.format == "WEBP"
        assert image.size == (1024, 1024)
        assert client.get(out_url).status_code == 200


def test_urls_follow_the_prefix_and_forwarded_headers_are_ignored_by_default(server: Server) -> None:
    with server.client() as client:
        created = client.post(
            "/models/fluxserve-fixtures/noop/predictions",
            json={"input": {"prompt": "x"}},
            headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
        ).json()
        assert created["urls"]["get"] == f"{server.base}/v1/predictions/{created['id']}"
        again = client.get(f"{server.base}/replicate/v1/predictions/{created['id']}").json()
        assert again["urls"]["cancel"] == f"{server.base}/replicate/v1/predictions/{created['id']}/cancel"
