"""The ``[storage]`` keys of storage growth (issue 15): the camera still's format, the retention policy and
the disk-space guard. Mixed into ``StorageSection`` (device/config/schema.py)::

    [storage]
    still_format = "jpeg90"          # camera stills: jpeg90 | jpeg95 | webp-lossless | png (uploads: as received)
    prune_after_ack = false          # prune a full frame once the central acknowledged its capture and the
                                     # sample's report is signed
    prune_offline_days = 0           # prune full frames older than N days even without an ack (0: never)
    prune_interval_hours = 6         # how often the device service runs the pruning
    reserve_mb = 512                 # capture refused (507) below this much free space on the data disk
    warn_days = 14                   # status and capture pages warn below this many days of space left
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from device.config.choices import StillFormat


class StorageGrowth(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    still_format: StillFormat = Field(
        "jpeg90", description="How a camera still is kept: jpeg90 (JPEG quality 90, 4:4:4, ~44 dB PSNR, ~1 MB a "
                              "2592x1944 frame: within the 1.5 MB per frame budget, measured), jpeg95 (~47 dB, "
                              "1.6 MB), webp-lossless (smallest lossless, 4.7 MB) or png. Uploads are kept as "
                              "received.")
    prune_after_ack: bool = Field(False, description="Delete a full frame once the central has acknowledged its "
                                                     "capture and the sample's report is signed (crops, thumbnail "
                                                     "and hashes are kept).")
    prune_offline_days: int = Field(0, ge=0, le=3650, description="Delete full frames older than this many days "
                                                                  "even without an acknowledgement (0: never).")
    prune_interval_hours: float = Field(6.0, ge=0.1, le=24 * 31, description="Hours between two pruning runs of "
                                                                             "the device service.")
    reserve_mb: int = Field(512, ge=1, le=10_000_000, description="Free space (MB) kept for the database: a capture "
                                                                  "is refused below it.")
    warn_days: int = Field(14, ge=1, le=3650, description="Warn on the status and capture pages when the data disk "
                                                          "fills in fewer days than this at the current rate.")
