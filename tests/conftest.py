"""Shared fixtures: where the real microscopy data lives, and skipping without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def find_shared_data() -> Path | None:
    """The real data set: $ALLSCOPE_DATA, else ../shared/data beside the clone, else /work/shared/data."""
    candidates = []
    if os.environ.get("ALLSCOPE_DATA"):
        candidates.append(Path(os.environ["ALLSCOPE_DATA"]))
    candidates += [REPO_ROOT.parent / "shared" / "data", Path("/work/shared/data")]
    for candidate in candidates:
        if (candidate / "README.md").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a clear reason when it is absent."""
    path = find_shared_data()
    if path is None:
        pytest.skip("real microscopy data not found (set ALLSCOPE_DATA or place it at ../shared/data)")
    return path
