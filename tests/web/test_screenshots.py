"""`python -m webui.screenshots` makes the README's two pictures from a real server, the demo frames and Chromium."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from webui.screenshots import main


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm is not installed (apt-get install poppler-utils)")
@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="Debian's chromium is not installed (apt-get install chromium)")
def test_screenshots_command_makes_both_small_pictures(tmp_path):
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from PIL import Image

    assert main(["--out", str(tmp_path)]) == 0
    sizes = {}
    for name in ("review-800x480.png", "report-page1.png"):
        path = tmp_path / name
        assert path.stat().st_size <= 300_000, f"{name}: {path.stat().st_size} bytes"
        with Image.open(path) as image:
            sizes[name] = image.size
    assert sizes["review-800x480.png"] == (800, 480)
    width, height = sizes["report-page1.png"]
    assert abs(height / width - 297 / 210) < 0.01  # an A4 page
    # the README shows the committed ones
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "webui/screenshots/review-800x480.png" in readme and "webui/screenshots/report-page1.png" in readme


def test_screenshots_command_has_help():
    done = subprocess.run([sys.executable, "-m", "webui.screenshots", "--help"], capture_output=True, text=True,
                          cwd=REPO_ROOT, check=True)
    assert "--out" in done.stdout
