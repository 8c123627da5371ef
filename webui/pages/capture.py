"""Capture pages: choose a sample, live view, capture a still, upload frames, watch the analysis.

The camera grabber and the analysis worker are the running appliance's
(``webui.kit.runtime.appliance()``); storing a frame is ``device.services.intake``'s.
"""

from __future__ import annotations

import io
import threading
import time

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from peewee import fn
from wtforms import StringField, SubmitField
from wtforms.validators import Length

from device.services import reporting, signoff
from device.services.differential import count_progress
from device.services.discard import DiscardRefused, discard_capture, discard_refusal
from device.services.frame_files import mimetype
from device.services.intake import IntakeError, reanalyse, store_still, store_uploads
from device.store.records import Capture, Cell, Patient, Report, Sample, audit, db_proxy
from webui.forms.captures import capture_summary, chosen_files, upload_contents
from webui.kit.access import CLINICAL, PATHOLOGIST, allow
from webui.kit.runtime import actor, appliance, count_policy
from webui.pages.frame_pictures import frame_response, stored_file

bp = Blueprint("capture", __name__)

THUMB_WIDTHS = (16, 2048)  # ?w= is clamped to this range


class CaptureForm(FlaskForm):
    submit = SubmitField("Capture")


class DiscardForm(FlaskForm):
    reason = StringField("Why (optional)", validators=[Length(max=200)])


class UploadForm(FlaskForm):
    images = MultipleFileField("Images (PNG, JPEG, TIFF, BMP or WebP)")
    submit = SubmitField("Upload")

    def validate_images(self, field):
        if not chosen_files(field.data):
            from wtforms.validators import ValidationError

            raise ValidationError("Choose at least one image file.")


def _sample_or_404(sample_id: int) -> Sample:
    sample = Sample.select(Sample, Patient).join(Patient).where(Sample.id == sample_id).first()
    if sample is None:
        abort(404)
    return sample


def takes_frames():
    """Samples that take new frames: no report yet, or an open draft (a first one or an amendment); a sample
    whose report is signed is not offered (device/services/signoff.py, frames_locked)."""
    reports = Report.select(Report.id).where(Report.sample == Sample.id)
    return ~fn.EXISTS(reports) | fn.EXISTS(reports.where(Report.status == "draft"))


@bp.get("/capture")
@allow(*CLINICAL)
def capture_page():
    samples = list(Sample.select(Sample, Patient).join(Patient).where(takes_frames())
                   .order_by(Sample.created_at.desc(), Sample.id.desc()).limit(20))
    return render_template("capture/choose.html", samples=samples)


@bp.get("/samples/<int:sample_id>/capture")
@allow(*CLINICAL)
def sample_capture(sample_id: int):
    sample = _sample_or_404(sample_id)
    return _render_sample(sample, CaptureForm(), UploadForm())


def _render_sample(sample: Sample, capture_form: CaptureForm, upload_form: UploadForm, status: int = 200):
    device = appliance()
    captures = []
    for row in Capture.select().where(Capture.sample == sample.id).order_by(Capture.id.desc()):
        summary = capture_summary(row, device.worker)
        summary["discardable"] = discard_refusal(row) is None
        captures.append(summary)
    with db_proxy.atomic():
        audit("view", "sample", sample.id, username=current_user.username, address=request.remote_addr or "",
              detail="capture page")
    links = {"sample": _link("patients.sample_page", sample_id=sample.id),
             "review": _link("review.sample_review", sample_id=sample.id)
             if current_user.has_any_role(PATHOLOGIST) else None,
             "results": _link("results.sample_results", sample_id=sample.id)}
    return render_template("capture/sample.html", sample=sample, patient=sample.patient, captures=captures,
                           capture_form=capture_form, upload_form=upload_form, discard_form=DiscardForm(formdata=None),
                           camera_status=device.camera_status(), has_camera=device.grabber is not None,
                           links=links, locked=signoff.frames_locked(sample), progress=sample_progress(sample),
                           disk=device.disk_guard.state()), status


def sample_progress(sample: Sample) -> dict:
    """"41 of 200 white cells counted" (device/services/differential.py), for capture/_progress.html."""
    rules = count_policy()
    return count_progress(reporting.sample_summary(sample)["evaluable_cells"], rules.target, rules.minimum)


def _link(endpoint: str, **values) -> str | None:
    """A URL to another area's page, or None while that area is not installed."""
    return url_for(endpoint, **values) if endpoint in current_app.view_functions else None


@bp.post("/samples/<int:sample_id>/capture")
@allow(*CLINICAL)
def capture_still(sample_id: int):
    sample = _sample_or_404(sample_id)
    if not CaptureForm().validate_on_submit():
        abort(400)
    device = appliance()
    try:
        capture = store_still(sample, device.grabber, actor=actor(), data=device.data, worker=device.worker,
                              camera_status=device.camera_status(), guard=device.disk_guard,
                              still_format=device.config.storage.still_format)
    except IntakeError as error:
        flash(str(error), "error")
    else:
        flash(f"Captured frame #{capture.id}: analysis queued.", "info")
    return redirect(url_for("capture.sample_capture", sample_id=sample.id))


