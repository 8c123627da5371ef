"""Issue 14 (the kiosk has a way back): the PDF and the FHIR export are downloads, never opened in the tab
where the kiosk has no back button and idle logout does not run; the PDF is shown inside the app with Back
and Print."""

from __future__ import annotations

import re

from review_data import add_sample, api_headers

from device.store.records import AuditEvent


def sign_sample(client, auth, app):
    """(sample id, cells, report id) of a report signed by "path" (who stays logged in)."""
    sample_id, cells = add_sample(app)
    auth.login("path")
    headers = api_headers(client)
    for cell_id, value in ((cells[2], "blast"), (cells[3], "normal")):
        assert client.post(f"/api/cells/{cell_id}/label", json={"label": value}, headers=headers).status_code == 200
    response = client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": "Blasts."}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return sample_id, cells, response.get_json()["report"]["id"]


def test_pdf_and_fhir_are_downloads(app, client, auth):
    _, _, report_id = sign_sample(client, auth, app)
    pdf = client.get(f"/reports/{report_id}.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert pdf.headers["Content-Disposition"].startswith("attachment; filename=")
    assert pdf.headers["X-Frame-Options"] == "DENY"
    fhir = client.get(f"/reports/{report_id}/fhir.json")
    assert fhir.status_code == 200 and fhir.mimetype == "application/fhir+json"
    assert fhir.headers["Content-Disposition"].startswith("attachment; filename=")
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert re.search(rf'href="/reports/{report_id}\.pdf" download', page)
    assert re.search(rf'href="/reports/{report_id}/fhir\.json" download', page)


def test_the_pdf_is_shown_inside_the_app_with_back_and_print(app, client, auth):
    _, _, report_id = sign_sample(client, auth, app)
    auth.login("tech")  # technicians read reports too
    page = client.get(f"/reports/{report_id}").get_data(as_text=True)
    assert f'href="/reports/{report_id}/view"' in page
    viewer = client.get(f"/reports/{report_id}/view")
    html = viewer.get_data(as_text=True)
    assert viewer.status_code == 200
    assert f'<iframe class="pdf-frame" id="pdf-frame" src="/reports/{report_id}.pdf?inline=1"' in html
    assert f'href="/reports/{report_id}" id="pdf-back"' in html and 'id="pdf-print"' in html
    assert 'id="logout-form"' in html and "data-idle-minutes=" in html  # the app's layout: idle logout runs
    framed = client.get(f"/reports/{report_id}.pdf?inline=1")
    assert framed.headers["Content-Disposition"].startswith("inline; filename=")
    assert framed.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert framed.headers["X-Frame-Options"] == "SAMEORIGIN"
    with app.app_context():
        assert AuditEvent.select().where(AuditEvent.detail == "pdf shown").count() == 1
