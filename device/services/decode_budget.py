"""How big an uploaded image may be, and how many are decoded at once: a memory budget derived from the machine.

    budget = DecodeBudget.from_config(config)          # the appliance makes one, the web UI passes it to intake
    with budget.slot(name):                            # Busy (503, one line) after decode_wait_seconds
        rgb = budget.load(content, name)               # ImageLoadError "image too large: ..." from the header

A PNG of 15 KB may declare 7,000 x 8,000 pixels: decoding it takes ~14 bytes a pixel (Pillow's image, the
bytes it hands numpy, our RGB copy), about 0.8 GB, and eight such uploads at once kill a 2-4 GB Pi. So:

* the pixel limit comes from the largest camera this device supports (the Pi HQ camera, 4056 x 3040, or the
  configured still size if larger) with 50 % margin, ~18 MP, not the 60 MP that whole-slide files may
  need on a workstation (``ui.max_upload_megapixels`` overrides it); it is checked from the header,
  before a pixel is decoded;
* decodes share a memory budget (``ui.decode_memory_mb``; by default a quarter of the machine's memory,
  at most ``AUTO_BUDGET_MB``): ``load`` reads the image's size from its header and waits until its
  ``BYTES_PER_PIXEL`` a pixel fit beside the decodes in progress (an image alone always fits), and holds
  them until the slot is left (the RGB array lives until the frame is stored). With the default, 2592 x 1944
  frames (~81 MB each) are decoded one at a time while small ones go two at a time: four uploads arriving
  at once keep the device service under ~300 MB (``allscope bench all``, memory section);
* at most ``ui.max_parallel_decodes`` uploads hold a slot at once, whatever their size;
* an upload that finds no free slot, or no room in the budget, within ``ui.decode_wait_seconds`` is
  refused with one line (503: try again); nothing is stored for it.
"""

from __future__ import annotations

import io
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from device.config.schema import AllscopeConfig
from device.core.imageio import load_image_bytes
from device.errors import Unavailable

# The largest sensor this device supports: the Raspberry Pi HQ camera (IMX477), 4056 x 3040 (the Camera
# Module 3 is 4608 x 2592, a little smaller). ALL-IDB1 frames are 2592 x 1944.
LARGEST_CAMERA = (4056, 3040)
MARGIN = 1.5
# Peak resident bytes per pixel while one image is decoded and stored (measured: 13.6-13.9; rounded up).
BYTES_PER_PIXEL = 16
MB = 1024 * 1024
# The budget when ui.decode_memory_mb is 0: a quarter of the machine's memory, at most this (one 2592 x 1944
# frame, not two; a larger image is decoded alone).
AUTO_BUDGET_MB = 128


class Busy(Unavailable):
    """No decoding slot came free in time: the upload is refused, nothing stored; try again."""


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when that is lower (a container, a systemd MemoryMax=)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 2 * 1024 * MB  # the smallest Pi we run on
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def default_max_pixels(camera_width: int = 0, camera_height: int = 0) -> int:
    """The largest supported camera's frame (or the configured still size, if larger) plus MARGIN."""
    largest = max(LARGEST_CAMERA[0] * LARGEST_CAMERA[1], camera_width * camera_height)
    return int(largest * MARGIN)


def image_pixels(content: bytes) -> int | None:
    """Width x height from the image's header (nothing decoded); None when Pillow cannot tell."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(content)) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - the decoder proper reports an unreadable file, with its reason
        return None
    return int(width) * int(height)


@dataclass
class DecodeBudget:
    max_pixels: int
    slots: int
    wait_seconds: float = 15.0
    memory_bytes: int = 0  # decoded bytes at once (0: slots x the largest image, i.e. only ``slots`` counts)
    _cond: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.slots < 1:
            raise ValueError(f"max_pixels and slots must be positive, got {self.max_pixels} and {self.slots}")
        if self.memory_bytes <= 0:
            self.memory_bytes = self.slots * self.max_pixels * BYTES_PER_PIXEL
        self._cond = threading.Condition()
        self._inside = 0  # uploads holding a slot
        self._reserved = 0  # bytes reserved by the decodes in progress
        self._held = threading.local()  # this thread's slot: its deadline and reserved bytes

    @classmethod
    def from_config(cls, config: AllscopeConfig | None = None, memory_bytes: int | None = None) -> "DecodeBudget":
        config = config if config is not None else AllscopeConfig()
        ui = config.ui
        max_pixels = (int(ui.max_upload_megapixels * 1_000_000) if ui.max_upload_megapixels
                      else default_max_pixels(config.camera.width, config.camera.height))
        budget = ui.decode_memory_mb * MB if ui.decode_memory_mb else \
            min((memory_bytes or machine_memory_bytes()) // 4, AUTO_BUDGET_MB * MB)
        return cls(max(1, max_pixels), ui.max_parallel_decodes, ui.decode_wait_seconds, max(1, budget))

    def _busy(self, name: str) -> Busy:
        return Busy(f"{name}: the device is busy reading other images ({self.slots} at a time): "
                    f"try again in a moment")

    @contextmanager
    def slot(self, name: str) -> Iterator[None]:
        """Hold one decoding slot (from decode to stored frame); Busy after ``wait_seconds`` without one."""
        deadline = time.monotonic() + self.wait_seconds
        with self._cond:
            if not self._cond.wait_for(lambda: self._inside < self.slots, timeout=self.wait_seconds):
                raise self._busy(name)
            self._inside += 1
        outer = getattr(self._held, "slot", None)
        self._held.slot = [deadline, 0]
        try:
            yield
        finally:
            _deadline, reserved = self._held.slot
            self._held.slot = outer
            with self._cond:
                self._inside -= 1
                self._reserved -= reserved
                self._cond.notify_all()

    def _reserve(self, name: str, pixels: int) -> None:
        """Inside a slot: wait until ``pixels`` fit the memory budget beside the decodes in progress."""
        held = getattr(self._held, "slot", None)
        if held is None:
            return  # a caller without a slot (scripts): nothing to share
        need = pixels * BYTES_PER_PIXEL
        with self._cond:
            fits = self._cond.wait_for(lambda: self._reserved == 0 or self._reserved + need <= self.memory_bytes,
                                       timeout=max(0.0, held[0] - time.monotonic()))
            if not fits:
                raise Busy(f"{name}: the device is busy reading other images (up to {self.memory_bytes // MB} MB "
                           f"of them at a time): try again in a moment")
            self._reserved += need
            held[1] += need

    def load(self, content: bytes, name: str) -> np.ndarray:
        """Decode under the pixel limit (ImageLoadError "image too large" before any pixel is decoded), once the
        image's decoded size fits the memory budget (Busy when it does not in time)."""
        pixels = image_pixels(content)
        if pixels is not None and pixels <= self.max_pixels:
            self._reserve(name, pixels)
        return load_image_bytes(content, name, max_pixels=self.max_pixels)

    def describe(self) -> str:
        return (f"uploads up to {self.max_pixels / 1e6:.1f} MP, at most {self.slots} decoded at a time "
                f"within {self.memory_bytes // MB} MB")
