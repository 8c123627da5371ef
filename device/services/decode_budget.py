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
* a slot is held from the decode until the frame is stored (the RGB array lives that long), and the number
  of slots is what the memory budget (``ui.decode_memory_mb``, by default a quarter of the machine's memory)
  holds at ``BYTES_PER_PIXEL`` a pixel of the largest image, at least one and at most
  ``ui.max_parallel_decodes``;
* an upload that finds no free slot within ``ui.decode_wait_seconds`` is refused with one line (503).
"""

from __future__ import annotations

import os
import threading
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


@dataclass
class DecodeBudget:
    max_pixels: int
    slots: int
    wait_seconds: float = 15.0
    _semaphore: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.slots < 1:
            raise ValueError(f"max_pixels and slots must be positive, got {self.max_pixels} and {self.slots}")
        self._semaphore = threading.BoundedSemaphore(self.slots)

    @classmethod
    def from_config(cls, config: AllscopeConfig | None = None, memory_bytes: int | None = None) -> "DecodeBudget":
        config = config if config is not None else AllscopeConfig()
        ui = config.ui
        max_pixels = (int(ui.max_upload_megapixels * 1_000_000) if ui.max_upload_megapixels
                      else default_max_pixels(config.camera.width, config.camera.height))
        budget = ui.decode_memory_mb * MB if ui.decode_memory_mb else (memory_bytes or machine_memory_bytes()) // 4
        fits = budget // (max(max_pixels, 1) * BYTES_PER_PIXEL)
        return cls(max(1, max_pixels), max(1, min(ui.max_parallel_decodes, fits)), ui.decode_wait_seconds)

    @contextmanager
    def slot(self, name: str) -> Iterator[None]:
        """Hold one decoding slot (from decode to stored frame); Busy after ``wait_seconds`` without one."""
        if not self._semaphore.acquire(timeout=self.wait_seconds):
            raise Busy(f"{name}: the device is busy reading other images ({self.slots} at a time): "
                       f"try again in a moment")
        try:
            yield
        finally:
            self._semaphore.release()

    def load(self, content: bytes, name: str) -> np.ndarray:
        """Decode under the pixel limit (ImageLoadError "image too large" before any pixel is decoded)."""
        return load_image_bytes(content, name, max_pixels=self.max_pixels)

    def describe(self) -> str:
        return (f"uploads up to {self.max_pixels / 1e6:.1f} MP, {self.slots} decoded at a time "
                f"(~{self.max_pixels * BYTES_PER_PIXEL * self.slots // MB} MB at most)")
