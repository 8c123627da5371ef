"""Review: relabelling, the draft, sign-off rules and amendments, through pages and the JSON API."""

from __future__ import annotations

import re

import pytest
from conftest import csrf_from
from review_data import STANDARD_CELLS, add_capture, add_sample, api_headers, label, review_flagged

from device.config.choices import CELL_LABELS
from device.store.records import AuditEvent, Cell, Report


@pytest.fixture
def sample(app):
    return add_sample(app)


def sign_api(client, sample_id, conclusion, headers):
    return client.post(f"/api/samples/{sample_id}/report/sign", json={"conclusion": conclusion}, headers=headers)


def test_relabel_keeps_the_ai_label_and_is_audited(app, client, auth, sample):
    sample_id, cells = sample
    auth.login("path")
    response = label(client, cells[0], "other", api_headers(client))
    assert response.status_code == 200
    body = response.get_json()
    assert body["cell"]["reviewer_label"] == "other" and body["cell"]["ai_label"] == "blast"
    assert body["counts"]["by_label"]["other"] == 1 and body["counts"]["blast_count"] == 1
    with app.app_context():
        cell = Cell.get_by_id(cells[0])
        assert (cell.ai_label, cell.reviewer_label, cell.reviewed_by) == ("blast", "other", "path")
        assert cell.capture.version == 2  # the sync agent sees the change
        event = AuditEvent.get(AuditEvent.action == "relabel")
        assert event.entity == "cell" and event.entity_id == str(cells[0]) and event.username == "path"
        assert event.before["reviewer_label"] is None and event.after["reviewer_label"] == "other"


def test_relabel_rejects_unknown_labels_and_cells(client, auth, sample):
    _, cells = sample
    auth.login("path")
    headers = api_headers(client)
    response = label(client, cells[0], "leukaemic", headers)
    assert response.status_code == 400 and "Unknown label" in response.get_json()["error"]
    assert label(client, 99999, "blast", headers).status_code == 404


@pytest.mark.parametrize("user", ["tech", "admin"])
def test_only_pathologists_review_relabel_and_sign(app, client, auth, sample, user):
    sample_id, cells = sample
    auth.login(user)
    token = csrf_from(client.get("/login").get_data(as_text=True)) if user == "admin" else auth.csrf("/")
    headers = {"X-CSRFToken": token}
    assert client.get("/review").status_code == 403
    assert client.get(f"/samples/{sample_id}/review").status_code == 403
    assert label(client, cells[0], "normal", headers).status_code == 403
    assert client.post(f"/cells/{cells[0]}/label", data={"csrf_token": token, "label": "normal"}).status_code == 403
    assert sign_api(client, sample_id, "Blasts seen.", headers).status_code == 403
    assert client.post(f"/samples/{sample_id}/report/sign",
                       data={"csrf_token": token, "conclusion": "x"}).status_code == 403
    with app.app_context():
        assert Cell.get_by_id(cells[0]).reviewer_label is None
        assert Report.select().count() == 0


def test_sign_is_refused_while_flagged_cells_are_unreviewed_then_allowed(app, client, auth, sample):
    sample_id, cells = sample
    auth.login("path")
    page = client.get(f"/samples/{sample_id}/review").get_data(as_text=True)
    assert "2 cell(s) flagged for review still need your label" in page
    token = csrf_from(page)
    refused = client.post(f"/samples/{sample_id}/report/sign", data={"csrf_token": token, "conclusion": "Blasts."})
    assert refused.status_code == 409
    assert "2 cell(s) flagged for review still need your label" in refused.get_data(as_text=True)
    headers = api_headers(client)
    api_refused = sign_api(client, sample_id, "Blasts.", headers)
    assert api_refused.status_code == 409 and "flagged for review" in api_refused.get_json()["error"]
    label(client, cells[2], "blast", headers)
    assert "1 cell(s) flagged" in sign_api(client, sample_id, "Blasts.", headers).get_json()["error"]
    label(client, cells[3], "normal", headers)  # the flagged edge cell (cells[5]) does not block: it is not counted
    signed = sign_api(client, sample_id, "Blast population, about 50 %.", headers)
    assert signed.status_code == 200, signed.get_json()
    assert signed.get_json()["report"]["status"] == "signed"
    with app.app_context():
        assert AuditEvent.select().where(AuditEvent.action == "sign").count() == 1


def test_sign_is_refused_without_conclusion_or_while_a_capture_is_analysing(app, client, auth, sample):
    sample_id, cells = sample
    auth.login("path")
    headers = api_headers(client)
    review_flagged(client, cells, headers)
    empty = sign_api(client, sample_id, "   ", headers)
    assert empty.status_code == 409 and "conclusion" in empty.get_json()["error"]
    page = client.post(f"/samples/{sample_id}/report/sign", data={"csrf_token": headers["X-CSRFToken"],
                                                                   "conclusion": ""})
    assert page.status_code == 409 and 'class="field-error">Write a conclusion' in page.get_data(as_text=True)
    add_capture(app, sample_id, [], status="queued")
    pending = sign_api(client, sample_id, "Blasts.", headers)
    assert pending.status_code == 409 and "waiting for analysis" in pending.get_json()["error"]
    with app.app_context():
        assert Report.select().count() == 0  # nothing half-done


