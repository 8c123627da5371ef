"""Central UI: the per-clinic CSV export (``sync/central/export.py``), for admins and pathologists; audited."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, render_template, request
from flask_login import current_user

from device.store.records import audit, db_proxy
from sync.central import export
from webui.kit.access import ADMIN, PATHOLOGIST, allow

bp = Blueprint("exports", __name__)


@bp.get("/export")
@allow(ADMIN, PATHOLOGIST)
def export_page():
    return render_template("central/export.html", clinics=export.clinics(), columns=export.COLUMNS)


@bp.get("/export.csv")
@allow(ADMIN, PATHOLOGIST)
def export_csv():
    clinic = request.args.get("clinic", "")[:200]
    if clinic not in export.clinics():
        abort(404)
    rows = export.clinic_rows(clinic)
    with db_proxy.atomic():
        audit("export", "clinic", clinic[:64], username=current_user.username, address=request.remote_addr or "",
              detail=f"CSV of {len(rows)} report{'' if len(rows) == 1 else 's'} of {clinic}")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", clinic).strip("-") or "no-clinic"
    return Response(export.to_csv(rows), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="allscope-{name}.csv"',
                             "Cache-Control": "no-store"})
