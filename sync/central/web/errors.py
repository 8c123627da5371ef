"""Central admin UI: rejected messages (ingestion errors) with counts per reason, filterable, paginated."""

from __future__ import annotations

import math

import peewee as pw
from flask import Blueprint, render_template, request

from sync.central.models import IngestError
from sync.central.web.runtime import central
from webui.kit.access import ADMIN, allow

bp = Blueprint("ingest", __name__)


def counts_per_reason() -> list[tuple[str, int]]:
    count = pw.fn.COUNT(IngestError.id)
    return list(IngestError.select(IngestError.reason, count).group_by(IngestError.reason)
                .order_by(count.desc(), IngestError.reason).tuples())


@bp.get("/errors")
@allow(ADMIN)
def error_list():
    reason = request.args.get("reason", "").strip()
    device = request.args.get("device", "").strip()
    query = IngestError.select()
    if reason:
        query = query.where(IngestError.reason == reason)
    if device:
        query = query.where(IngestError.device_id == device)
    size = central().page_size
    total = query.count()
    pages = max(1, math.ceil(total / size))
    page = min(max(request.args.get("page", 1, type=int) or 1, 1), pages)
    errors = list(query.order_by(IngestError.at.desc(), IngestError.id.desc()).paginate(page, size))
    filters = {k: v for k, v in (("reason", reason), ("device", device)) if v}
    return render_template("central/errors.html", errors=errors, counts=counts_per_reason(), total=total,
                           page=page, pages=pages, filters=filters)
