"""Outputs in S3-compatible storage, against a real S3 HTTP server on loopback.

The server is moto's standalone S3 server: MinIO, the usual self-hosted choice, does not install
from the package registries this project can reach, while moto's server speaks the same S3 REST
API over HTTP, so boto3 exercises the real wire protocol.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import make_server
from tests.support import free_port

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="outputs")
    yield endpoint
    server.stop()


def test_outputs_go_to_s3_and_are_served_from_there(tmp_path: Path, tiny_weights: Path, s3_endpoint: str) -> None:
    env = {"FLUXSERVE_S3_BUCKET": "outputs", "FLUXSERVE_S3_ENDPOINT_URL": s3_endpoint, **CREDENTIALS}
    server = make_server(tmp_path, tiny_weights, None, extra_env=env).start()
    try:
        with server.client() as client:
            done = client.post(
                "/models/fluxserve-fixtures/writes-image/predictions",
                json={"input": {"count": 2, "size": 48}},
                headers={"Prefer": "wait=20"},
            ).json()
        assert done["status"] == "succeeded", done
        keys = sorted(
            o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="outputs")["Contents"]
        )
        assert keys == [f"fluxserve/outputs/{done['id']}/out-0.png", f"fluxserve/outputs/{done['id']}/out-1.png"]
        assert not (tmp_path / "outputs" / done["id"]).exists()
        response = httpx.get(done["output"][1])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (48, 48)
        missing = httpx.get(done["output"][1].replace("out-1", "out-9"))
        assert missing.status_code == 404
    finally:
        server.stop()
