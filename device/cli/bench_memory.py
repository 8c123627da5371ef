"""Memory and storage writes of the device service, for ``allscope bench all``.

One run: a fresh data directory with one technician, ``allscope serve`` as a
subprocess (the real service: waitress, analysis worker, camera), then

* idle: VmHWM / VmRSS from /proc/<pid>/status once the login page answers;
* model loaded: after one blank frame went through the analysis worker (the
  worker loads the model on its first job; a blank frame has no cell, so this
  is the model and the pipeline, not a frame's work);
* after K frames: K distinct real frames uploaded through the API one by one,
  each waited for until its analysis is done;
* 4 concurrent uploads: the peak (VmHWM, reset first through /proc/<pid>/clear_refs
  where the kernel allows it) while four frames are posted at the same moment to
  another sample, each from its own connection, and analysed. An upload refused
  because every decoding slot stayed taken (503, one line) is counted, not retried.

Writes: ``write_bytes`` counts pages when they are dirtied, ``cancelled_write_bytes``
those of files deleted or truncated before write-back (waitress and werkzeug
each spool an upload over 512 KB to a temporary file and delete it); the net
of the two is what reached the storage. The database's growth is measured with its WAL checkpointed
(copied back into the file by the bench, a copy not in the service's writes): the WAL is reused, not grown.

Around those K frames the service's ``write_bytes`` from /proc/<pid>/io (what
the process sent to the block layer: the frame files, crops and thumbnails written with fsync,
SQLite pages and its WAL; not sockets, not page-cache reads) and the growth
of the data directory on disk (images, crops, thumbnails, database files) are measured,
both per frame. The data directory is made under the results directory so it
sits on the same storage as the figures (on a Pi: the SD card); a tmpfs
there would show zero writes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

USERNAME = "bench-memory"
POLL_TIMEOUT_S = 180.0


def proc_io(pid: int) -> dict[str, int]:
    """The counters of /proc/<pid>/io (all threads of the process)."""
    text = Path(f"/proc/{pid}/io").read_text()
    return {name: int(value) for name, value in (line.split(": ") for line in text.splitlines())}


def disk_usage(root: Path) -> dict[str, int]:
    """Bytes on disk (allocated blocks) of the images, the crops, the thumbnails and the database files."""
    out = {"images": 0, "crops": 0, "thumbs": 0, "database": 0}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        top = path.relative_to(root).parts[0]
        kind = top if top in ("images", "crops", "thumbs") else "database" if path.name.startswith("allscope.db") else None
        if kind:
            out[kind] += path.stat().st_blocks * 512
    return out


class _Api:
    """A logged-in technician talking JSON (and multipart) to the served app, CSRF header included."""

    def __init__(self, client, csrf: str):
        self.client, self.csrf = client, csrf

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        request = urllib.request.Request(self.client.base + path, data=body, method=method,
                                         headers={"X-CSRFToken": self.csrf, "Content-Type": content_type})
        try:
            with self.client.opener.open(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            detail = error.read()
            error.close()
            raise RuntimeError(f"{method} {path}: HTTP {error.code} {detail[:200]!r}") from None

    def upload(self, sample_id: int, name: str, data: bytes) -> int:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        _status, answer = self.call("POST", f"/api/samples/{sample_id}/captures", body,
                                    f"multipart/form-data; boundary={boundary}")
        return answer["captures"][0]

    def wait_done(self, capture_id: int) -> dict:
        deadline = time.monotonic() + POLL_TIMEOUT_S
        while time.monotonic() < deadline:
            _status, answer = self.call("GET", f"/api/captures/{capture_id}/poll")
            if answer.get("status") in ("done", "failed"):
                if answer["status"] == "failed":
                    raise RuntimeError(f"analysis of capture {capture_id} failed: {answer}")
                return answer
            time.sleep(0.1)
        raise RuntimeError(f"capture {capture_id} not analysed within {POLL_TIMEOUT_S:.0f} s")


def _login(base: str, password: str) -> _Api:
    import re

    from webui.bench.web import Client

    client = Client(base)
    client.login(USERNAME, password)
    _status, page = client.get("/patients")
    match = re.search(rb'<meta name="csrf-token" content="([^"]+)"', page)
    if not match:
        raise RuntimeError("no CSRF token on the patient list page")
    return _Api(client, match.group(1).decode())


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0: ``5`` into clear_refs); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def concurrent_uploads(api: _Api, sample_id: int, frames: list[tuple[str, bytes]]) -> dict:
    """Post every frame at the same moment (one thread and connection each), wait for the analyses."""
    import threading

    start = threading.Barrier(len(frames))
    outcome: list = [None] * len(frames)

    def one(i: int, name: str, data: bytes) -> None:
        start.wait()
        try:  # urllib opens a connection per request; the cookie jar is shared (and locked)
            outcome[i] = api.upload(sample_id, name, data)
        except RuntimeError as error:
            outcome[i] = error

    threads = [threading.Thread(target=one, args=(i, name, data)) for i, (name, data) in enumerate(frames)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [o for o in outcome if isinstance(o, RuntimeError)]
    unexpected = [str(o) for o in refused if "HTTP 503" not in str(o)]
    if unexpected:
        raise RuntimeError(f"concurrent upload failed: {unexpected[0]}")
    for capture_id in outcome:
        if not isinstance(capture_id, RuntimeError):
            api.wait_done(capture_id)
    return {"uploads": len(frames), "refused_busy": len(refused)}


def _blank_png() -> bytes:
    from device.services.jobs import encode_png

    return encode_png(np.full((480, 640, 3), 200, np.uint8))


@contextlib.contextmanager
def _served(work_root: Path, model: Path | None, config_text: str = ""):
    """A fresh data directory with one technician and ``allscope serve`` on it (``config_text``: its TOML
    configuration), logged in, with a patient and a sample: (data_dir, process, api, patient_id, sample_id,
    the service's memory once started and idle, before the login)."""
    from webui.bench.web import free_port, memory_mb, start_server, stop_server

    data_dir = Path(tempfile.mkdtemp(prefix="allscope-bench-memory-", dir=work_root))
    password = secrets.token_urlsafe(18)
    process = None
    try:
        subprocess.run([sys.executable, "-m", "device.cli", "users", "create", USERNAME, "--role", "technician",
                        "--data-dir", str(data_dir)], input=password + "\n", text=True, check=True,
                       capture_output=True, timeout=60)
        config = None
        if config_text:
            config = data_dir / "allscope.toml"
            config.write_text(config_text)
        port = free_port()
        process = start_server(data_dir, port, model, data_dir / "server.log", config=config)
        time.sleep(1.0)  # let start-up threads (camera, worker) settle
        idle = memory_mb(process.pid)
        api = _login(f"http://127.0.0.1:{port}", password)
        _s, patient = api.call("POST", "/api/patients", json.dumps({"identifier": "BENCH-MEM-1",
                                                                     "name": "Bench Memory"}).encode())
        _s, sample = api.call("POST", f"/api/patients/{patient['patient']['id']}/samples", b"{}")
        yield data_dir, process, api, patient["patient"]["id"], sample["sample"]["id"], idle
    finally:
        if process is not None:
            stop_server(process)
        shutil.rmtree(data_dir, ignore_errors=True)


def checkpoint(data_dir: Path) -> None:
    """Copy the WAL back into the database file and empty it, so that the database's growth is its rows, not
    the WAL's reused pages (the service's connections are idle between frames; SQLite allows this from another
    process)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(data_dir / "allscope.db", timeout=30)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def _stored(before: dict, after: dict, count: int, cells: int, prefix: str = "") -> dict:
    stored = {kind: (after[kind] - before[kind]) / count for kind in after}
    return {
        f"{prefix}stored_kb_per_frame": sum(stored.values()) / 1024,
        f"{prefix}stored_image_kb_per_frame": stored["images"] / 1024,
        f"{prefix}stored_crops_kb_per_frame": stored["crops"] / 1024,
        f"{prefix}stored_database_kb_per_frame": stored["database"] / 1024,
        f"{prefix}stored_thumbs_kb_per_frame": stored["thumbs"] / 1024,
        f"{prefix}stored_crop_kb_per_cell": stored["crops"] / 1024 / max(cells, 1) * count,
        # what a frame keeps once the retention policy pruned its full frame (device/services/retention.py)
        f"{prefix}stored_after_prune_kb_per_frame": (stored["crops"] + stored["thumbs"] + stored["database"]) / 1024,
    }


def run_memory_once(work_root: Path, frames: list[tuple[str, bytes]], model: Path | None,
                    concurrent: list[tuple[str, bytes]] | None = None) -> dict:
    """One fresh service: memory at three points and storage writes per analysed frame, then the peak
    while the ``concurrent`` frames (4 in ``bench all``) arrive at once."""
    from webui.bench.web import memory_mb

    with _served(work_root, model) as (data_dir, process, api, patient_id, sample_id, idle):
        api.wait_done(api.upload(sample_id, "blank.png", _blank_png()))
        model_loaded = memory_mb(process.pid)
        checkpoint(data_dir)
        io_before, disk_before = proc_io(process.pid), disk_usage(data_dir)
        cells = 0
        for name, data in frames:
            cells += int(api.wait_done(api.upload(sample_id, name, data)).get("cell_count") or 0)
        io_after = proc_io(process.pid)
        checkpoint(data_dir)
        disk_after = disk_usage(data_dir)
        after = memory_mb(process.pid)
        burst: dict = {}
        if concurrent:
            _s, other = api.call("POST", f"/api/patients/{patient_id}/samples", b"{}")
            reset = reset_peak(process.pid)
            burst = concurrent_uploads(api, other["sample"]["id"], concurrent)
            burst["peak_rss_mb"] = memory_mb(process.pid).get("peak_rss_mb")
            burst["peak_reset"] = reset
    count = len(frames)
    written = io_after["write_bytes"] - io_before["write_bytes"]
    cancelled = io_after["cancelled_write_bytes"] - io_before["cancelled_write_bytes"]  # dirtied, then deleted
    return {
        **({f"concurrent{len(concurrent)}_peak_rss_mb": burst.get("peak_rss_mb"),
            f"concurrent{len(concurrent)}_refused_busy": burst.get("refused_busy")} if concurrent else {}),
        "idle_rss_mb": idle.get("rss_mb"), "idle_peak_rss_mb": idle.get("peak_rss_mb"),
        "model_loaded_rss_mb": model_loaded.get("rss_mb"), "model_loaded_peak_rss_mb": model_loaded.get("peak_rss_mb"),
        "after_frames_rss_mb": after.get("rss_mb"), "after_frames_peak_rss_mb": after.get("peak_rss_mb"),
        "frames": count, "cells_per_frame": cells / count,
        "net_written_kb_per_frame": (written - cancelled) / count / 1024,
        "written_kb_per_frame": written / count / 1024,
        "cancelled_kb_per_frame": cancelled / count / 1024,
        **_stored(disk_before, disk_after, count, cells),
    }


def run_camera_storage_once(work_root: Path, frames: list[tuple[str, bytes]], model: Path | None) -> dict:
    """One fresh service whose replay camera shows ``frames``: a still of each taken through the API (stored in
    the default ``storage.still_format``, as a camera's raw pixels are) and analysed; what each keeps on disk,
    with the keys of :func:`run_memory_once` prefixed ``camera_``."""
    folder = Path(tempfile.mkdtemp(prefix="allscope-bench-replay-", dir=work_root))
    try:
        for name, data in frames:
            (folder / name).write_bytes(data)
        config = f'[camera]\nbackend = "replay"\nsource = {json.dumps(str(folder))}\n'
        with _served(work_root, model, config) as (data_dir, _process, api, _patient_id, sample_id, _idle):
            checkpoint(data_dir)
            before, cells = disk_usage(data_dir), 0
            for _ in frames:  # the replay camera never gives the same field twice in a row
                _s, answer = api.call("POST", f"/api/samples/{sample_id}/capture", b"{}")
                cells += int(api.wait_done(answer["capture"]["id"]).get("cell_count") or 0)
            checkpoint(data_dir)
            after = disk_usage(data_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"camera_cells_per_frame": cells / len(frames), **_stored(before, after, len(frames), cells, "camera_")}