def test_signing_snapshots_the_summary(app, client, auth, sample):
    sample_id, cells = sample
    auth.login("path")
    headers = api_headers(client)
    review_flagged(client, cells, headers)
    report_id = sign_api(client, sample_id, "Blasts present.", headers).get_json()["report"]["id"]
    with app.app_context():
        report = Report.get_by_id(report_id)
        snap = report.ai_summary
        assert (report.signed_by, report.version, report.conclusion) == ("path", 1, "Blasts present.")
        assert report.signed_at is not None
        assert snap["blast_count"] == 2 and snap["evaluable_cells"] == 4 and snap["blast_percentage"] == 50.0
        assert snap["edge_cells"] == 2 and snap["unreviewed"] == 0
        assert len(snap["cells"]) == len(STANDARD_CELLS)
        assert len(snap["models"][0]["sha256"]) == 64 and "Decision support only" in snap["disclaimer"]


def test_labels_freeze_after_signing_and_an_amendment_makes_version_2(app, client, auth, sample):
    sample_id, cells = sample
    auth.login("path")
    headers = api_headers(client)
    review_flagged(client, cells, headers)
    v1 = sign_api(client, sample_id, "Blasts present.", headers).get_json()["report"]["id"]
    frozen = label(client, cells[0], "normal", headers)
    assert frozen.status_code == 409 and "Start an amendment" in frozen.get_json()["error"]
    form = client.post(f"/cells/{cells[0]}/label", data={"csrf_token": headers["X-CSRFToken"], "label": "normal"},
                       follow_redirects=True)
    assert "cell labels are frozen" in form.get_data(as_text=True)

    no_reason = client.post(f"/reports/{v1}/amend", data={"csrf_token": headers["X-CSRFToken"], "reason": " "})
    assert no_reason.status_code == 400 and "Give the reason" in no_reason.get_data(as_text=True)
    started = client.post(f"/reports/{v1}/amend", data={"csrf_token": headers["X-CSRFToken"],
                                                         "reason": "Cell 1 is a reactive lymphocyte."})
    assert started.status_code == 302
    assert label(client, cells[0], "normal", headers).status_code == 200  # the amendment draft reopens labels
    again = client.post(f"/reports/{v1}/amend", data={"csrf_token": headers["X-CSRFToken"], "reason": "twice"})
    assert again.status_code == 409  # v1 is no longer the latest version
    v2 = sign_api(client, sample_id, "One blast; one cell reclassified.", headers).get_json()["report"]
    assert v2["version"] == 2 and v2["supersedes"] == v1 and v2["status"] == "signed"
    with app.app_context():
        old = Report.get_by_id(v1)
        assert old.status == "amended" and old.conclusion == "Blasts present."
        assert old.ai_summary["blast_count"] == 2  # the old snapshot is kept as signed
        assert Report.get_by_id(v2["id"]).ai_summary["blast_count"] == 1
        amend = AuditEvent.get(AuditEvent.action == "amend")
        assert amend.before["status"] == "signed" and amend.after["supersedes"] == v1
        assert AuditEvent.get(AuditEvent.action == "supersede").after["status"] == "amended"
    old_page = client.get(f"/reports/{v1}")
    assert old_page.status_code == 200 and "superseded by" in old_page.get_data(as_text=True)


def test_save_draft_creates_one_draft_and_audits(app, client, auth, sample):
    sample_id, _ = sample
    auth.login("path")
    token = auth.csrf(f"/samples/{sample_id}/review")
    for text in ("First thoughts.", "Second thoughts."):
        response = client.post(f"/samples/{sample_id}/report/draft", data={"csrf_token": token, "conclusion": text})
        assert response.status_code == 302
    with app.app_context():
        assert [(r.version, r.status, r.conclusion) for r in Report.select()] == [(1, "draft", "Second thoughts.")]
        actions = [e.action for e in AuditEvent.select().where(AuditEvent.entity == "report")]
        assert actions == ["create", "update"]
    page = client.get(f"/samples/{sample_id}/review").get_data(as_text=True)
    assert "Second thoughts." in page


