"""The PDF report shows names in every script a clinic meets, and says so when it cannot (issue 13 item 11)."""

from __future__ import annotations

import io
import re

import pytest
from figures import report
from review_data import REPO_ROOT, add_sample

from device.services import pdf_fonts, reporting
from device.services.report_pdf import UNSHOWN_NAME, render_report_pdf
from device.store.records import Report

pypdf = pytest.importorskip("pypdf")

NAME = "王小明 (สมชาย) Иван Ωμέγα محمد"


def report_content(app, name: str, identifier: str = "MRN-0042") -> dict:
    """The content of a draft report for a patient called ``name``."""
    sample_id, _ = add_sample(app, identifier=identifier, name=name)
    with app.app_context():
        report = Report.create(sample=sample_id, version=1, status="draft", created_by="path")
        return reporting.report_content(Report.get_by_id(report.id))


def pdf_text(raw: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(raw)).pages)


def fonts_for(text: str) -> list[pdf_fonts.FontFile]:
    fonts = pdf_fonts.find_fonts()
    _, _, missing = pdf_fonts.choose(fonts, text)
    if missing:
        pytest.skip(f"no installed font has {''.join(sorted(missing))} (make system-deps)")
    return fonts


def test_every_character_of_a_name_in_chinese_thai_cyrillic_greek_and_arabic_is_in_the_pdf(app):
    fonts_for(NAME)
    content = report_content(app, NAME)
    text = pdf_text(render_report_pdf(content, lambda c: None))
    assert not [c for c in NAME if c not in text]
    report("characters of a five-script name found in the PDF's text", len(set(NAME) - {" "}))
    assert "Иван Ωμέγα" in text and "王小明" in text and "สมชาย" in text
    assert UNSHOWN_NAME not in text and "\ufffd" not in text


def test_a_latin_report_loads_the_main_face_only_and_a_cjk_name_adds_one_face():
    fonts = fonts_for("王สمИ")
    assert [f.family for f in pdf_fonts.choose(fonts, "Anna Grünwald – Ōkubo ≥ 5 %")[0]] == [fonts[0].family]
    chosen = [f.family for f in pdf_fonts.choose(fonts, "王小明")[0]]
    assert len(chosen) == 2 and chosen[0] == fonts[0].family


def test_a_name_no_font_can_show_is_marked_with_a_notice_never_printed_partially(app):
    dejavu = [f for f in pdf_fonts.find_fonts() if f.family == "DejaVu"]
    if not dejavu:
        pytest.skip("DejaVu Sans is not installed here")
    content = report_content(app, NAME)
    text = pdf_text(render_report_pdf(content, lambda c: None, unicode_font=dejavu))  # no CJK, no Thai face
    assert "Иван Ωμέγα" in text and "王" not in text
    assert "\ufffd\ufffd\ufffd (\ufffd\ufffd\ufffd\ufffd\ufffd)" in text  # every missing character marked, in place
    assert UNSHOWN_NAME in text  # on the page: in the header and after the Name row
    assert text.count(UNSHOWN_NAME) >= 2
    report("PDF names with unshowable characters marked and noted (never printed partially)", 1)


def test_the_core_font_marks_and_notes_too_and_a_latin_name_has_no_notice(app):
    content = report_content(app, "王小明 Grünwald")
    raw = render_report_pdf(content, lambda c: None, unicode_font=None, compress=False)
    assert b"??? Gr\xfcnwald" in raw and UNSHOWN_NAME.encode() in raw
    latin = report_content(app, "Anna Grünwald", identifier="MRN-0043")
    raw = render_report_pdf(latin, lambda c: None, unicode_font=None, compress=False)
    assert raw.count(UNSHOWN_NAME.encode()) == 1 and b"Dr. ?kubo" in raw  # only the clinician's "Ō" is not Latin-1
    if pdf_fonts.find_fonts():
        assert UNSHOWN_NAME not in pdf_text(render_report_pdf(latin, lambda c: None))


def test_an_rtl_override_in_a_name_stays_inside_the_name_when_text_is_shaped(app):
    fonts_for("محمد")
    if not pdf_fonts.shaping_available():
        pytest.skip("uharfbuzz is not installed")
    content = report_content(app, "محمد Evil\u202eabc")
    text = pdf_text(render_report_pdf(content, lambda c: None))
    assert "born 1961-04-02" in text and "2041-1691" not in text  # the header after the name reads forwards
    assert re.search(r"Patient\s*\S*MRN-0042", text)


def test_makefile_and_install_script_install_the_font_packages():
    makefile = (REPO_ROOT / "Makefile").read_text()
    install = (REPO_ROOT / "firmware_config" / "install.sh").read_text()
    for package in pdf_fonts.FONT_PACKAGES:
        assert package in makefile and package in install, package
