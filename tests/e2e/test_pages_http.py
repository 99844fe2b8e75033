"""The web pages over plain HTTP: what they show, what they keep to themselves, and their headers."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from fluxserve.hints import command
from tests.support import Server, create_key, wait_for


def test_prediction_page_shows_the_prediction_and_nothing_else(server: Server) -> None:
    with server.client() as http:
        created = http.post(
            "/models/fluxserve-fixtures/raises-in-predict/predictions",
            json={
                "input": {"message": "it <b>broke</b> on purpose"},
                "webhook": "https://hooks.example.com/in?token=webhook-secret",
            },
        ).json()
        wait_for(http, created["id"])
    page = httpx.get(created["urls"]["web"], timeout=10, headers={"Authorization": "Bearer fs_not-a-key"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"
    assert f"default-src 'self' {server.base};" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert created["id"] in html and "fluxserve-fixtures/raises-in-predict" in html
    assert "it &lt;b&gt;broke&lt;/b&gt; on purpose" in html  # escaped, never markup
    assert "<b>broke" not in html
    assert "webhook-secret" not in html and "hooks.example.com" not in html
    assert server.key not in html
    fragment = httpx.get(f"{created['urls']['web']}/fragment", timeout=10)
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<section class="prediction"')
    assert 'data-status="failed"' in fragment.text


def test_pages_follow_the_request_host_and_link_the_stream(server: Server) -> None:
    with server.client(prefix="/replicate/v1") as http:
        created = http.post("/models/fluxserve-fixtures/slow-steps/predictions", json={"input": {"steps": 1}}).json()
        wait_for(http, created["id"])
    html = httpx.get(f"{server.base}/p/{created['id']}", timeout=10).text
    assert f'href="{server.base}/static/fluxserve.css"' in html
    # A finished prediction's page opens no stream; a running one resumes after what the page shows.
    assert 'data-status="succeeded"' in html
    assert f"{server.base}/v1/predictions/{created['id']}/stream?last_event_id=" in html


def test_unknown_prediction_page_is_404(server: Server) -> None:
    response = httpx.get(f"{server.base}/p/notaprediction", timeout=10)
    assert response.status_code == 404
    assert response.json()["detail"] == "Prediction notaprediction not found."


def test_playground_and_static_files(server: Server) -> None:
    home = httpx.get(f"{server.base}/", timeout=10)
    assert home.status_code == 200 and 'data-api="' + f'{server.base}/v1"' in home.text
    for name, kind in (("watch.js", "javascript"), ("playground.js", "javascript"), ("fluxserve.css", "text/css")):
        response = httpx.get(f"{server.base}/static/{name}", timeout=10)
        assert response.status_code == 200 and kind in response.headers["content-type"]


def _asset_urls(html: str) -> list[str]:
    """Every URL a docs page loads: src/href attributes and Swagger UI's ``url:`` (the OpenAPI document)."""
    return re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)


def test_api_docs_load_everything_from_this_server(server: Server) -> None:
    """/docs (Swagger UI) and /redoc work offline: no CDN, no web fonts; each asset answers from here."""
    kinds = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
    for page, expected in (("/docs", {".js", ".css", ".png", ".json"}), ("/redoc", {".js", ".png"})):
        response = httpx.get(f"{server.base}{page}", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        urls = _asset_urls(response.text)
        assert {url[url.rindex(".") :] for url in urls} >= expected, urls
        for url in urls:
            assert url.startswith(f"{server.base}/"), f"{page} loads {url} from elsewhere"
            asset = httpx.get(url, timeout=10)
            assert asset.status_code == 200, url
            assert kinds[url[url.rindex(".") :]] in asset.headers["content-type"], url
        assert "cdn" not in response.text and "fonts.googleapis" not in response.text
    swagger = httpx.get(f"{server.base}/docs/assets/swagger-ui-bundle.js", timeout=10)
    assert "SwaggerUIBundle" in swagger.text
    redoc = httpx.get(f"{server.base}/docs/assets/redoc.standalone.js", timeout=10)
    assert "Redoc" in redoc.text


DEMO_BANNER = 'data-role="demo-banner"'


def test_demo_predictions_say_their_images_are_noise(server: Server) -> None:
    """A --demo server's FLUX predictions carry a banner: noise by design, and how to serve real weights."""
    with server.client() as http:
        created = http.post(
            "/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "a red fox", "megapixels": "0.25", "num_inference_steps": 1}},
        ).json()
        done = wait_for(http, created["id"], timeout=120)
        fixture = http.post("/models/fluxserve-fixtures/noop/predictions", json={"input": {"prompt": "x"}}).json()
    assert done["status"] == "succeeded", done
    page = httpx.get(created["urls"]["web"], timeout=10).text
    assert DEMO_BANNER in page
    banner = page[page.index(DEMO_BANNER) : page.index("</p>", page.index(DEMO_BANNER))]
    assert "noise, by design" in banner and "tiny random weights" in banner and "--demo" in banner
    assert f"{command('pull black-forest-labs/flux-schnell')}</code>" in banner
    assert "Weights in the README" in banner
    # The playground shows the same view of it; a model that runs no FLUX weights has no banner.
    assert DEMO_BANNER in httpx.get(f"{created['urls']['web']}/fragment", timeout=10).text
    assert DEMO_BANNER not in httpx.get(fixture["urls"]["web"], timeout=10).text


def test_without_demo_there_is_no_banner_and_the_playground_says_what_is_missing(tmp_path: Path) -> None:
    """A server without --demo (and without weights) serves its pages: no demo banner; before any key exists,
    the playground says so and how to create one; once one exists, that none is entered."""
    server = Server(data_dir=tmp_path, database_url=None, demo=False, extra_env={"FLUXSERVE_WORKER": "false"})
    server.start()
    try:
        keys_create = command("keys create --name me")
        home = httpx.get(f"{server.base}/", timeout=10).text
        empty = home[home.index('data-role="gallery-empty"') :]
        empty = empty[: empty.index("</p>")]
        assert "This server has no API key yet" in empty and f"<code>{keys_create}</code>" in empty
        assert "No predictions yet" not in home
        server.key = create_key(tmp_path, server.env())
        home = httpx.get(f"{server.base}/", timeout=10).text
        assert "No API key entered" in home and "This server has no API key yet" not in home
        with server.client() as http:
            created = http.post(
                "/models/black-forest-labs/flux-schnell/predictions", json={"input": {"prompt": "a red fox"}}
            )
        assert created.status_code == 201, created.text
        page = httpx.get(created.json()["urls"]["web"], timeout=10)
        assert page.status_code == 200 and "a red fox" in page.text
        assert DEMO_BANNER not in page.text and "noise" not in page.text
    finally:
        server.stop()
