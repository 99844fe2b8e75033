"""Real Chromium (Debian's package, never a downloaded browser) driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


def chromium_path() -> str | None:
    """Debian's chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (browser tests are required in CI)")
    pytest.skip(reason)


# Module scope, not session: Playwright's sync API keeps its event loop marked as running in this
# thread while it is open, which would stop pytest-asyncio from running the async tests after these.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module."""
    executable = chromium_path()
    if executable is None:
        _unavailable("chromium is not installed: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def desktop(browser: Any) -> Iterator[Any]:
    """A fresh desktop-sized page (its own localStorage)."""
    context = browser.new_context(**DESKTOP)
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    """A fresh phone-sized page."""
    context = browser.new_context(**PHONE)
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()
