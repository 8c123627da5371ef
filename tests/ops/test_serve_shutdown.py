"""allscope serve under systemd's stop: SIGTERM with the analysis worker busy stops cleanly, and a restart resumes every capture whole."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from unit_files import one, read_unit, seconds

REPO = Path(__file__).resolve().parents[2]


# --- graceful stop of allscope serve ----------------------------------------------------------------------

def _tiled_frames(count: int) -> list[bytes]:
    """Distinct whole frames (the demo frames tiled 3x3 in different orders): many cells, a busy worker."""
    import cv2
    import numpy as np

    from device.core.imageio import load_image

    demo = [load_image(p) for p in sorted((REPO / "device/demo").glob("*.jpg"))]
    frames = []
    for k in range(count):
        tiles = [demo[(k + i) % len(demo)] for i in range(9)]
        rows = [np.hstack(tiles[r * 3:r * 3 + 3]) for r in range(3)]
        ok, png = cv2.imencode(".png", cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
        assert ok
        frames.append(png.tobytes())
    return frames


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                     f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _captures(database: Path) -> list[dict]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as con:
        con.row_factory = sqlite3.Row
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = [dict(r) for r in con.execute("SELECT id, status, cell_count FROM capture ORDER BY id")]
        for row in rows:
            row["cells"] = [dict(c) for c in con.execute("SELECT crop_path, edge FROM cell WHERE capture_id = ?",
                                                         (row["id"],))]
    return rows


def _assert_whole(rows: list[dict], data_dir: Path) -> None:
    for row in rows:
        if row["status"] == "done":
            counted = [c for c in row["cells"] if not c["edge"]]  # cells cut by the frame edge are not counted
            assert len(counted) == row["cell_count"] > 0, row
            assert all((data_dir / c["crop_path"]).is_file() for c in row["cells"]), row
        else:  # abandoned or never started: nothing of a result
            assert row["status"] in ("queued", "analysing") and not row["cells"], row


def test_serve_stops_cleanly_on_sigterm_with_the_worker_busy_and_resumes_on_restart(tmp_path):
    from conftest import TEST_PASSWORD

    from webui.bench.web import Client, free_port, start_server, stop_server

    stop_budget = seconds(one(read_unit(REPO / "systemd/allscope-device.service"), "Service", "TimeoutStopSec"))
    data_dir = tmp_path / "var"
    subprocess.run([sys.executable, "-m", "device.cli", "users", "create", "tech", "--role", "technician",
                    "--data-dir", str(data_dir)], input=TEST_PASSWORD + "\n", text=True, check=True,
                   capture_output=True, cwd=REPO)
    from device.store.records import Patient, Sample, open_database

    database = open_database(data_dir / "allscope.db")  # a patient and a sample to capture into
    try:
        sample_id = Sample.create(patient=Patient.create(identifier="H-1", name="Ada Example"), created_by="tech").id
    finally:
        database.close()
    config = tmp_path / "allscope.toml"
    config.write_text('[camera]\nbackend = "replay"\nsource = ""\n')
    os.environ["ALLSCOPE_CONFIG"] = str(config)  # start_server passes os.environ on
    try:
        port = free_port()
        server = start_server(data_dir, port, None, tmp_path / "serve1.log")
        try:
            client = Client(f"http://127.0.0.1:{port}")
            client.login("tech", TEST_PASSWORD)
            _status, page = client.get(f"/samples/{sample_id}/capture")
            token = re.search(rb'name="csrf-token" content="([^"]+)"', page).group(1).decode()
            body, content_type = _multipart([(f"frame{k}.png", png) for k, png in enumerate(_tiled_frames(4))])
            request = urllib.request.Request(f"{client.base}/api/samples/{sample_id}/captures", data=body,
                                             headers={"Content-Type": content_type, "X-CSRFToken": token,
                                                      "Accept": "application/json"})
            with client.opener.open(request, timeout=60) as response:
                assert response.status == 201
            busy = None
            deadline = time.monotonic() + 60
            while busy is None and time.monotonic() < deadline:
                for capture_id in range(1, 5):
                    _status, poll = client.get(f"/api/captures/{capture_id}/poll")
                    if re.search(rb'"stage": ?"(analysing|classifying|saving)', poll):
                        busy = capture_id
                        break
            assert busy is not None, "the worker never showed a capture in progress"
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=stop_budget)
            stopped_in = time.monotonic() - started
        finally:
            stop_server(server)
        assert code == 0, (tmp_path / "serve1.log").read_text()[-3000:]
        assert stopped_in < stop_budget
        rows = _captures(data_dir / "allscope.db")
        assert len(rows) == 4
        _assert_whole(rows, data_dir)
        states = {r["id"]: r["status"] for r in rows}
        print(f"SIGTERM while capture {busy} was in progress: stopped in {stopped_in:.1f} s, states {states}")
        assert any(s != "done" for s in states.values()), "the worker was not busy when the stop came"

        server = start_server(data_dir, port, None, tmp_path / "serve2.log")  # the rest is re-run
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if all(r["status"] == "done" for r in _captures(data_dir / "allscope.db")):
                    break
                time.sleep(0.5)
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=stop_budget) == 0
        finally:
            stop_server(server)
        rows = _captures(data_dir / "allscope.db")
        assert [r["status"] for r in rows] == ["done"] * 4, (tmp_path / "serve2.log").read_text()[-3000:]
        _assert_whole(rows, data_dir)
    finally:
        os.environ.pop("ALLSCOPE_CONFIG", None)
