"""Helpers of the device fault tests: waiting for a condition, distinct real frames to upload."""

from __future__ import annotations

import time

import pytest
from conftest import REPO_ROOT

DEMO = sorted((REPO_ROOT / "device" / "demo").glob("*.jpg"))

def wait_for(predicate, what: str, timeout: float = 20.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"gave up waiting for {what}")


def frame_png(index: int) -> bytes:
    """A distinct real frame per index (a demo frame with one pixel changed): never a duplicate."""
    import cv2

    from device.core.imageio import load_image

    rgb = load_image(DEMO[index % len(DEMO)]).copy()
    rgb[0, 0] = (index % 256, index // 256 % 256, 7)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return encoded.tobytes()
