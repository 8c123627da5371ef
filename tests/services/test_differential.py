"""The reviewer's differential, the count's target and minimum, "accept the remaining AI labels" and the review
record (device/services/differential.py, device/services/signoff.py), on real SQLite records."""

from __future__ import annotations

import pytest
from review_data import STANDARD_CELLS, add_capture, add_sample

from device.services import differential, reporting, signoff
from device.services.settings import DeviceSettings, SettingsError
from device.store.records import AuditEvent, Capture, Cell, Report, Sample, Setting


def cell(final, edge=False, ai="normal", source=None, by="path"):
    reviewed = final != ai or source is not None
    return {"final_label": final, "ai_label": ai, "edge": edge, "needs_review": False,
            "reviewer_label": final if reviewed else None, "reviewed_by": by if reviewed else None,
            "label_source": (source or "reviewer") if reviewed else None}


# --- the definitions ---------------------------------------------------------------------------------------

def test_counted_white_cells_include_every_class_and_other_but_never_unusable_or_edge():
    cells = ([cell("blast", ai="blast")] * 2 + [cell("lymphocyte")] * 5 + [cell("neutrophil")] * 8 + [cell("other")]
             + [cell("normal")] * 4 + [cell("unusable")] * 3 + [cell("monocyte", edge=True)] * 7)
    diff = differential.differential(cells)
    rows = {row["label"]: row for row in diff["rows"]}
    assert diff["white_cells"] == 20 and diff["classified"] == 16  # 2 + 5 + 8 + 1 + 4; "normal" has no class
    assert rows["lymphocyte"] == {"label": "lymphocyte", "name": "Lymphocytes", "count": 5, "percentage": 25.0}
    assert rows["neutrophil"]["percentage"] == 40.0 and rows["blast"]["percentage"] == 10.0
    assert rows["other"]["count"] == 1 and rows["normal"]["count"] == 4 and rows["monocyte"]["count"] == 0
    assert "unusable" not in rows
    assert sum(row["count"] for row in diff["rows"]) == diff["white_cells"]
    assert reporting.count_cells(cells)["blast_percentage"] == 10.0  # the same denominator everywhere
    empty = differential.differential([cell("unusable"), cell("blast", edge=True, ai="blast")])
    assert empty["white_cells"] == 0 and all(row["percentage"] is None for row in empty["rows"])


def test_progress_and_the_refusal_line_name_the_numbers():
    progress = differential.count_progress(41, 200, 100)
    assert progress["text"] == "41 of 200 white cells counted"
    assert not progress["enough_to_sign"] and not progress["reached_target"]
    assert differential.count_progress(200, 200, 100)["reached_target"]
    assert differential.below_minimum_reason(12, 100) == ("12 white cells counted; at least 100 needed to sign, "
                                                          "or give an override reason.")
    assert differential.below_minimum_reason(1, 100).startswith("1 white cell counted;")
    assert differential.below_minimum_reason(100, 100) is None


def test_the_review_record_tells_labelled_from_accepted_from_not_reviewed():
    cells = ([cell("lymphocyte", by="ana")] * 3 + [cell("normal", source="ai_accepted", by="ana")] * 5
             + [cell("blast", ai="blast", source="reviewer", by="bo")] + [cell("normal")] * 2 + [cell("normal", edge=True)] * 4)
    record = differential.review_record(cells)
    assert (record["cells"], record["labelled"], record["accepted"], record["not_reviewed"]) == (11, 4, 5, 2)
    assert record["by_reviewer"] == [{"reviewer": "ana", "labelled": 3, "accepted": 5},
                                     {"reviewer": "bo", "labelled": 1, "accepted": 0}]
    assert record["statement"] == ("Of 11 cells (edge cells excluded): 3 labelled by ana, 5 accepted as the AI "
                                   "labelled them by ana, 1 labelled by bo, 2 not reviewed (AI label).")


# --- settings -----------------------------------------------------------------------------------------------

