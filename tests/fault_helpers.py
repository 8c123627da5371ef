"""Helpers of the device fault tests: waiting for a condition, distinct real frames to upload, a small disk."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

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


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size_mb: int):
    """A ``size_mb`` MB tmpfs mounted on ``mount_point`` (made if missing), unmounted afterwards; the test is
    skipped with the reason where mounting is not permitted (it needs root)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
