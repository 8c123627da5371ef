"""`allscope camera list` and `allscope camera snapshot --out FILE`: what is attached, and one still from it.

    allscope camera list [--json]
        replay folders (the bundled demo frames, the configured one), V4L2 devices /dev/video*
        with their driver names, picamera2 cameras when picamera2 is importable (a Pi)
    allscope camera snapshot --out FILE [--backend replay|opencv|picamera2] [--source S]
        one full-resolution still (PNG, JPEG, TIFF, BMP or WebP by FILE's suffix), written atomically,
        and its metadata (backend, exposure/gain where known, size, time, sha256) in FILE.json

Backend and source default to the configuration file's ``[camera]`` section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
from pathlib import Path

from device.camera.backends import make_camera
from device.config.choices import CAMERA_KINDS
from device.errors import AllscopeError
from device.resources import DEMO_FRAMES

V4L2_DEV = Path("/dev")
V4L2_SYSFS = Path("/sys/class/video4linux")
ENCODINGS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".tif": ".tiff", ".tiff": ".tiff", ".bmp": ".bmp",
             ".webp": ".webp"}


def _camera_config(config_path):
    from device.config.schema import load_config

    return load_config(config_path).camera


def _image_count(folder: Path) -> int:
    from device.core.imageio import iter_image_files

    return sum(1 for path in iter_image_files(folder) if path.is_file())


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def v4l2_devices(dev: Path = V4L2_DEV, sysfs: Path = V4L2_SYSFS) -> list[dict]:
    """/dev/video* with the driver's name from sysfs; nodes with index > 0 are a camera's metadata nodes."""
    def number(path: Path) -> int:
        digits = re.sub(r"\D", "", path.name)
        return int(digits) if digits else -1

    found = []
    for node in sorted(dev.glob("video*"), key=number):
        info = sysfs / node.name
        entry = {"backend": "opencv", "source": str(node), "name": _read(info / "name") or "(no name)"}
        index = _read(info / "index")
        if index.isdigit() and int(index) > 0:
            entry["note"] = "metadata node of a camera: use the node with index 0"
        found.append(entry)
    return found


def picamera2_cameras() -> tuple[list[dict], str | None]:
    """picamera2's cameras, or ([], why not) when it is not importable (anything but a Raspberry Pi)."""
    try:
        from picamera2 import Picamera2
    except ImportError:
        return [], "picamera2 not installed (Raspberry Pi only: sudo apt install python3-picamera2)"
    try:
        infos = Picamera2.global_camera_info()
    except Exception as error:  # noqa: BLE001 - libcamera raises assorted types
        return [], f"picamera2: cannot list cameras ({' '.join(str(error).split())[:200]})"
    return [{"backend": "picamera2", "source": str(info.get("Num", i)),
             "name": " ".join(str(info[k]) for k in ("Model", "Id") if info.get(k)) or "camera"}
            for i, info in enumerate(infos)], None


def list_cameras(configured=None, dev: Path = V4L2_DEV, sysfs: Path = V4L2_SYSFS) -> tuple[list[dict], list[str]]:
    """(cameras, notes): every camera this device can use, and lines on what could not be looked at."""
    folders = [DEMO_FRAMES]
    if configured is not None and configured.backend == "replay" and configured.source:
        folders.insert(0, Path(configured.source).expanduser())
    cameras, notes = [], []
    for folder in dict.fromkeys(folders):
        if folder.is_dir():
            cameras.append({"backend": "replay", "source": str(folder), "name": f"{_image_count(folder)} image files"})
        else:
            notes.append(f"replay folder {folder} (configured) does not exist")
    devices = v4l2_devices(dev, sysfs)
    cameras += devices
    if not devices:
        notes.append(f"no V4L2 devices ({dev}/video*): no USB camera attached, or no access (group video)")
    pi_cameras, why_not = picamera2_cameras()
    cameras += pi_cameras
    if why_not:
        notes.append(why_not)
    if configured is not None:
        chosen = (configured.backend, _source_key(configured.backend, configured.source))
        for camera in cameras:
            camera["configured"] = (camera["backend"], camera["source"]) == chosen
    return cameras, notes


