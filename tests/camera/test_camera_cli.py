"""`allscope camera list|snapshot` with the replay backend and the OpenCV backend reading a real video file.

The "fake /dev/video" is an MJPG .avi made from the demo frames with cv2.VideoWriter: OpenCV reads a
video file through the same VideoCapture path as a USB camera. The V4L2 listing reads a device
directory and a sysfs tree given to it, here temporary ones shaped like /dev and /sys/class/video4linux.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT

from device.camera.backends import DEMO_FRAMES
from device.cli.camera import list_cameras, sidecar_path, take_snapshot, v4l2_devices
from device.core.imageio import load_image
from device.errors import AllscopeError

FRAME_SIZE = (640, 480)


def allscope(*args, cwd=REPO_ROOT):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLSCOPE_")}
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def video_camera(tmp_path_factory) -> Path:
    """A short MJPG video of the demo frames: a camera for OpenCV's VideoCapture."""
    path = tmp_path_factory.mktemp("camera") / "microscope.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, FRAME_SIZE)
    assert writer.isOpened()
    for frame in sorted(DEMO_FRAMES.glob("*.jpg")):
        writer.write(cv2.resize(cv2.imread(str(frame)), FRAME_SIZE))
    writer.release()
    return path


def frames_of(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def test_replay_snapshot_is_the_full_frame_with_a_sidecar(tmp_path):
    out = tmp_path / "stills" / "first.png"
    run = allscope("camera", "snapshot", "--out", str(out), "--backend", "replay", "--source", str(DEMO_FRAMES))
    assert run.returncode == 0, run.stderr
    first = sorted(DEMO_FRAMES.glob("*.jpg"))[0]
    assert np.array_equal(load_image(out), load_image(first))  # PNG: lossless, nothing scaled
    meta = json.loads(sidecar_path(out).read_text())
    height, width = load_image(first).shape[:2]
    assert (meta["backend"], meta["file"], meta["width"], meta["height"]) == ("replay", first.name, width, height)
    assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and meta["image"] == "first.png"
    assert meta["captured_at"].endswith("+00:00")
    assert sorted(p.name for p in out.parent.iterdir()) == ["first.png", "first.png.json"]  # no temp files left
    assert f"{width}x{height} from replay" in run.stdout


def test_opencv_snapshot_from_a_video_file_camera(tmp_path, video_camera):
    out = tmp_path / "usb.jpg"
    meta = take_snapshot("opencv", str(video_camera), out)
    frames = frames_of(video_camera)
    assert len(frames) == 4
    # capture_still drops the frame a driver may have buffered (grab), then reads: the second frame
    still = load_image(out)
    assert still.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    assert np.abs(still.astype(int) - frames[1].astype(int)).mean() < 3  # JPEG re-encoding only
    assert np.abs(still.astype(int) - frames[0].astype(int)).mean() > 10  # and not the first frame
    assert meta["backend"] == "opencv" and meta["source"] == str(video_camera)
    assert json.loads(sidecar_path(out).read_text())["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_snapshot_source_and_backend_come_from_the_config_file(tmp_path, video_camera):
    config = tmp_path / "allscope.toml"
    config.write_text(f'[camera]\nbackend = "opencv"\nsource = "{video_camera}"\n')
    out = tmp_path / "configured.png"
    run = allscope("camera", "snapshot", "--out", str(out), "--config", str(config))
    assert run.returncode == 0, run.stderr
    assert json.loads(sidecar_path(out).read_text())["backend"] == "opencv"


def test_failed_snapshots_are_one_line_and_write_nothing(tmp_path):
    missing = allscope("camera", "snapshot", "--out", str(tmp_path / "a.png"), "--backend", "opencv",
                       "--source", str(tmp_path / "no-camera.avi"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "cannot open" in missing.stderr
    suffix = allscope("camera", "snapshot", "--out", str(tmp_path / "a.txt"), "--backend", "replay")
    assert suffix.returncode == 2 and "unknown image type .txt" in suffix.stderr
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(AllscopeError, match="does not exist"):
        take_snapshot("replay", str(tmp_path / "nothing-here"), tmp_path / "b.png")
    assert list(tmp_path.iterdir()) == []


def test_v4l2_listing_names_devices_and_flags_metadata_nodes(tmp_path):
    dev, sysfs = tmp_path / "dev", tmp_path / "sys"
    dev.mkdir()
    for number, name, index in ((10, "Other Cam", 0), (0, "HD USB Microscope", 0), (1, "HD USB Microscope", 1)):
        (dev / f"video{number}").touch()
        (sysfs / f"video{number}").mkdir(parents=True)
        (sysfs / f"video{number}" / "name").write_text(name + "\n")
        (sysfs / f"video{number}" / "index").write_text(f"{index}\n")
    (dev / "video2").touch()  # a node sysfs does not describe
    found = v4l2_devices(dev, sysfs)
    assert [d["source"] for d in found] == [str(dev / f"video{n}") for n in (0, 1, 2, 10)]
    assert [d["name"] for d in found] == ["HD USB Microscope", "HD USB Microscope", "(no name)", "Other Cam"]
    assert ["note" in d for d in found] == [False, True, False, False]

    configured = SimpleNamespace(backend="opencv", source=str(dev / "video0"))
    cameras, notes = list_cameras(configured, dev=dev, sysfs=sysfs)
    assert [c["source"] for c in cameras if c["configured"]] == [str(dev / "video0")]
    assert cameras[0] == {"backend": "replay", "source": str(DEMO_FRAMES), "name": "4 image files",
                          "configured": False}
    assert not any("V4L2" in note for note in notes)


def test_camera_list_cli_shows_the_configured_replay_folder(tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((20, 30, 3), 40 * i, np.uint8))
    config = tmp_path / "allscope.toml"
    config.write_text(f'[camera]\nbackend = "replay"\nsource = "{folder}"\n')
    listed = json.loads(allscope("camera", "list", "--json", "--config", str(config)).stdout)
    replay = [c for c in listed["cameras"] if c["backend"] == "replay"]
    assert replay[0] == {"backend": "replay", "source": str(folder), "name": "3 image files", "configured": True}
    assert replay[1]["source"] == str(DEMO_FRAMES) and not replay[1]["configured"]
    text = allscope("camera", "list", "--config", str(config)).stdout.splitlines()
    assert text[0].startswith("* replay") and str(folder) in text[0]
