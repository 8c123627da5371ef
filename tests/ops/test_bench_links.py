"""``allscope bench thinlink`` and ``allscope bench fleet``: the CLI wiring refuses bad arguments in one line.

The benchmarks themselves are exercised by tests/sync_device/test_thin_link.py (the thin link, dropped mid-chunk)
and tests/central/test_central_fleet_sim.py (a small fleet through two receivers on PostgreSQL); speed is never
asserted.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.parametrize("args, message", [
    (["fleet", "--receivers", "one,two"], "allscope: --receivers 'one,two': use receiver counts such as 1,2,4"),
    (["fleet", "--devices", "0"], "allscope: --devices must be 1 to 2000 and --receivers counts 1 to 16"),
    (["thinlink", "--frames", "0"], "allscope: --frames must be 1 to 50"),
])
def test_bad_arguments_are_one_line(args, message):
    result = subprocess.run([sys.executable, "-m", "device.cli", "bench", *args], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    if "skipped:" in result.stdout:
        pytest.skip(result.stdout.strip())  # no root / iproute2 / PostgreSQL here: the one-line skip is the answer
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [message]