def _source_key(kind: str, source: str) -> str:
    """A configured source as ``list_cameras`` names it (the kind's default when unset, "1" -> /dev/video1)."""
    source = str(source or "").strip()
    if kind == "replay":
        return str(Path(source).expanduser()) if source else str(DEMO_FRAMES)
    if kind == "opencv":
        source = source or "0"
        return f"/dev/video{source}" if source.isdigit() else source
    return source or "0"


def cmd_list(args: argparse.Namespace) -> int:
    cameras, notes = list_cameras(_camera_config(args.config))
    if args.json:
        print(json.dumps({"cameras": cameras, "notes": notes}, indent=1))
        return 0
    for camera in cameras:
        mark = "*" if camera.get("configured") else " "
        note = f"  ({camera['note']})" if camera.get("note") else ""
        print(f"{mark} {camera['backend']:<10} {camera['source']:<40} {camera['name']}{note}")
    for note in notes:
        print(f"  # {note}")
    return 0


def take_snapshot(kind: str, source: str | None, out: Path) -> dict:
    """Capture one still and write it and its metadata sidecar atomically; returns the metadata."""
    import cv2

    from device.store.atomic import write_atomic

    out = Path(out)
    encoding = ENCODINGS.get(out.suffix.lower())
    if encoding is None:
        raise AllscopeError(f"{out}: unknown image type {out.suffix or '(none)'} (use {', '.join(ENCODINGS)})")
    camera = make_camera(kind, source)
    camera.open()
    try:
        rgb, meta = camera.capture_still()
    finally:
        camera.close()
    ok, encoded = cv2.imencode(encoding, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise AllscopeError(f"{out}: could not encode the still as {encoding}")
    data = encoded.tobytes()
    height, width = rgb.shape[:2]
    meta = {**meta, "camera": kind, "source": str(source or ""), "width": width, "height": height,
            "captured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            "image": out.name, "sha256": hashlib.sha256(data).hexdigest()}
    write_atomic(out, data)
    write_atomic(sidecar_path(out), (json.dumps(meta, indent=2, default=str) + "\n").encode())
    return meta


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def cmd_snapshot(args: argparse.Namespace) -> int:
    configured = _camera_config(args.config)
    kind = args.backend or configured.backend
    source = args.source if args.source is not None else (configured.source or None)
    meta = take_snapshot(kind, source, args.out)
    print(f"{args.out}: {meta['width']}x{meta['height']} from {kind} {source or '(default source)'}; "
          f"metadata in {sidecar_path(Path(args.out))}")
    return 0


def register(group: str, commands) -> None:
    """Add `allscope camera list` and `allscope camera snapshot`."""
    config_help = "configuration file (default: $ALLSCOPE_CONFIG or /etc/allscope/allscope.toml)"
    listing = commands.add_parser("list", help="replay folders, /dev/video* devices and picamera2 cameras "
                                  "(* marks the configured one)")
    listing.add_argument("--json", action="store_true", help="print a JSON object")
    listing.add_argument("--config", default=None, help=config_help)
    listing.set_defaults(func=cmd_list)

    snapshot = commands.add_parser("snapshot", help="one full-resolution still and a FILE.json metadata sidecar")
    snapshot.add_argument("--out", type=Path, required=True, help="image file; its suffix picks the format")
    snapshot.add_argument("--backend", choices=CAMERA_KINDS, default=None, help="default: camera.backend")
    snapshot.add_argument("--source", default=None, help="folder, device path or index, GStreamer pipeline "
                          "(default: camera.source)")
    snapshot.add_argument("--config", default=None, help=config_help)
    snapshot.set_defaults(func=cmd_snapshot)
