"""The playground and a prediction's page, in a real browser against a real server."""

from __future__ import annotations

from typing import Any

from fluxserve.hints import command
from tests.support import Server, create_key, wait_for


def no_sideways_scroll(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_playground_runs_flux_schnell_and_shows_the_image(server: Server, desktop: Any) -> None:
    page = desktop
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.base}/")
    page.fill("[data-role=key]", server.key)
    page.click("text=Use key")
    page.wait_for_selector("[data-role=model] option[value='black-forest-labs/flux-schnell']", state="attached")
    page.select_option("[data-role=model]", "black-forest-labs/flux-schnell")
    # The form follows the schema: enums are selects, bounded numbers sliders, booleans checkboxes.
    assert page.locator("select#input-aspect_ratio option").count() == 11
    assert page.get_attribute("input#input-num_outputs", "type") == "range"
    assert page.get_attribute("input#input-num_outputs", "max") == "4"
    assert page.get_attribute("input#input-go_fast", "type") == "checkbox"
    assert page.get_attribute("input#input-seed", "type") == "number"
    page.fill("textarea#input-prompt", "a paper boat on calm water")
    page.select_option("select#input-megapixels", "0.25")
    page.select_option("select#input-output_format", "png")
    page.fill("input#input-seed", "11")
    page.click("[data-role=run]")

    image = page.wait_for_selector("[data-role=result] .output-image img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image)
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [512, 512]
    page.wait_for_selector("[data-role=result] [data-role=status]:text('succeeded')")
    page.wait_for_selector("[data-role=result] [data-role=metrics] >> text=Predict time")
    # --demo: the noise comes with its reason.
    banner = page.locator("[data-role=result] [data-role=demo-banner]")
    assert banner.is_visible() and "noise, by design" in banner.inner_text()
    pid = page.get_attribute("[data-role=result] .prediction", "data-prediction")
    with server.client() as http:
        sent = http.get(f"/predictions/{pid}").json()
    assert sent["input"]["seed"] == 11 and sent["input"]["megapixels"] == "0.25"
    assert sent["input"]["num_outputs"] == 1 and sent["input"]["go_fast"] is True
    # The gallery lists it, with its image.
    page.wait_for_selector(f".gallery .tile[data-prediction='{pid}'] img")
    # The key stays in the browser: after a reload the models load without asking again.
    page.reload()
    page.wait_for_selector("[data-role=model] option[value='fluxserve-fixtures/slow-steps']", state="attached")
    assert no_sideways_scroll(page)
    assert errors == []


def test_prediction_page_shows_progress_and_cancels(server: Server, phone: Any) -> None:
    page = phone
    with server.client() as http:
        created = http.post(
            "/models/fluxserve-fixtures/slow-steps/predictions",
            json={"input": {"steps": 100, "step_seconds": 0.08, "seed": 5}},
        ).json()
    # The page needs no key to watch: it is a capability URL.
    page.goto(created["urls"]["web"])
    bar = "[data-role=progress-bar]"
    page.wait_for_function("([sel, at]) => document.querySelector(sel).value >= at", arg=[bar, 5])
    first = page.eval_on_selector(bar, "el => el.value")
    page.wait_for_function("([sel, at]) => document.querySelector(sel).value > at", arg=[bar, first])
    assert "Using seed: 5" in page.inner_text("[data-role=logs]")
    assert page.inner_text("[data-role=status]") == "processing"
    assert no_sideways_scroll(page)

    # Cancel asks for the key (kept in localStorage afterwards).
    page.fill("[data-role=cancel-key]", server.key)
    page.click("text=Cancel prediction")
    page.wait_for_selector("[data-role=status]:text('canceled')")
    with server.client() as http:
        final = wait_for(http, created["id"], timeout=10)
    assert final["status"] == "canceled"
    assert page.eval_on_selector(bar, "el => el.value") < 100
    assert page.evaluate("localStorage.getItem('fluxserve.apiKey')") == server.key
    # The final view comes from the server: the cancel form is gone, metrics are there.
    page.wait_for_selector("[data-role=metrics] >> text=Completed")
    assert page.locator("[data-role=cancel]").count() == 0


def test_cancel_with_the_wrong_key_says_so(server: Server, desktop: Any) -> None:
    page = desktop
    with server.client() as http:
        created = http.post(
            "/models/fluxserve-fixtures/slow-steps/predictions", json={"input": {"steps": 100, "step_seconds": 0.05}}
        ).json()
    try:
        page.goto(created["urls"]["web"])
        page.fill("[data-role=cancel-key]", "fs_someone-elses-key")
        page.click("text=Cancel prediction")
        page.wait_for_selector("[data-role=cancel-message]:text('cannot cancel')")
        assert page.inner_text("[data-role=status]") in ("starting", "processing")
    finally:
        with server.client() as http:
            http.post(f"/predictions/{created['id']}/cancel")


def test_playground_sends_image_inputs_as_data_uris(server: Server, desktop: Any, tmp_path: Any) -> None:
    """Kontext's ``input_image`` is one file picker and ``input_images`` (an array of URIs) a multiple one."""
    from PIL import Image

    paths = []
    for i, size in enumerate([(40, 30), (20, 30)]):
        path = tmp_path / f"in-{i}.png"
        Image.new("RGB", size, (200, 40 * i, 10)).save(path)
        paths.append(str(path))
    page = desktop
    page.goto(f"{server.base}/")
    page.fill("[data-role=key]", server.key)
    page.click("text=Use key")
    ref = "black-forest-labs/flux-kontext-dev"
    page.wait_for_selector(f"[data-role=model] option[value='{ref}']", state="attached")
    page.select_option("[data-role=model]", ref)
    assert page.get_attribute("input#input-input_images", "multiple") is not None
    assert page.get_attribute("input#input-input_image", "multiple") is None
    page.fill("textarea#input-prompt", "make it blue")
    page.set_input_files("input#input-input_images", paths)
    previews = page.locator("[data-field=input_images] img.preview")
    previews.nth(1).wait_for(state="attached")
    assert previews.count() == 2
    # Catch the create request in the browser: running Kontext is not what this test is about.
    sent: list[Any] = []

    def capture(route: Any) -> None:
        sent.append(route.request.post_data_json)
        route.fulfill(status=422, content_type="application/problem+json", json={"detail": "captured by the test"})

    page.route(f"**/models/{ref}/predictions", capture)
    page.click("[data-role=run]")
    page.wait_for_selector("[data-role=run-error]:text('captured by the test')")
    images = sent[0]["input"]["input_images"]
    assert len(images) == 2 and all(uri.startswith("data:image/png;base64,") for uri in images)
    assert "input_image" not in sent[0]["input"]


def test_playground_shows_a_loading_model_until_it_is_ready(tmp_path: Any, tiny_weights: Any, desktop: Any) -> None:
    """A model still loading (a 10 s setup) is labelled so, and the label goes once it is ready."""
    from tests.conftest import make_server

    ref = "fluxserve-fixtures/slow-setup"
    extra = {
        "FLUXSERVE_EXTRA_MODELS": '["fluxserve.predictors.fixtures:ALL", "fluxserve.predictors.fixtures:LIFECYCLE"]',
        "FLUXSERVE_PRELOAD": ref,
    }
    server = make_server(tmp_path, tiny_weights, None, extra_env=extra).start()
    try:
        page = desktop
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.base}/?model={ref}")
        page.fill("[data-role=key]", server.key)
        page.click("text=Use key")
        option = page.locator(f"[data-role=model] option[value='{ref}']")
        option.wait_for(state="attached")
        assert "loading" in option.inner_text()
        state = page.locator("[data-role=model-state]")
        state.wait_for()
        assert "loading" in state.inner_text() and "predictions start once it is ready" in state.inner_text()
        # The list refreshes by itself; once loaded the label and the note are gone.
        from playwright.sync_api import expect

        expect(option).not_to_contain_text("loading", timeout=30_000)
        assert state.is_hidden()
        assert page.locator("[data-role=model]").input_value() == ref
        assert errors == []
    finally:
        server.stop()


