"""index.html: static, self-contained, and every rank list renders in headless Chromium."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bpm.cli import main
from bpm.data.records import ImageRecord
from bpm.evaluation.features_file import save_features
from bpm.vis.html import PageEntry, render_index, write_page
from browser_helpers import assert_renders_cleanly, render_page, require_browser

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom"]


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium; installed here when missing and we are root (CI installs it up front)."""
    if not CHROMIUM.exists():
        if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("needs /usr/bin/chromium: run `apt-get install -y chromium` as root (not root or no apt here)")
        done = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not CHROMIUM.exists():
            pytest.skip(f"`apt-get install -y chromium` failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return CHROMIUM


def _render(chromium: Path, page: Path, tmp_path: Path) -> tuple[str, str]:
    profile = tmp_path / "chromium-profile"
    done = subprocess.run([str(chromium), *FLAGS, f"--user-data-dir={profile}", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def _images(dom: str) -> list[tuple[str, str, int]]:
    found = re.findall(r'<img src="([^"]+)"[^>]*data-natural-width="(\d+)" data-status="(\w+)"', dom)
    return [(src, status, int(width)) for src, width, status in found]


def _features(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    records = []
    for i, (pid, cam) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (0, 1)] * 2):
        # Names with characters that need escaping/quoting in HTML and URLs.
        path = tmp_path / "img" / f"{pid:04d}_c{cam} s1&#{i:03d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (16, 32), (pid * 60, cam * 80, 100)).save(path)
        records.append(ImageRecord(str(path), pid, cam))
    features = tmp_path / "f.h5"
    save_features(features, rng.normal(size=(6, 4)).astype(np.float32), records[:6], "toy/query")
    save_features(features, rng.normal(size=(14, 4)).astype(np.float32), records, "toy/gallery")
    return features


def test_every_rank_list_renders(chromium, tmp_path):
    assert main(["visualize", "--features_file", str(_features(tmp_path)), "--exp_dir", str(tmp_path / "exp"),
                 "--num_queries", "5", "--rank_list_size", "10", "--log_to_file", "false"]) == 0
    page = tmp_path / "exp/rank_lists/index.html"
    dom, log = _render(chromium, page, tmp_path)
    images = _images(dom)
    assert len(images) == 5 == len(list(page.parent.glob("*.jpg")))
    assert all(status == "ok" and width == 784 for _src, status, width in images), images
    strips = len(list((page.parent / "true_matches").glob("*.jpg")))  # the second row of each query with a match
    assert strips >= 1 and f'data-images="{5 + strips}" data-loaded="{5 + strips}"' in dom
    assert ":CONSOLE:" not in log, log  # script errors would be logged as console messages


@pytest.mark.slow
def test_rank_list_page_renders_in_playwright(tmp_path):
    """The same page driven by Playwright: every <img> loads, no console error, a full-page screenshot."""
    require_browser()
    assert main(["visualize", "--features_file", str(_features(tmp_path)), "--exp_dir", str(tmp_path / "exp"),
                 "--num_queries", "5", "--rank_list_size", "10", "--log_to_file", "false"]) == 0
    page = tmp_path / "exp/rank_lists/index.html"
    strips = len(list((page.parent / "true_matches").glob("*.jpg")))
    rendered = render_page(page, tmp_path / "rank_lists.png")
    assert_renders_cleanly(rendered, expected_images=5 + strips)
    assert sorted(i["naturalWidth"] for i in rendered.images)[-5:] == [784] * 5  # the five rank lists themselves


def test_a_missing_picture_is_flagged(chromium, tmp_path):
    Image.new("RGB", (784, 128), (10, 200, 30)).save(tmp_path / "there.jpg")
    entries = [PageEntry("there.jpg", "there.jpg", 0.5, 1), PageEntry("gone.jpg", "gone.jpg", float("nan"), -1)]
    write_page(tmp_path / "index.html", render_index("t", entries))
    dom, log = _render(chromium, tmp_path / "index.html", tmp_path)
    assert _images(dom) == [("there.jpg", "ok", 784), ("gone.jpg", "broken", 0)]
    assert 'data-images="2" data-loaded="1"' in dom and 'class="entry broken"' in dom
    assert ":CONSOLE:" not in log, log


def test_page_is_static_and_escaped():
    entries = [PageEntry('a b&c<"x>.jpg', 'a b&c<"x>.jpg', 0.1234, 3)]
    text = render_index("Rank lists: <toy>", entries, ["note & more"])
    assert 'src="a%20b%26c%3C%22x%3E.jpg"' in text
    assert "<b>a b&amp;c&lt;&quot;x&gt;.jpg</b> &middot; AP 12.34% &middot; first match at rank 3" in text
    assert "Rank lists: &lt;toy&gt;" in text and "note &amp; more" in text
    # No external assets: no URL with a scheme or protocol-relative URL anywhere, no <link>.
    assert not re.search(r"(src|href)=\"(?:[a-z]+:|//)", text) and "<link" not in text
    assert "http" not in text.lower()
