"""The Files API and every way a client hands the service an image."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import replicate
from PIL import Image

from tests.conftest import make_server
from tests.support import Server, create_key

INFO = "/models/fluxserve-fixtures/image-info/predictions"


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def run_info(client: httpx.Client, image: str) -> dict[str, Any]:
    response = client.post(INFO, json={"input": {"image": image}}, headers={"Prefer": "wait=20"})
    body: dict[str, Any] = response.json()
    return body


def test_replicate_client_uploads_a_local_path(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes())
    client = replicate.Client(api_token=server.key, base_url=server.base)
    assert (
        client.run("fluxserve-fixtures/image-info", input={"image": path}) == f"64x48 PNG {path.stat().st_size} bytes"
    )
    uploaded = client.files.list()[0]
    assert (uploaded.name, uploaded.content_type, uploaded.size) == ("photo.png", "image/png", path.stat().st_size)


def test_three_multipart_shapes_and_the_file_lifecycle(server: Server) -> None:
    data = png_bytes()
    with server.client() as client:
        py_style = client.post(
            "/files", files={"content": ("a.png", data, "image/png")}, data={"metadata": '{"who": "py"}'}
        )
        js_style = client.post(
            "/files",
            files={"content": ("blob", data, "image/png"), "metadata": ("blob", b"{}", "application/json")},
        )
        documented = client.post(
            "/files",
            files={"content": ("x", data, "application/octet-stream")},
            data={"filename": "b.png", "type": "image/png"},
        )
        for response in (py_style, js_style, documented):
            assert response.status_code == 201, response.text
        first = py_style.json()
        assert first["metadata"] == {"who": "py"} and first["size"] == len(data)
        assert first["checksums"]["sha256"] and first["etag"] == first["checksums"]["md5"]
        assert first["urls"]["get"] == f"{server.base}/v1/files/{first['id']}"
        assert first["expires_at"] > first["created_at"]
        assert (documented.json()["name"], documented.json()["content_type"]) == ("b.png", "image/png")
        assert js_style.json()["metadata"] == {}

        assert client.get(f"/files/{first['id']}").json() == first
        assert client.get(f"/files/{first['id']}/download").content == data
        assert first["id"] in [f["id"] for f in client.get("/files").json()["results"]]
        # Used as an input, by URL, with no network hop.
        assert run_info(client, first["urls"]["get"])["output"] == f"64x48 PNG {len(data)} bytes"

        other = create_key(server.data_dir, server.env(), name="file-stranger")
        with server.client(other) as stranger:
            assert stranger.get(f"/files/{first['id']}").status_code == 404
            refused = stranger.post(INFO, json={"input": {"image": first["urls"]["get"]}})
            assert refused.status_code == 422 and "input.image" in refused.text

        deleted = client.delete(f"/files/{first['id']}")
        assert deleted.status_code == 204
        assert client.get(f"/files/{first['id']}").status_code == 404
        assert client.post("/files", data={"nothing": "here"}).status_code == 422


def test_data_uris_outputs_and_bad_inputs(server: Server) -> None:
    data = png_bytes((20, 10))
    with server.client() as client:
        uri = "data:image/png;base64," + base64.b64encode(data).decode()
        assert run_info(client, uri)["output"] == f"20x10 PNG {len(data)} bytes"
        produced = client.post(
            "/models/fluxserve-fixtures/writes-image/predictions",
            json={"input": {"size": 33}},
            headers={"Prefer": "wait=20"},
        ).json()
        assert run_info(client, produced["output"][0])["output"].startswith("33x33 PNG")

        for bad, reason in [
            ("data:image/png;base64,@@@", "not valid base64"),
            ("ftp://example.com/a.png", "must be an http(s) URL"),
            (f"{server.base}/v1/files/{'a' * 26}", "does not exist"),
        ]:
            response = client.post(INFO, json={"input": {"image": bad}})
            assert response.status_code == 422, bad
            problem = response.json()
            assert problem["invalid_fields"][0]["field"] == "input.image"
            assert reason in problem["invalid_fields"][0]["description"]
            # The detail names the field once: "- input.image: must be …", never "- input.image: image: must be …".
            assert problem["detail"].startswith("- input.image: ") and reason in problem["detail"]
            assert "input.image: image" not in problem["detail"]
        not_an_image = client.post(
            INFO, json={"input": {"image": "data:text/plain;base64," + base64.b64encode(b"hello").decode()}}
        )
        assert not_an_image.status_code == 422 and "PNG, JPEG, WEBP or GIF" in not_an_image.json()["detail"]


class _Images(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, bytes, dict[str, str]]]] = {}

    def do_GET(self) -> None:
        status, body, headers = self.routes.get(self.path, (404, b"missing", {}))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def image_host() -> Iterator[str]:
    """A loopback HTTP server standing in for an internal host."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    _Images.routes = {
        "/ok.png": (200, png_bytes((8, 8)), {"Content-Type": "image/png"}),
        "/redirect": (302, b"", {"Location": f"{base}/ok.png"}),
        "/loop": (302, b"", {"Location": f"{base}/loop"}),
        "/huge.png": (200, b"x" * 300_000, {"Content-Type": "image/png"}),
    }
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield base
    httpd.shutdown()
    httpd.server_close()


def test_guarded_fetcher_refuses_internal_hosts_unless_allowed(server: Server, image_host: str) -> None:
    with server.client() as client:
        refused = run_info(client, f"{image_host}/ok.png")
    assert refused["status"] == "failed"
    assert "image:" in refused["error"] and "not allowed" in refused["error"]


def test_guarded_fetcher_when_loopback_is_allowed(tmp_path: Path, tiny_weights: Path, image_host: str) -> None:
    env = {"FLUXSERVE_ALLOW_LOOPBACK_URLS": "true", "FLUXSERVE_MAX_INPUT_BYTES": "200000"}
    server = make_server(tmp_path, tiny_weights, None, extra_env=env).start()
    try:
        with server.client() as client:
            assert run_info(client, f"{image_host}/ok.png")["output"].startswith("8x8 PNG")
            # Redirects are followed; each hop is vetted again (loopback is allowed on this server).
            assert run_info(client, f"{image_host}/redirect")["output"].startswith("8x8 PNG")
            looping = run_info(client, f"{image_host}/loop")
            assert looping["status"] == "failed" and "redirects too many times" in looping["error"]
            missing = run_info(client, f"{image_host}/nope.png")
            assert missing["status"] == "failed" and "HTTP 404" in missing["error"]
            huge = run_info(client, f"{image_host}/huge.png")
            assert huge["status"] == "failed" and "limit" in huge["error"]
    finally:
        server.stop()


def test_uploads_over_the_limit_get_413(tmp_path: Path, tiny_weights: Path) -> None:
    server = make_server(tmp_path, tiny_weights, None, extra_env={"FLUXSERVE_MAX_UPLOAD_BYTES": "1000"}).start()
    try:
        with server.client() as client:
            response = client.post("/files", files={"content": ("big.bin", b"x" * 5000, "application/octet-stream")})
            assert response.status_code == 413
            assert response.json()["title"] == "Payload too large"
            assert client.post("/files", files={"content": ("ok.bin", b"x" * 500, "text/plain")}).status_code == 201
    finally:
        server.stop()
