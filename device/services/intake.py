"""Taking frames in: camera stills and uploads become stored frame files, Capture rows and queued analyses.

Shared by the pages (``webui/pages/capture.py``) and the JSON API
(``webui/api/captures.py``), which pass the actor, the data directory, the
worker and the camera explicitly, so both follow the same rules: every upload is
decoded by ``device.core.imageio`` (a hostile or unreadable file is one line and
nothing is stored for it), the file is kept as received when it is a compressed
image (its SHA-256 is the record; a camera still is encoded losslessly, see
``device/services/frame_files.py``), by content hash (file first, via a temp name
and rename), then the row and its
audit event are written in one transaction, and only then is the analysis
queued. The same image twice for one sample is refused (same decoded pixels,
whatever the file; against a frame stored before v7, by the hash of the PNG it was
kept as): it would be counted twice in the report. Before anything is
decoded or stored the disk-space guard (``device/services/disk_guard.py``) refuses
a capture that would eat into the database's reserve (507). A sample whose report is signed takes no frame (409, with
the reason) until an amendment is open: it would be analysed but never reviewed.
A capture whose analysis failed is re-analysed on request (:func:`reanalyse`,
audited), not uploaded again.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Protocol

import numpy as np

from device.errors import AllscopeError, Conflict, ImageLoadError, Unavailable, UnsupportedMedia
from device.services.actor import Actor
from device.services.decode_budget import Busy, DecodeBudget
from device.services.disk_guard import DiskFull, DiskGuard
from device.services.frame_files import (DEFAULT_STILL, SUFFIXES, UPLOAD_REENCODE, encode_still, kept_format,
                                         pixels_sha256)
from device.services.job_store import encode_png
from device.store.datadir import DataDir
from device.store.records import Capture, Sample, audit, db_proxy


class IntakeError(AllscopeError):
    """A frame that was not stored, with the one line to show for it."""


class DuplicateFrame(Conflict, IntakeError):
    """The same image is already a capture of this sample: it would be counted twice."""


class SampleSigned(Conflict, IntakeError):
    """The sample's report is signed and no amendment is open: a new frame would never be reviewed."""


def check_open(sample: Sample) -> None:
    """SampleSigned (with the reason) when the sample takes no new frame now (device/services/signoff.py)."""
    from device.services.signoff import frames_locked

    reason = frames_locked(sample)
    if reason:
        raise SampleSigned(reason)


class UnreadableImage(UnsupportedMedia, IntakeError):
    """The file is not an image this device reads (corrupt, hostile, too large, another format)."""


class DecodeBusy(Unavailable, IntakeError):
    """Every decoding slot stayed taken (the memory budget, ``device.services.decode_budget``): try again."""


class NoRoom(DiskFull, IntakeError):
    """The data disk is at its reserve (device/services/disk_guard.py): 507, one line."""


def _check_room(guard: DiskGuard | None, data: DataDir) -> None:
    try:
        (guard or DiskGuard(data)).check_room()
    except DiskFull as error:
        raise NoRoom(str(error)) from None


class NoCamera(Unavailable, IntakeError):
    """No camera delivers a still now."""


class Queue(Protocol):
    """Where a stored capture's analysis is queued (device.services.jobs.AnalysisWorker)."""

    def enqueue(self, capture_id: int) -> None: ...


class StillSource(Protocol):
    """What takes a full-resolution still (device.camera.grabber.FrameGrabber)."""

    def capture_still(self) -> tuple[np.ndarray, dict]: ...


def store_frame(sample: Sample, rgb: np.ndarray, source: str, *, actor: Actor, data: DataDir,
                worker: Queue | None, original_name: str = "", camera_meta: dict | None = None,
                original: bytes | None = None, guard: DiskGuard | None = None,
                still_format: str = DEFAULT_STILL) -> Capture:
    """Store one decoded frame for a sample and queue its analysis on ``worker`` (if one runs);
    DuplicateFrame for an image the sample already has, SampleSigned when its report is signed, DiskFull when
    the disk has no room. ``original``: the file ``rgb`` was decoded from, kept as it is when compressed."""
    check_open(sample)
    _check_room(guard, data)
    pixels = pixels_sha256(rgb)
    fmt = kept_format(original) if original is not None else None
    if fmt is not None:
        blob = original
    else:
        blob, fmt = encode_still(rgb, still_format)
    digest = hashlib.sha256(blob).hexdigest()
    digests = [digest]
    if Capture.select().where((Capture.sample == sample.id) & (Capture.pixels_sha256 == "")).exists():
        # the sample has frames stored before v7, named by the hash of a PNG of their pixels: compare with that
        digests.append(hashlib.sha256(encode_png(rgb)).hexdigest())
    earlier = Capture.get_or_none((Capture.sample == sample.id) &
                                  ((Capture.pixels_sha256 == pixels) | Capture.sha256.in_(digests)))
    if earlier is not None:
        if earlier.status == "discarded":  # kept for the record (device/services/discard.py), counted nowhere
            raise DuplicateFrame(f"{original_name or 'This frame'}: the same image is capture #{earlier.id} of this "
                                 "sample, which was discarded: capture a new field")
        if source == "camera":
            raise DuplicateFrame(f"This frame is identical to capture #{earlier.id} of this sample: move to a new field")
        if earlier.status == "failed":
            raise DuplicateFrame(f"{original_name}: the same image is already capture #{earlier.id} of this sample, "
                                 "whose analysis failed: re-analyse that capture instead")
        raise DuplicateFrame(f"{original_name}: the same image is already capture #{earlier.id} of this sample")
    relative, digest = data.store_image(blob, SUFFIXES[fmt])
    height, width = rgb.shape[:2]
    with db_proxy.atomic():
        check_open(sample)  # again inside the transaction: a signature may have landed meanwhile
        capture = Capture.create(sample=sample.id, image_path=relative, sha256=digest, source=source,
                                 original_name=original_name, width=width, height=height,
                                 camera_meta=camera_meta, status="queued", created_by=actor.username,
                                 original_format=fmt, pixels_sha256=pixels, stored_bytes=len(blob))
        audit("create", "capture", capture.id, **actor.audit_fields(),
              after={"sample": sample.id, "source": source, "sha256": digest, "original_name": original_name,
                     "width": width, "height": height, "format": fmt, "bytes": len(blob)})
    if worker is not None:
        worker.enqueue(capture.id)
    return capture