def test_target_and_minimum_are_settings_with_bounds_and_the_minimum_never_above_the_target(app):
    with app.app_context():
        assert DeviceSettings().target_white_cells == 200 and DeviceSettings().min_white_cells == 100
        saved = DeviceSettings.save({"target_white_cells": "300", "min_white_cells": "150"}, actor="admin")
        assert (saved.target_white_cells, saved.min_white_cells) == (300, 150)
        with pytest.raises(SettingsError) as caught:
            DeviceSettings.save({"min_white_cells": "400"}, actor="admin")
        assert caught.value.key == "min_white_cells" and "must not be above the target count (300)" in str(caught.value)
        with pytest.raises(SettingsError) as caught:
            DeviceSettings.save({"target_white_cells": "120"}, actor="admin")
        assert caught.value.key == "target_white_cells"
        for key, value in (("target_white_cells", "5"), ("target_white_cells", "1001"), ("min_white_cells", "-1"),
                           ("min_white_cells", "12.5")):
            with pytest.raises(SettingsError):
                DeviceSettings.save({key: value}, actor="admin")
        assert Setting.get_by_id("target_white_cells").value == 300
        assert signoff.count_policy() == signoff.CountPolicy(target=300, minimum=150)


# --- relabelling with a class, accepting the AI's labels, signing ---------------------------------------------

def test_a_class_label_counts_in_the_differential_and_is_the_reviewers_own(app):
    sample_id, cells = add_sample(app)
    with app.app_context():
        signoff.relabel(Cell.get_by_id(cells[1]), "eosinophil", username="path")
        with pytest.raises(signoff.ReviewInputError):
            signoff.relabel(Cell.get_by_id(cells[1]), "platelet", username="path")
        stored = Cell.get_by_id(cells[1])
        assert stored.reviewer_label == "eosinophil" and stored.label_source == "reviewer"
        summary = reporting.sample_summary(Sample.get_by_id(sample_id))
    rows = {row["label"]: row for row in summary["differential"]["rows"]}
    # 4 counted: blast (AI), eosinophil (reviewer), blast and normal (AI, flagged)
    assert summary["evaluable_cells"] == 4 and rows["eosinophil"] == {
        "label": "eosinophil", "name": "Eosinophils", "count": 1, "percentage": 25.0}
    assert summary["review"]["labelled"] == 1 and summary["review"]["not_reviewed"] == 3


def test_accepting_the_remaining_ai_labels_records_who_and_how_and_leaves_flagged_cells_to_the_reviewer(app):
    sample_id, cells = add_sample(app)
    with app.app_context():
        sample = Sample.get_by_id(sample_id)
        version = Capture.get_by_id(Cell.get_by_id(cells[0]).capture_id).version
        assert signoff.accept_ai_labels(sample, username="path", address="10.0.0.9") == 2  # the 2 unflagged cells
        accepted = [Cell.get_by_id(i) for i in cells[:2]]
        assert [(c.reviewer_label, c.label_source, c.reviewed_by) for c in accepted] == [
            ("blast", "ai_accepted", "path"), ("normal", "ai_accepted", "path")]
        assert all(c.reviewed_at is not None for c in accepted)
        assert Cell.get_by_id(cells[2]).reviewer_label is None  # flagged: still needs the reviewer's own label
        assert Cell.get_by_id(cells[4]).reviewer_label is None  # edge: never counted, never accepted
        assert Capture.get_by_id(accepted[0].capture_id).version == version + 1  # re-sent by the sync agent
        [event] = AuditEvent.select().where(AuditEvent.action == "accept_ai")
        assert event.entity == "sample" and event.entity_id == str(sample_id) and event.address == "10.0.0.9"
        assert event.after == {"cells": cells[:2], "labels": {"blast": 1, "normal": 1}, "label_source": "ai_accepted"}
        assert signoff.accept_ai_labels(sample, username="path") == 0  # nothing left: nothing recorded
        assert AuditEvent.select().where(AuditEvent.action == "accept_ai").count() == 1
        # the reviewer's own label later replaces an accepted one
        signoff.relabel(Cell.get_by_id(cells[1]), "normal", username="path")
        assert Cell.get_by_id(cells[1]).label_source == "reviewer"
        record = reporting.sample_summary(sample)["review"]
    assert (record["labelled"], record["accepted"], record["not_reviewed"]) == (1, 1, 2)
    assert "1 accepted as the AI labelled them by path" in record["statement"]


