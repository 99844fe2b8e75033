"""Take the README's screenshots with real Chromium against a demo server.

    .venv/bin/python -m tests.browser.screenshots [OUT_DIR]     # default docs/screenshots

Demo weights make noise images: the screenshots show the pages, not FLUX's quality.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from tests.browser.conftest import CHROMIUM_ARGS, DESKTOP, PHONE, chromium_path
from tests.support import Server, create_key, wait_for

PROMPT = "A paper boat floating on calm water at sunrise"


def _use_key(page: Page, server: Server) -> None:
    page.goto(f"{server.base}/")
    page.evaluate("key => localStorage.setItem('fluxserve.apiKey', key)", server.key)


def main(out_dir: Path) -> None:
    """Start a demo server, make a few predictions, and save the pages as PNG files in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    executable = chromium_path()
    if executable is None:
        raise SystemExit("chromium is not installed: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(data_dir=Path(tmp), database_url=None)
        server.key = create_key(server.data_dir, server.env())
        server.start(timeout=600)
        try:
            with server.client() as http:
                for ratio, seed in (("1:1", 1), ("3:2", 2), ("9:16", 3)):
                    body = {"input": {"prompt": PROMPT, "aspect_ratio": ratio, "megapixels": "0.25", "seed": seed}}
                    route = "/models/black-forest-labs/flux-schnell/predictions"
                    http.post(route, json=body, headers={"Prefer": "wait"})
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                desktop = browser.new_context(**DESKTOP).new_page()
                _use_key(desktop, server)
                desktop.goto(f"{server.base}/?model=black-forest-labs/flux-schnell")
                desktop.wait_for_selector("textarea#input-prompt")
                desktop.fill("textarea#input-prompt", PROMPT)
                desktop.select_option("select#input-aspect_ratio", "16:9")
                desktop.select_option("select#input-megapixels", "0.25")
                desktop.eval_on_selector(
                    "input#input-num_outputs", "el => { el.value = 2; el.dispatchEvent(new Event('input')); }"
                )
                desktop.click("[data-role=run]")
                desktop.wait_for_selector("[data-role=result] [data-role=status]:text('succeeded')")
                desktop.wait_for_selector("[data-role=result] [data-role=metrics] >> text=Predict time")
                desktop.wait_for_timeout(800)  # the gallery's images
                desktop.screenshot(path=str(out_dir / "playground.png"), full_page=True)
                pid = desktop.get_attribute("[data-role=result] .prediction", "data-prediction")
                desktop.goto(f"{server.base}/p/{pid}")
                desktop.wait_for_timeout(500)
                desktop.screenshot(path=str(out_dir / "prediction.png"), full_page=True)

                phone = browser.new_context(**PHONE).new_page()
                _use_key(phone, server)
                with server.client() as http:
                    running = http.post(
                        "/models/fluxserve-fixtures/slow-steps/predictions",
                        json={"input": {"steps": 60, "step_seconds": 0.15, "seed": 42}},
                    ).json()
                phone.goto(running["urls"]["web"])
                phone.wait_for_function("() => document.querySelector('[data-role=progress-bar]').value >= 40")
                phone.screenshot(path=str(out_dir / "prediction-phone.png"), full_page=True)
                with server.client() as http:
                    http.post(f"/predictions/{running['id']}/cancel")
                    wait_for(http, running["id"])
                browser.close()
        finally:
            server.stop()
    for name in ("playground.png", "prediction.png", "prediction-phone.png"):
        print(out_dir / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/screenshots"))
