"""Render a static HTML page in a real headless browser (Debian's chromium driven by Playwright).

The pages bpm writes (rank lists, stream identities) are opened straight from disk, as a user
would: every <img> must load (``naturalWidth > 0``), nothing may be logged as a console error or
an uncaught script error, and a full-page screenshot is written so a person can look at it.
Skips, with the reason, where chromium or Playwright is missing (CI's .ci/run installs both).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")


@dataclass(frozen=True)
class RenderedPage:
    images: list[dict]          # per <img>: src, complete, naturalWidth, naturalHeight
    console_errors: list[str]   # console.error messages, uncaught exceptions and failed requests
    screenshot: Path


def require_browser() -> None:
    """Skip the calling test, saying what is missing, without chromium or Playwright."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs {CHROMIUM} (Debian: `apt-get install -y chromium`; CI's .ci/run installs it)")
    pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install 'person-reid-bpm[stream]'")


def render_page(page: Path, screenshot: Path) -> RenderedPage:
    """Open ``page`` in headless chromium, wait for it to load, read its images and errors, screenshot it."""
    require_browser()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": 1000, "height": 700})
            tab.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            tab.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
            tab.goto(page.resolve().as_uri(), wait_until="load", timeout=60_000)
            images = tab.evaluate("""() => Array.from(document.images).map(img => ({
                src: img.getAttribute("src"), complete: img.complete,
                naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight}))""")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return RenderedPage(images, errors, screenshot)


def assert_renders_cleanly(rendered: RenderedPage, expected_images: int) -> None:
    """Every image loaded, no error, and a screenshot that shows more than a blank page."""
    assert len(rendered.images) == expected_images, rendered.images
    broken = [i for i in rendered.images if not (i["complete"] and i["naturalWidth"] > 0)]
    assert not broken, broken
    assert not rendered.console_errors, rendered.console_errors
    with Image.open(rendered.screenshot) as shot:
        assert shot.format == "PNG" and shot.width >= 500 and shot.height >= 300, (shot.format, shot.size)
        pixels = np.asarray(shot.convert("RGB"))
    # a blank or one-colour page has a handful of colours; text plus pictures give hundreds
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
