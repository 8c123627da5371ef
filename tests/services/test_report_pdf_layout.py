"""The PDF report's size and layout (issue 14): small with real frames, a picture of each frame with its outlines,
and no heading left alone at the foot of a page."""

from __future__ import annotations

import io

import pytest
from figures import report
from gallery_data import add_real_frames_sample
from review_data import add_sample

from device.services import reporting
from device.services.pdf_pictures import crop_jpeg, frame_jpeg
from device.services.report_pdf import render_report_pdf
from device.store.records import Capture, Report

pypdf = pytest.importorskip("pypdf")

HEADINGS = ("Patient", "Sample", "Findings", "Conclusion", "Decision support")
HEADING_STARTS = ("Frames (", "Cells (")


def draft_pdf(app, sample_id: int, conclusion: str = "Blasts present.") -> bytes:
    """The PDF of a draft report of ``sample_id``, with its crops and frames read as the web route reads them."""
    with app.app_context():
        report_row = Report.create(sample=sample_id, version=1, status="draft", created_by="path",
                                   conclusion=conclusion)
        content = reporting.report_content(Report.get_by_id(report_row.id))
        data = app.appliance.data
        pdf = render_report_pdf(content, lambda cell: data.read_bytes(cell["crop_path"]),
                                frame_file=lambda cap: data.read_bytes(Capture.get_by_id(cap["id"]).image_path))
        report_row.delete_instance()
    return pdf


def image_count(raw: bytes) -> int:
    return sum(len(page.images) for page in pypdf.PdfReader(io.BytesIO(raw)).pages)


def test_one_frame_sample_is_under_1_mb_with_its_frame_picture(app, shared_data):
    sample_id, cells = add_real_frames_sample(app, shared_data, frames=1, cells=30)
    raw = draft_pdf(app, sample_id)
    report("PDF bytes, one ALL-IDB1 frame, 30 cells", len(raw))
    assert len(raw) <= 1_000_000, f"{len(raw)} bytes"
    assert image_count(raw) == len(cells) + 1  # every crop and the frame itself
    assert "Frames (1)" in "".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(raw)).pages)


def test_200_cells_over_7_frames_are_under_3_mb(app, shared_data):
    sample_id, cells = add_real_frames_sample(app, shared_data, frames=7, cells=200)
    assert len(cells) == 200
    raw = draft_pdf(app, sample_id)
    report("PDF bytes, 7 ALL-IDB1 frames, 200 cells", len(raw))
    assert len(raw) <= 3_000_000, f"{len(raw)} bytes"
    assert image_count(raw) == 207


FOOTER_TOP_PT = 24 / 25.4 * 72  # the page's bottom margin: below it only the footer (disclaimer, page number)


def lowest_body_line(page) -> str:
    """The text of the lowest line above the footer of a page (positions read from the page's text operators)."""
    lines: dict[float, list[str]] = {}

    def visit(text, cm, tm, font, size):
        y = round(tm[5] * cm[3] + cm[5], 1)
        if text.strip() and y > FOOTER_TOP_PT:
            lines.setdefault(y, []).append(text.strip())

    page.extract_text(visitor_text=visit)
    return " ".join(lines[min(lines)]) if lines else ""


def test_no_page_ends_with_a_heading(app):
    """Conclusions of 1 to 60 lines move every later heading through every position on the page."""
    sample_id, _ = add_sample(app)
    checked = 0
    for lines in range(1, 61, 3):
        raw = draft_pdf(app, sample_id, conclusion="\n".join(f"Line {n} of the conclusion." for n in range(lines)))
        pages = pypdf.PdfReader(io.BytesIO(raw)).pages
        for number, page in enumerate(pages[:-1], start=1):
            last = lowest_body_line(page)
            assert last not in HEADINGS and not last.startswith(HEADING_STARTS), \
                f"a {lines}-line conclusion leaves the heading {last!r} at the foot of page {number}"
            checked += 1
    assert checked >= 10  # the conclusions did push the report over more than one page


def test_pictures_are_small_jpegs_at_the_printed_size(app, shared_data):
    frame = shared_data / "all-idb1" / "Im053_1.jpg"
    if not frame.is_file():
        pytest.skip(f"{frame} missing")
    cell = {"x": 900, "y": 700, "w": 216, "h": 216, "final_label": "blast", "needs_review": True,
            "reviewer_label": None, "edge": False}
    picture = frame_jpeg(frame, [cell, {**cell, "x": 5, "edge": True, "final_label": "normal"}])
    from PIL import Image

    with Image.open(io.BytesIO(picture)) as image:
        assert image.format == "JPEG" and image.width == 640
        # the flagged cell's outline is drawn in orange on the scaled frame
        red, green, blue = image.getpixel((round((900 - 108) * 640 / 2592), round(700 * 640 / 2592)))
        assert red > 180 and 60 < green < 160 and blue < 80
    assert len(picture) < 150_000
    crop = crop_jpeg(frame)
    with Image.open(io.BytesIO(crop)) as image:
        assert image.format == "JPEG" and max(image.size) == 128
    assert crop_jpeg(b"not an image") is None and frame_jpeg(None, []) is None