def test_signing_below_the_minimum_is_refused_unless_an_override_reason_is_given(app):
    sample_id, cells = add_sample(app)
    policy = signoff.CountPolicy(target=200, minimum=100)
    with app.app_context():
        sample = Sample.get_by_id(sample_id)
        for cell_id, label in ((cells[2], "blast"), (cells[3], "lymphocyte")):
            signoff.relabel(Cell.get_by_id(cell_id), label, username="path")
        assert signoff.sign_blockers(sample, policy=policy) == [
            "4 white cells counted; at least 100 needed to sign, or give an override reason."]
        with pytest.raises(signoff.ReviewError) as caught:
            signoff.sign(sample, "Blasts present.", username="path", policy=policy, override_reason="   ")
        assert str(caught.value) == ("Cannot sign yet: 4 white cells counted; at least 100 needed to sign, or give "
                                     "an override reason.")
        assert Report.select().count() == 0
        with pytest.raises(signoff.ReviewInputError):
            signoff.sign(sample, "Blasts present.", username="path", policy=policy, override_reason="x" * 501)
        report = signoff.sign(sample, "Blasts present.", username="path", policy=policy,
                              override_reason=" Dry tap: only one frame could be taken. ")
        assert report.override_reason == "Dry tap: only one frame could be taken."
        assert report.ai_summary["count_policy"] == {"target": 200, "minimum": 100}
        [event] = AuditEvent.select().where(AuditEvent.action == "sign")
        assert event.after["override_reason"] == "Dry tap: only one frame could be taken."
        # enough cells counted: no reason needed, none stored
        other_id, other_cells = add_sample(app, identifier="MRN-0043")
        for cell_id in other_cells[2:4]:
            signoff.relabel(Cell.get_by_id(cell_id), "neutrophil", username="path")
        enough = signoff.sign(Sample.get_by_id(other_id), "Normal.", username="path",
                              policy=signoff.CountPolicy(target=10, minimum=4))
        assert enough.override_reason is None


def test_the_signed_differential_and_review_record_are_frozen(app):
    sample_id, cells = add_sample(app)
    with app.app_context():
        sample = Sample.get_by_id(sample_id)
        signoff.relabel(Cell.get_by_id(cells[2]), "monocyte", username="path")
        signoff.relabel(Cell.get_by_id(cells[3]), "normal", username="path")
        signoff.accept_ai_labels(sample, username="path")
        report = signoff.sign(sample, "Monocytosis?", username="path", override_reason="teaching sample")
        before = reporting.report_content(report)
        # later frames change the live counts, never the signed version's
        signoff.start_amendment(report, "more frames", username="path")
        add_capture(app, sample_id, STANDARD_CELLS[:2])
        after = reporting.report_content(Report.get_by_id(report.id))
        live = reporting.sample_summary(sample)
    assert live["evaluable_cells"] == 6 and before["differential"]["white_cells"] == 4
    assert after["differential"] == before["differential"] and after["review"] == before["review"]
    assert after["override_line"] == before["override_line"] == (
        "Signed with 4 white cells counted (minimum 0, target 200). Override reason: teaching sample")
    assert before["review"]["statement"] == ("Of 4 cells (edge cells excluded): 2 labelled by path, 2 accepted as "
                                             "the AI labelled them by path, 0 not reviewed (AI label).")


def test_a_frame_whose_flagged_cells_were_all_reviewed_is_not_shown_as_needing_review(app):
    sample_id, cells = add_sample(app)
    with app.app_context():
        sample = Sample.get_by_id(sample_id)
        draft = signoff.save_draft(sample, "", username="path")
        [frame] = reporting.report_content(draft)["summary"]["captures"]
        assert frame["flag_shown"] == "needs_review" and frame["review_note"] == "2 of 2 flagged cell(s) not reviewed"
        for cell_id in cells[2:4]:
            signoff.relabel(Cell.get_by_id(cell_id), "lymphocyte", username="path")
        report = signoff.sign(sample, "Lymphocytes.", username="path")
        [frame] = reporting.report_content(report)["summary"]["captures"]
    assert frame["flag"] == "needs_review"  # the AI's flag is kept in the record ...
    assert frame["flag_shown"] == "reviewed" and frame["review_note"] == "all 2 flagged cell(s) reviewed"  # ... shown