def test_label_form_without_javascript_redirects_back_to_the_tile(app, client, auth, sample):
    sample_id, cells = sample
    auth.login("path")
    token = auth.csrf(f"/samples/{sample_id}/review")
    response = client.post(f"/cells/{cells[3]}/label", data={"csrf_token": token, "label": "unusable"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/samples/{sample_id}/review?cell={cells[3]}#cell-{cells[3]}")
    with app.app_context():
        assert Cell.get_by_id(cells[3]).reviewer_label == "unusable"


def test_review_page_outlines_cells_and_puts_the_hardest_first(app, client, auth, sample):
    sample_id, cells = sample
    auth.login("path")
    page = client.get(f"/samples/{sample_id}/review").get_data(as_text=True)
    assert 'viewBox="0 0 640 480"' in page
    assert page.count("<rect ") == len(STANDARD_CELLS)
    assert 'x="365.0" y="165.0" width="70.0" height="70.0"' in page  # centre/size -> corner
    order = [int(i) for i in re.findall(r'<article class="tile[^"]*" id="cell-(\d+)"', page)]
    # counted cells by |p - 0.5| (0.06, 0.08, 0.42, 0.42), then the edge cells (0.03, 0.47)
    assert order == [cells[3], cells[2], cells[0], cells[1], cells[5], cells[4]]
    assert "needs-review" in page and page.count('class="btn label-btn') == len(CELL_LABELS) * len(STANDARD_CELLS)
    with app.app_context():
        view = AuditEvent.get(AuditEvent.action == "view")
        assert (view.entity, view.entity_id, view.username) == ("sample", str(sample_id), "path")
    # strict CSP: no inline script, style or handlers
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert "style=" not in page and not re.search(r"\son[a-z]+=", page)


def test_queue_lists_unsigned_samples_oldest_first(app, client, auth):
    first, first_cells = add_sample(app, identifier="MRN-1")
    second, _ = add_sample(app, identifier="MRN-2")
    add_sample(app, identifier="MRN-3", status="queued")  # nothing analysed yet
    auth.login("path")
    page = client.get("/review").get_data(as_text=True)
    assert page.index("MRN-1") < page.index("MRN-2") and "MRN-3" not in page
    assert "2 of 2" in page  # flagged counted cells still to review
    headers = api_headers(client)
    review_flagged(client, first_cells, headers)
    assert sign_api(client, first, "No blasts.", headers).status_code == 200
    assert "MRN-1" not in client.get("/review").get_data(as_text=True)


def test_review_api_lists_cells_counts_and_blockers(client, auth, sample):
    sample_id, cells = sample
    auth.login("path")
    body = client.get(f"/api/samples/{sample_id}/review").get_json()
    assert [c["id"] for c in body["cells"]][0] == cells[3]
    assert body["unreviewed"] == 2 and body["counts"]["counted_cells"] == 4 and body["report"] is None
    assert any("flagged" in reason for reason in body["sign_blockers"]) and body["labels_locked"] is None


def test_real_analysis_rows_flow_into_the_review(app, client, auth):
    """Rows as the analysis worker makes them: the shipped int8 model on a bundled demo frame."""
    from review_data import DEMO_FRAME

    from device.core.analysis import Analyzer
    from device.core.imageio import load_image
    from device.inference.classifier import CellClassifier
    from device.resources import DEFAULT_MODEL

    result = Analyzer(CellClassifier.load(DEFAULT_MODEL)).analyze_frame(load_image(DEMO_FRAME), DEMO_FRAME)
    assert result.cells, "the demo frame holds at least one white cell"
    specs = [dict(x=c.x, y=c.y, w=c.w, h=c.h, ai_label=c.label, p_blast=c.p_blast, needs_review=c.needs_review,
                  edge=c.edge) for c in result.cells]
    sample_id, _ = add_sample(app, cells=specs)
    auth.login("path")
    body = client.get(f"/api/samples/{sample_id}/review").get_json()
    assert body["counts"]["counted_cells"] == result.cell_count
    assert body["counts"]["blast_count"] == result.blast_count
    assert body["unreviewed"] == result.review_count
    assert client.get(f"/samples/{sample_id}/review").status_code == 200


def test_queue_counts_match_the_sample_summary(app):
    """The SQL queue and the per-sample summary follow the same counting rules."""
    import random

    from device.services import reporting
    from device.store.records import Capture, Cell, Patient, Report, Sample

    rng = random.Random(3)
    with app.app_context():
        expected = {}
        for i in range(6):
            sample = Sample.create(patient=Patient.create(identifier=f"Q-{i}", name="Q"))
            for status in ("done", "done", "queued")[: 1 + i % 3]:
                capture = Capture.create(sample=sample, image_path="images/x.png", sha256=f"{i}{status}",
                                         source="upload", status=status)
                for _ in range(rng.randint(0, 6)):
                    Cell.create(capture=capture, x=1, y=1, w=1, h=1, ai_label=rng.choice(["blast", "normal"]),
                                p_blast=rng.random(), needs_review=rng.random() < 0.5, edge=rng.random() < 0.2,
                                reviewer_label=rng.choice([None, None, "blast", "normal", "other"]))
            if i == 4:
                Report.create(sample=sample, status="signed", conclusion="x")  # leaves the queue
            elif i == 5:
                Report.create(sample=sample, status="draft", conclusion="")    # stays
            else:
                pass
            expected[sample.id] = reporting.sample_summary(sample)
        queue = reporting.review_queue()
        assert [row["sample"].id for row in queue] == [sid for sid in expected if sid != list(expected)[4]]
        for row in queue:
            summary = expected[row["sample"].id]
            for key, value in row["summary"].items():
                assert value == summary[key], (row["sample"].id, key)
