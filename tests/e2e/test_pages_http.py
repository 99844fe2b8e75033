"""The web pages over plain HTTP: what they show, what they keep to themselves, and their headers."""

from __future__ import annotations

import httpx

from tests.support import Server, wait_for


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
