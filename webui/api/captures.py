"""JSON API: captures — upload frames, take a camera still, follow and read the analysis.

    POST /api/samples/<id>/captures   multipart "files" (or "file"): 201 {"captures": [ids], "files": [...]}
    POST /api/samples/<id>/capture    camera still: 201 {"capture": {...}}
    POST /api/captures/<id>/reanalyse analyse a failed capture again (audited): 202 {"capture": {...}}
    POST /api/captures/<id>/discard   {"reason": "..."} optional: kept, out of the counts (audited): 200
    GET  /api/samples/<id>/captures   the sample's captures
    GET  /api/captures/<id>           one capture with its cells
    GET  /api/captures/<id>/poll      status, stage and counts only
    GET  /api/camera/poll             camera status line

Paths ending in ``/poll`` do not count as activity for the idle logout, so a
page left open polling does not keep a session alive.
"""

from __future__ import annotations

from flask import abort, jsonify, request

from device.services.discard import discard_capture
from device.services.intake import reanalyse, store_still, store_uploads
from device.store.records import Capture, Cell, Sample
from webui.api.base import bp
from webui.forms.captures import capture_summary, cell_dict, chosen_files, poll_summary, upload_contents
from webui.kit.access import CLINICAL, allow
from webui.kit.errors import http_status
from webui.kit.runtime import actor, appliance


def _sample(sample_id: int) -> Sample:
    return Sample.get_or_none(Sample.id == sample_id) or abort(404)


def _capture(capture_id: int) -> Capture:
    return Capture.get_or_none(Capture.id == capture_id) or abort(404)


@bp.post("/samples/<int:sample_id>/captures")
@allow(*CLINICAL)
def api_capture_upload(sample_id: int):
    sample = _sample(sample_id)
    files = chosen_files(request.files.getlist("files") + request.files.getlist("file"))
    if not files:
        return jsonify(error="no file sent: use multipart form field 'files'"), 400
    device = appliance()
    stored, failed = store_uploads(sample, upload_contents(files), actor=actor(), data=device.data,
                                   worker=device.worker, budget=device.decode_budget,
                                   guard=device.disk_guard)
    report = [{"name": c.original_name, "capture_id": c.id} for c in stored] + \
             [{"name": name, "error": str(error)} for name, error in failed]
    if stored:
        return jsonify(captures=[c.id for c in stored], files=report), 201
    # 415 unreadable beats 409 duplicate: the likelier user mistake
    status = max(http_status(error) or 400 for _name, error in failed)
    return jsonify(error=str(failed[0][1]) if len(failed) == 1 else f"no file was stored ({len(failed)} refused)",
                   files=report), status


@bp.post("/samples/<int:sample_id>/capture")
@allow(*CLINICAL)
def api_capture_still(sample_id: int):
    sample = _sample(sample_id)
    device = appliance()  # no camera (503) and a duplicate frame (409) are answered by the one error handler
    capture = store_still(sample, device.grabber, actor=actor(), data=device.data, worker=device.worker,
                          camera_status=device.camera_status(), guard=device.disk_guard,
                          still_format=device.config.storage.still_format)
    return jsonify(capture=capture_summary(capture, device.worker)), 201


@bp.post("/captures/<int:capture_id>/reanalyse")
@allow(*CLINICAL)
def api_capture_reanalyse(capture_id: int):
    capture = _capture(capture_id)
    device = appliance()  # not failed / report signed (409) are answered by the one error handler
    capture = reanalyse(capture, actor=actor(), worker=device.worker)
    return jsonify(capture=capture_summary(capture, device.worker)), 202


@bp.post("/captures/<int:capture_id>/discard")
@allow(*CLINICAL)
def api_capture_discard(capture_id: int):
    capture = _capture(capture_id)
    body = request.get_json(silent=True)
    reason = body.get("reason") if isinstance(body, dict) and isinstance(body.get("reason"), str) else ""
    capture = discard_capture(capture.id, actor(), reason)  # refused (409) by the one error handler
    return jsonify(capture=capture_summary(capture, appliance().worker))


@bp.get("/samples/<int:sample_id>/captures")
@allow(*CLINICAL)
def api_sample_captures(sample_id: int):
    sample = _sample(sample_id)
    rows = Capture.select().where(Capture.sample == sample.id).order_by(Capture.id)
    worker = appliance().worker
    return jsonify(captures=[capture_summary(c, worker) for c in rows])


@bp.get("/captures/<int:capture_id>")
@allow(*CLINICAL)
def api_capture(capture_id: int):
    capture = _capture(capture_id)
    out = capture_summary(capture, appliance().worker)
    out["timings_ms"] = capture.timings_ms
    out["cells"] = [cell_dict(c) for c in Cell.select().where(Cell.capture == capture.id).order_by(Cell.id)]
    return jsonify(out)


@bp.get("/captures/<int:capture_id>/poll")
@allow(*CLINICAL)
def api_capture_poll(capture_id: int):
    return jsonify(poll_summary(_capture(capture_id), appliance().worker))


@bp.get("/camera/poll")
@allow(*CLINICAL)
def api_camera_poll():
    device = appliance()
    status = device.camera_status()
    return jsonify(status=status, ok=status == "ok", running=device.grabber is not None)
