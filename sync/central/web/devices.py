"""Central admin UI: the fleet. Devices (state, last seen, online, backlog, software and model, fingerprints) with
health at a glance (silent devices, certificate expiry, ingestion errors per day: ``sync/central/fleet_health.py``),
enrol, revoke,
and registering a device's signing key fingerprint (as ``allscope central register-key``).

Enrolment and revocation are the same functions as ``allscope central enrol``
/ ``revoke`` (``sync/central/web/fleet.py`` adapts them); here they run in one
transaction with the audit event, so a failed audit leaves no half-enrolled
device. The bundle leaves the server only as the HTTP download (a zip,
``Cache-Control: no-store``); its temporary directory is removed afterwards.
"""

from __future__ import annotations

import io

import peewee as pw
from flask import Blueprint, abort, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user

from device.errors import AllscopeError
from device.store.records import audit, db_proxy, row_dict
from sync.central import broker_control
from sync.central.models import Device, IngestError, ReceivedRecord
from sync.central.web import fleet
from sync.central.web.forms import ActionForm, EnrolForm, SigningKeyForm
from sync.central.web.runtime import central
from webui.kit.access import ADMIN, allow

bp = Blueprint("devices", __name__)


def _address() -> str:
    return request.remote_addr or "unknown"


def _record_counts() -> dict[int, int]:
    rows = (ReceivedRecord.select(ReceivedRecord.device, pw.fn.COUNT(ReceivedRecord.id).alias("n"))
            .group_by(ReceivedRecord.device).tuples())
    return {device_id: count for device_id, count in rows}


def _device_or_404(device_id: str) -> Device:
    device = Device.get_or_none(Device.device_id == device_id)
    if device is None:
        abort(404)
    return device


@bp.get("/devices")
@allow(ADMIN)
def device_list():
    from sync.central import fleet_health
    from sync.central.receivers import STALE_AFTER_S, listing

    server = central()
    devices = list(Device.select().order_by(Device.clinic, Device.device_id))
    silent = fleet_health.silent_devices(server.monitoring.silent_days)
    certificates = fleet_health.certificate_expiries(server.pki_dir, server.monitoring.cert_warning_days)
    errors = fleet_health.errors_per_day(14)
    return render_template("central/devices.html", devices=devices, counts=_record_counts(),
                           fingerprint=fleet.signing_key_fingerprint, receivers=listing(),
                           stale_after_s=int(STALE_AFTER_S), silent=silent,
                           silent_ids={device.device_id for device in silent}, certificates=certificates,
                           errors_per_day=errors, error_max=max([count for _, count in errors] + [1]),
                           monitoring=server.monitoring)


@bp.get("/devices/<device_id>")
@allow(ADMIN)
def device_page(device_id: str):
    device = _device_or_404(device_id)
    per_entity = dict(ReceivedRecord.select(ReceivedRecord.entity, pw.fn.COUNT(ReceivedRecord.id))
                      .where(ReceivedRecord.device == device).group_by(ReceivedRecord.entity).tuples())
    errors = list(IngestError.select().where(IngestError.device_id == device.device_id)
                  .order_by(IngestError.at.desc()).limit(20))
    return render_template("central/device.html", device=device, per_entity=per_entity, errors=errors,
                           fingerprint=fleet.signing_key_fingerprint, form=ActionForm(), key_form=SigningKeyForm())


@bp.post("/devices/<device_id>/signing-key")
@allow(ADMIN)
def register_key(device_id: str):
    """Register the key fingerprint the device printed; audited. Only that key is pinned from then on."""
    from sync.central.enrolment import register_signing_key

    _device_or_404(device_id)
    form = SigningKeyForm()
    if not form.validate_on_submit():
        for message in form.fingerprint.errors or ["The form expired: reload the page and try again."]:
            flash(str(message), "error")
        return redirect(url_for("devices.device_page", device_id=device_id))
    try:
        with db_proxy.atomic():
            done = register_signing_key(device_id, form.fingerprint.data)
            audit("register-key", "device", device_id, username=current_user.username, address=_address(),
                  before={"signing_key_fingerprint": done.previous, "pinned": done.pinned},
                  after={"signing_key_fingerprint": done.fingerprint, "unpinned": done.unpinned})
    except AllscopeError as err:
        flash(str(err), "error")
    else:
        flash(done.line() + ".", "info")
    return redirect(url_for("devices.device_page", device_id=device_id))


