"""A central installed without its extra, or from a wheel: one line, never a traceback (issue 16, defect 4)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

WITHOUT_DRIVER = ("import sys; sys.modules['psycopg2'] = None; sys.argv[0] = 'allscope'; "
                  "from device.cli.main import main; sys.exit(main(sys.argv[1:]))")


def test_a_postgresql_url_without_the_driver_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_DRIVER, "central", "receivers", "--data-dir",
                           str(tmp_path), "--central-db", "postgresql://allscope@127.0.0.1:1/allscope"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "no database driver for postgresql:// URLs: install allscope[central]" in done.stderr