def test_playground_empty_gallery_says_what_is_missing(server: Server, desktop: Any) -> None:
    """No key entered, a refused key and a key without predictions are three different empty galleries."""
    page = desktop
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    empty = page.locator("[data-role=gallery-empty]")
    page.goto(f"{server.base}/")
    page.wait_for_function("() => document.querySelector('[data-role=key-status]').textContent.includes('Paste')")
    assert empty.is_visible() and empty.get_attribute("data-state") == "no-key"
    assert "No API key entered" in empty.inner_text() and "No predictions yet" not in empty.inner_text()
    assert empty.locator("code").inner_text() == command("keys create --name me")

    page.fill("[data-role=key]", "fs_not-a-key")
    page.click("text=Use key")
    page.wait_for_selector("[data-role=gallery-empty][data-state=refused]")
    assert "refused" in empty.inner_text() and empty.locator("code").inner_text() == command("keys create --name me")

    fresh = create_key(server.data_dir, server.env(), name="no-predictions")
    page.fill("[data-role=key]", fresh)
    page.click("text=Use key")
    page.wait_for_selector("[data-role=gallery-empty][data-state=empty]")
    assert "No predictions yet" in empty.inner_text()

    page.click("[data-role=forget]")
    page.wait_for_selector("[data-role=gallery-empty][data-state=no-key]")
    assert "No API key entered" in empty.inner_text()
    assert errors == []
