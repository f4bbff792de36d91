"""Headless Debian Chromium driven by Playwright, for the page tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_PATH = os.environ.get("VELOCITY_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's hosts.
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


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """Launch Chromium and close it on exit; skip the test without it, fail in CI.

    Keep the browser open for one module at most: Playwright's sync API runs an event loop in
    the main thread while it is open, and ``asyncio.run`` in any later test would fail.
    """
    if not Path(CHROMIUM_PATH).exists():
        # CI installs chromium with .ci/bootstrap, so a missing browser there is a failure.
        skip_or_fail = pytest.fail if os.environ.get("CI") else pytest.skip
        skip_or_fail(
            f"Chromium not found at {CHROMIUM_PATH}: run 'apt-get install -y chromium' "
            "or set VELOCITY_CHROMIUM to the browser path."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
