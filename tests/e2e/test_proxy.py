"""Behind a reverse proxy: links follow X-Forwarded-* only when the operator trusts them."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import make_server


def test_trusted_forwarded_headers_shape_every_link(tmp_path: Path, tiny_weights: Path) -> None:
    server = make_server(tmp_path, tiny_weights, None, extra_env={"FLUXSERVE_TRUST_FORWARDED_HEADERS": "true"})
    server.start()
    try:
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "img.example.com", "X-Forwarded-Prefix": "/api"}
        with server.client(prefix="/replicate/v1") as client:
            done = client.post(
                "/models/fluxserve-fixtures/writes-image/predictions",
                json={"input": {}},
                headers={"Prefer": "wait=10", **forwarded},
            ).json()
            base = "https://img.example.com/api/replicate/v1"
            assert done["urls"]["get"] == f"{base}/predictions/{done['id']}"
            assert done["urls"]["web"] == f"https://img.example.com/api/p/{done['id']}"
            assert done["output"] == [f"{base}/outputs/{done['id']}/out-0.png"]
            page = client.get("/predictions", headers=forwarded).json()
            assert page["results"][0]["id"] == done["id"]
    finally:
        server.stop()


def test_public_url_overrides_the_request_host(tmp_path: Path, tiny_weights: Path) -> None:
    server = make_server(tmp_path, tiny_weights, None, extra_env={"FLUXSERVE_PUBLIC_URL": "https://gen.example.org/"})
    server.start()
    try:
        with server.client() as client:
            created = client.post("/models/fluxserve-fixtures/noop/predictions", json={"input": {}}).json()
            assert created["urls"]["get"] == f"https://gen.example.org/v1/predictions/{created['id']}"
    finally:
        server.stop()