@bp.post("/samples/<int:sample_id>/upload")
@allow(*CLINICAL)
def upload(sample_id: int):
    sample = _sample_or_404(sample_id)
    form = UploadForm()
    if not form.validate_on_submit():
        return _render_sample(sample, CaptureForm(), form, 400)
    device = appliance()
    try:
        stored, failed = store_uploads(sample, upload_contents(chosen_files(form.images.data)), actor=actor(),
                                       data=device.data, worker=device.worker, budget=device.decode_budget,
                                       guard=device.disk_guard)
    except IntakeError as error:  # the sample's report is signed
        flash(str(error), "error")
        return redirect(url_for("capture.sample_capture", sample_id=sample.id))
    for _name, error in failed:
        flash(str(error), "error")
    if stored:
        flash(f"Stored {len(stored)} image{'s' if len(stored) != 1 else ''}: analysis queued.", "info")
    return redirect(url_for("capture.sample_capture", sample_id=sample.id))


@bp.post("/captures/<int:capture_id>/reanalyse")
@allow(*CLINICAL)
def reanalyse_capture(capture_id: int):
    capture = Capture.get_or_none(Capture.id == capture_id) or abort(404)
    if not CaptureForm().validate_on_submit():
        abort(400)
    try:
        reanalyse(capture, actor=actor(), worker=appliance().worker)
    except IntakeError as error:
        flash(str(error), "error")
    else:
        flash(f"Capture #{capture.id}: analysis queued again.", "info")
    return redirect(url_for("capture.sample_capture", sample_id=capture.sample_id))


@bp.post("/captures/<int:capture_id>/discard")
@allow(*CLINICAL)
def discard(capture_id: int):
    capture = Capture.get_or_none(Capture.id == capture_id) or abort(404)
    form = DiscardForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        discard_capture(capture.id, actor(), form.reason.data or "")
    except DiscardRefused as error:
        flash(str(error), "error")
    else:
        flash(f"Frame #{capture.id} discarded: it is kept in the record but counts nowhere.", "info")
    return redirect(url_for("capture.sample_capture", sample_id=capture.sample_id))


# --- stored images (webui/pages/frame_pictures.py) ------------------------------------------------------------
@bp.get("/captures/<int:capture_id>/image")
@allow(*CLINICAL)
def capture_image(capture_id: int):
    capture = Capture.get_or_none(Capture.id == capture_id) or abort(404)
    return frame_response(appliance().data, capture, request.args.get("w", type=int), THUMB_WIDTHS)


@bp.get("/cells/<int:cell_id>/crop")
@allow(*CLINICAL)
def cell_crop(cell_id: int):
    cell = Cell.get_or_none(Cell.id == cell_id) or abort(404)
    extension = cell.crop_path[cell.crop_path.rfind("."):] if "." in cell.crop_path else ""
    return send_file(io.BytesIO(stored_file(appliance().data, cell.crop_path)), mimetype=mimetype(cell.crop_path),
                     download_name=f"cell-{cell.id}{extension}")


# --- live view ---------------------------------------------------------------------------------------------
@bp.get("/camera/live.jpg")
@allow(*CLINICAL)
def live_jpeg():
    device = appliance()
    found = device.grabber
    item = found.jpeg() if found is not None else None
    if item is None:
        abort(503, description=device.camera_status())
    return Response(item[1], mimetype="image/jpeg")


def _mjpeg_frames(frame_grabber, max_seconds: float):
    """multipart/x-mixed-replace parts; ends on client disconnect (GeneratorExit), stop, or after max_seconds.

    Runs after the request context is gone: it touches the grabber only, never the database or session.
    """
    deadline = time.monotonic() + max_seconds
    seq = sent = 0
    while time.monotonic() < deadline and frame_grabber.running:
        seq = frame_grabber.wait_for_frame(seq, timeout=1.0)
        item = frame_grabber.jpeg()
        if item is None or item[0] == sent:
            continue
        sent = item[0]
        yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(item[1])).encode()
               + b"\r\n\r\n" + item[1] + b"\r\n")


class StreamGate:
    """At most ``limit`` live views at a time: each MJPEG stream holds one of the web server's threads (waitress
    has 8) for as long as it runs, so without a cap a few open tabs leave no thread for pages or log-ins."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            return True

    def leaver(self):
        """A release for one stream, safe to call more than once (the server closes the response once)."""
        done = []

        def leave() -> None:
            with self._lock:
                if not done:
                    done.append(True)
                    self.open -= 1
        return leave


def _stream_gate() -> StreamGate:
    gate = current_app.extensions.get("allscope.live_streams")
    if gate is None:
        gate = current_app.extensions.setdefault("allscope.live_streams",
                                                 StreamGate(appliance().config.ui.max_live_streams))
    return gate


@bp.get("/camera/live.mjpg")
@allow(*CLINICAL)
def live_mjpeg():
    device = appliance()
    found = device.grabber
    if found is None:
        abort(503, description=device.camera_status())
    gate = _stream_gate()
    if not gate.enter():  # the page falls back to still snapshots (live.jpg), which hold no thread
        return Response(f"Live view refused: {gate.limit} live views are open already (the most at a time); "
                        f"close one, or use the snapshots\n", status=503, mimetype="text/plain",
                        headers={"Retry-After": "30"})
    # A forgotten page must not stream for ever: the stream ends after the idle limit; the page reopens it on a touch.
    max_seconds = float(device.settings.idle_minutes) * 60
    response = Response(_mjpeg_frames(found, max_seconds), mimetype="multipart/x-mixed-replace; boundary=frame")
    response.call_on_close(gate.leaver())  # client gone, stream ended or server stopping: the slot is free
    response.headers["X-Accel-Buffering"] = "no"
    return response