@bp.route("/devices/enrol", methods=["GET", "POST"])
@allow(ADMIN)
def enrol():
    form = EnrolForm()
    unavailable = fleet.ca_key_missing(central().pki_dir)
    if unavailable:
        return render_template("central/enrol.html", form=form, error="", unavailable=unavailable), \
            (409 if request.method == "POST" else 200)
    if request.method == "GET":  # "Enrol again" on a device page pre-fills its id and clinic
        form.device_id.data = request.args.get("device_id", "")
        form.clinic.data = request.args.get("clinic", "")
        form.broker.data = central().broker
    error = ""
    if form.validate_on_submit():
        device_id = form.device_id.data
        host, port = form.broker.parsed
        try:
            with db_proxy.atomic():
                before = Device.get_or_none(Device.device_id == device_id)
                bundle, enrolment = fleet.enrol_bundle(device_id, clinic=(form.clinic.data or "").strip(),
                                                       broker_host=host, broker_port=port,
                                                       pki_dir=central().pki_dir)
                device = Device.get(Device.device_id == device_id)
                audit("re-enrol" if enrolment.re_enrolled else "enrol", "device", device_id,
                      username=current_user.username, address=_address(),
                      before=_enrol_fields(before) if before is not None else None,
                      after=_enrol_fields(device) | {"broker": f"{host}:{port}"})
        except AllscopeError as err:
            error = str(err)
        else:
            response = send_file(io.BytesIO(bundle), mimetype="application/zip", as_attachment=True,
                                 download_name=f"allscope-bundle-{device_id}.zip")
            response.headers["Cache-Control"] = "no-store"  # it holds the device's TLS private key
            return response
    status = 400 if error or form.errors else 200
    return render_template("central/enrol.html", form=form, error=error), status


def _enrol_fields(device: Device) -> dict:
    return {k: v for k, v in row_dict(device).items() if k in ("clinic", "state", "cert_fingerprint")}


@bp.get("/devices/<device_id>/revoke")
@allow(ADMIN)
def revoke_confirm(device_id: str):
    device = _device_or_404(device_id)
    from sync.central.broker_control import DEFAULT_RESTART

    return render_template("central/revoke.html", device=device, form=ActionForm(),
                           restart_command=central().broker_restart_command, default_restart=DEFAULT_RESTART)


@bp.post("/devices/<device_id>/revoke")
@allow(ADMIN)
def revoke(device_id: str):
    device = _device_or_404(device_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    if device.state == "revoked":
        flash(f"{device_id} was already revoked.", "info")
        return redirect(url_for("devices.device_page", device_id=device_id))
    unavailable = fleet.ca_key_missing(central().pki_dir, "revocation")
    if unavailable:
        flash(unavailable, "error")
        return redirect(url_for("devices.device_page", device_id=device_id))
    try:
        with db_proxy.atomic():
            revocation = fleet.revoke_device(device_id, pki_dir=central().pki_dir)
            after = Device.get(Device.device_id == device_id)
            audit("revoke", "device", device_id, username=current_user.username, address=_address(),
                  before={"state": device.state}, after={"state": after.state,
                                                         "revoked_at": after.revoked_at.isoformat()},
                  detail=revocation.crl_note or f"CRL lists serials {revocation.revoked_serials}")
    except AllscopeError as err:
        flash(str(err), "error")
        return redirect(url_for("devices.device_page", device_id=device_id))
    flash(f"{device_id} is revoked: {broker_control.REFUSED_NOW}.", "info")
    if revocation.crl_note:
        flash(revocation.crl_note, "error")
    elif request.form.get("restart_broker") == "1" and central().broker_restart_command:
        _restart_broker(device_id)
    else:
        flash(broker_control.pending_line(device_id, central().broker_restart_command) + ".", "error")
    return redirect(url_for("devices.device_page", device_id=device_id))


def _restart_broker(device_id: str) -> None:
    try:
        broker_control.restart_broker(central().broker_restart_command)
    except AllscopeError as err:
        flash(f"{err}; {broker_control.pending_line(device_id)}.", "error")
        return
    audit("restart-broker", "broker", "mosquitto", username=current_user.username, address=_address(),
          detail=f"after revoking {device_id}")
    flash(broker_control.done_line(device_id) + ".", "info")