_DEFAULT_BUDGET: DecodeBudget | None = None


def default_budget() -> DecodeBudget:
    """The budget of the built-in configuration, for callers without an appliance (scripts, tests)."""
    global _DEFAULT_BUDGET
    if _DEFAULT_BUDGET is None:
        _DEFAULT_BUDGET = DecodeBudget.from_config()
    return _DEFAULT_BUDGET


def store_upload(sample: Sample, name: str, content: bytes, *, actor: Actor, data: DataDir,
                 worker: Queue | None, budget: DecodeBudget | None = None, guard: DiskGuard | None = None
                 ) -> Capture:
    """Decode and store one uploaded file (``name``: as shown to users, sanitised by the caller) under the
    memory budget (pixel limit, decodes at a time); UnreadableImage with a one-line reason when it is not a
    usable image, DecodeBusy when no decoding slot came free in time."""
    budget = budget or default_budget()
    _check_room(guard, data)  # before decoding: nothing is spent on a frame that cannot be kept
    try:
        with budget.slot(name):
            try:
                rgb = budget.load(content, name)
            except ImageLoadError as error:
                raise UnreadableImage(str(error)) from None
            return store_frame(sample, rgb, "upload", actor=actor, data=data, worker=worker, original_name=name,
                               original=content, guard=guard, still_format=UPLOAD_REENCODE)
    except Busy as error:
        raise DecodeBusy(str(error)) from None


def store_uploads(sample: Sample, uploads: Iterable[tuple[str, bytes]], *, actor: Actor, data: DataDir,
                  worker: Queue | None, budget: DecodeBudget | None = None, guard: DiskGuard | None = None
                  ) -> tuple[list[Capture], list[tuple[str, IntakeError]]]:
    """Each (name, content) on its own: (stored captures, [(name, error)]) — one bad file stops no other;
    SampleSigned before any file is read when the sample takes no new frame, DiskFull when the disk has no room."""
    check_open(sample)
    guard = guard or DiskGuard(data)
    _check_room(guard, data)
    stored, failed = [], []
    for name, content in uploads:
        try:
            stored.append(store_upload(sample, name, content, actor=actor, data=data, worker=worker,
                                       budget=budget, guard=guard))
        except IntakeError as error:
            failed.append((name, error))
    return stored, failed


def store_still(sample: Sample, camera: StillSource | None, *, actor: Actor, data: DataDir, worker: Queue | None,
                camera_status: str = "no camera is running on this device", guard: DiskGuard | None = None,
                still_format: str = DEFAULT_STILL) -> Capture:
    """A full-resolution still from the running camera (the grabber); NoCamera when there is none
    (``camera_status`` says why) or it fails."""
    from device.camera.backends import CameraError

    check_open(sample)
    _check_room(guard, data)
    if camera is None:
        raise NoCamera(f"Cannot capture: {camera_status}")
    try:
        rgb, meta = camera.capture_still()
    except CameraError as error:
        raise NoCamera(f"Cannot capture: {error}") from None
    return store_frame(sample, rgb, "camera", actor=actor, data=data, worker=worker, camera_meta=meta, guard=guard,
                       still_format=still_format)


class NotFailed(Conflict, IntakeError):
    """Only a capture whose analysis failed is analysed again (a done one keeps its reviewed cells)."""


def reanalyse(capture: Capture, *, actor: Actor, worker: Queue | None) -> Capture:
    """Queue a failed capture's analysis again (e.g. it failed while the model file was corrupt), audited.

    NotFailed unless it failed; SampleSigned while the sample's report is signed (the figures would change under
    the signature: start an amendment first). Without a running worker it stays queued for the next start.
    """
    with db_proxy.atomic():
        fresh = Capture.get_by_id(capture.id)
        if fresh.status != "failed":
            raise NotFailed(f"Capture #{fresh.id} is {fresh.status}: only a capture whose analysis failed "
                            "can be re-analysed")
        check_open(fresh.sample)
        Capture.update(status="queued", error="", version=Capture.version + 1).where(Capture.id == fresh.id).execute()
        audit("reanalyse", "capture", fresh.id, **actor.audit_fields(),
              before={"status": "failed", "error": fresh.error}, after={"status": "queued"})
    if worker is not None:
        worker.enqueue(fresh.id)
    return Capture.get_by_id(fresh.id)


def stage_of(capture: Capture, worker) -> str:
    """The capture's progress line: its final state, or the running worker's stage, or why nothing runs."""
    if capture.status == "done":
        return "done"
    if capture.status == "failed":
        return f"failed: {capture.error}" if capture.error else "failed"
    if worker is None:
        return f"{capture.status} (analysis is not running on this device)"
    return worker.stage(capture.id) or capture.status
