"""Shared fixtures: where the real microscopy data lives, and skipping without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_conversion.data import find_shared_data

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a clear reason when it is absent."""
    path = find_shared_data()
    if path is None:
        pytest.skip("real microscopy data not found (set ALLSCOPE_DATA or place it at ../shared/data)")
    return path
