"""A report as a PDF (fpdf2): patient header and disclaimer on every page, page numbers, a small picture of each
frame with its cells' outlines and the cell crops in a grid (``report_pdf_figures``; the pictures are scaled to
their printed size and JPEG-encoded by ``pdf_pictures``, so that 200 cells stay under 3 MB). A heading never
stands alone at the foot of a page: it goes to the next page with what follows it.

Takes the plain dict of ``device.services.reporting.report_content`` so it shows the
same as the page. Text is set in DejaVu Sans with fallback faces for the scripts
it lacks (Noto, WenQuanYi: see ``pdf_fonts`` for the faces, the packages and the
search list), shaped with HarfBuzz where the script needs it. A character no
installed face has is printed as a visible marker with a notice pointing to the
HTML report: a name is never printed partially without saying so. Without any of
these fonts, the core Helvetica font is used, whose Latin-1 encoding cannot hold
every character: text is folded to Latin-1 first ("–" -> "-", unknown -> "?",
with the same notice): a name never stops a report from printing.
"""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from device.services import pdf_fonts
from device.services.pdf_fonts import FontFile
from device.services.report_pdf_figures import cell_grid, frames_section

FONT_DIRS = pdf_fonts.DEFAULT_FONT_DIRS
_FOLD = str.maketrans({"–": "-", "—": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "…": "...",
                       "•": "-", "·": "-", "≥": ">=", "≤": "<=", "×": "x", "\u00a0": " "})
HEADING_MM = 9.0  # the space a heading takes (gap + line)
KEEP_MM = 12.0  # a heading is kept with at least this much of what follows it (two rows of text)
UNSHOWN_NAME = "Some characters of this name cannot be shown in the PDF: see the HTML report"
UNSHOWN_TEXT = "Some characters of this text cannot be shown in the PDF: see the HTML report"
FSI, PDI = "\u2068", "\u2069"  # bidi isolation of a value (the PDF's <bdi>) when the text is shaped


def find_unicode_font(dirs=None) -> tuple[Path, Path] | None:
    """(regular, bold) DejaVu Sans files, or None."""
    dejavu = next((f for f in pdf_fonts.find_fonts(dirs) if f.family == "DejaVu"), None)
    return (dejavu.regular, dejavu.bold) if dejavu and dejavu.bold else None


def fold_latin1(text: str) -> str:
    return str(text).translate(_FOLD).encode("latin-1", "replace").decode("latin-1")


def _latin1_unshown(char: str) -> bool:
    return any(ord(c) > 255 for c in char.translate(_FOLD)) and pdf_fonts.needs_glyph(char)


def _strings(value):
    """Every string in the content, at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


class ReportPDF(FPDF):
    def __init__(self, content: dict, fonts: list[FontFile] | None):
        super().__init__(format="A4", unit="mm")
        self.content = content
        self.family = "Helvetica"
        self.unicode = bool(fonts)
        self.shaped = False
        if fonts:
            text = "".join(_strings(content))
            chosen, self.covered, _ = pdf_fonts.choose(fonts, text)
            for face in chosen:
                self.add_font(face.family, "", str(face.regular))
                if face.bold is not None:
                    self.add_font(face.family, "B", str(face.bold))
            self.family = chosen[0].family
            # the main family too: a character its bold lacks is taken from its regular face
            self.set_fallback_fonts([face.family for face in chosen], exact_match=False)
            if pdf_fonts.needs_shaping(text) and pdf_fonts.shaping_available():
                self.set_text_shaping(True)
                self.shaped = True
        self.marker = pdf_fonts.REPLACEMENT if self.unicode and ord(pdf_fonts.REPLACEMENT) in self.covered else "?"
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(True, margin=24)

    def unshown(self, text) -> bool:
        """Whether some character of ``text`` has no glyph in any loaded font (it prints as the marker)."""
        text = "" if text is None else str(text)
        if not self.unicode:
            return any(_latin1_unshown(c) for c in text)
        return any(pdf_fonts.needs_glyph(c) and ord(c) not in self.covered for c in text)

    def t(self, text) -> str:
        text = "" if text is None else str(text)
        if not self.unicode:
            return fold_latin1(text)
        return "".join(self.marker if pdf_fonts.needs_glyph(c) and ord(c) not in self.covered else c for c in text)

    def iso(self, value) -> str:
        """A value typed by someone, isolated from the text around it (an RTL override stays inside)."""
        value = "" if value is None else str(value)
        return f"{FSI}{value}{PDI}" if self.shaped else value

    def notice(self, text: str) -> None:
        self.set_text_color(179, 38, 30)
        self.font(8.5, bold=True)
        self.multi_cell(0, 4.5, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(0, 0, 0)

    def font(self, size: float, bold: bool = False) -> None:
        self.set_font(self.family, "B" if bold else "", size)

    def header(self) -> None:
        patient, report = self.content["patient"], self.content["report"]
        self.font(9, bold=True)
        self.cell(0, 5, self.t(f"allscope blood smear report · sample {self.content['sample']['id']} · "
                               f"version {report['version']} ({report['status']})"),
                  new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.font(9)
        born = f", born {patient['date_of_birth']}" if patient.get("date_of_birth") else ""
        self.cell(0, 5, self.t(f"Patient {self.iso(patient['identifier'])} · {self.iso(patient['name'])}{born}"),
                  new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if self.unshown(patient["name"]) or self.unshown(patient["identifier"]):  # on every page, like the name
            self.notice(UNSHOWN_NAME if self.unshown(patient["name"]) else UNSHOWN_TEXT)
        self.line(15, self.get_y() + 1, self.w - 15, self.get_y() + 1)
        self.ln(4)

    def footer(self) -> None:
        self.set_y(-20)
        self.font(7.5)
        self.multi_cell(self.w - 30 - 22, 3.6, self.t(self.content["disclaimer"]), new_x=XPos.RIGHT,
                        new_y=YPos.TOP)
        self.cell(22, 3.6, f"Page {self.page_no()}/{{nb}}", align="R")

    # --- building blocks ---
    def heading(self, text: str, keep: float = KEEP_MM) -> None:
        """A section heading, on a new page when ``keep`` mm of what follows would not fit under it."""
        if self.get_y() + HEADING_MM + keep > self.page_break_trigger:
            self.add_page()
        self.ln(2)
        self.font(12, bold=True)
        self.cell(0, 7, self.t(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def pairs(self, rows: list[tuple[str, object]], names: tuple[str, ...] = ()) -> None:
        """Label and value rows; a value with characters no font has is followed by a notice
        (the name notice for the labels in ``names``)."""
        for label, value in rows:
            if value in (None, ""):
                continue
            self.font(9.5, bold=True)
            self.cell(48, 5.5, self.t(label))
            self.font(9.5)
            self.multi_cell(0, 5.5, self.t(self.iso(value)), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            if self.unshown(value):
                self.notice(UNSHOWN_NAME if label in names else UNSHOWN_TEXT)

    def paragraph(self, text: str, size: float = 9.5, bold: bool = False, typed: tuple = (),
                  names: tuple = ()) -> None:
        """``text`` with ``{}`` placeholders for ``typed`` values (isolated, checked for unshown characters;
        the name notice if one of ``names`` cannot be shown in full); plain text without."""
        self.font(size, bold)
        self.multi_cell(0, 5, self.t(text.format(*map(self.iso, typed)) if typed else text),
                        new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if any(self.unshown(name) for name in names):
            self.notice(UNSHOWN_NAME)
        elif any(self.unshown(value) for value in typed):
            self.notice(UNSHOWN_TEXT)

    def banner(self, text: str, rgb: tuple[int, int, int]) -> None:
        self.set_fill_color(*rgb)
        self.set_text_color(255, 255, 255)
        self.font(13, bold=True)
        self.cell(0, 10, self.t(text), align="C", fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(0, 0, 0)
        self.ln(2)


def _pct(value) -> str:
    return "n/a (no white cell counted)" if value is None else f"{value:.1f} %"


def render_report_pdf(content: dict, crop_file, unicode_font: tuple[Path, Path] | list[FontFile] | None | bool = True,
                      compress: bool = True, frame_file=None) -> bytes:
    """The PDF bytes. ``crop_file(cell_dict)`` gives a crop (bytes, or an absolute path, or None);
    ``frame_file(capture_dict)`` a frame the same way (None: no frame pictures); ``unicode_font``:
    True = the faces of ``pdf_fonts`` found on this system, None/False = core font, a list of
    ``FontFile`` (main face first), or a (regular, bold) pair for a single face."""
    if unicode_font is True:
        fonts = pdf_fonts.find_fonts()
    elif isinstance(unicode_font, tuple):
        fonts = [FontFile("Unicode", Path(unicode_font[0]), Path(unicode_font[1]))]
    else:
        fonts = list(unicode_font or [])
    pdf = ReportPDF(content, fonts or None)
    pdf.compress = compress
    report, patient, sample = content["report"], content["patient"], content["sample"]
    summary = content["summary"]
    pdf.set_title(f"allscope report, sample {sample['id']}, version {report['version']}")
    pdf.set_creator("allscope")
    pdf.add_page()

    if report["status"] == "draft":
        pdf.banner("DRAFT — not signed", (179, 38, 30))
    elif report["status"] == "amended":
        pdf.banner(f"AMENDED — superseded by version {report['superseded_by_version']}", (97, 97, 97))

    pdf.heading("Patient")
    pdf.pairs([("Identifier", patient["identifier"]), ("Name", patient["name"]),
               ("Date of birth", patient["date_of_birth"]), ("Sex", patient["sex"]),
               ("Referring clinician", patient["referring_clinician"]), ("Symptoms", patient["symptoms"]),
               ("WBC (10^9/L)", patient["wbc"]), ("Haemoglobin (g/dL)", patient["hemoglobin"]),
               ("Platelets (10^9/L)", patient["platelets"])], names=("Name", "Referring clinician"))
    pdf.heading("Sample")
    pdf.pairs([("Sample", sample["id"]), ("Collected", sample["collected_at"]),
               ("Specimen", sample["specimen_type"]), ("Stain", sample["stain"]), ("Notes", sample["notes"])])
    for notice in content.get("record_notices", []):  # the details above are as signed; the record changed since
        pdf.paragraph("Notice: {}", bold=True, typed=(notice,))

    pdf.heading("Findings")
    labels = summary["by_label"]
    pdf.pairs([("Blast percentage", _pct(summary["blast_percentage"])),
               ("Blasts counted", summary["blast_count"]),
               ("White cells counted", (f"{summary['evaluable_cells']} (every cell but the unusable ones and "
                                        "those cut by the frame edge)")),
               ("Excluded", f"{labels['unusable']} unusable, {summary['edge_cells']} at the frame edge"),
               ("Review", f"{summary['needs_review']} flagged by the AI, {summary['reviewed']} labelled by the "
                          f"reviewer, {summary['overridden']} changed from the AI's label"),
               ("Captures", f"{summary['captures_analysed']} analysed of {summary['captures_total']}")])
    for frame in summary.get("captures", []):
        if frame.get("review_note"):
            pdf.paragraph(f"Frame {frame['number']}: {(frame.get('flag_shown') or '').replace('_', ' ')}, "
                          f"{frame['review_note']}", size=9)
    for problem in summary.get("quality_problems", []):
        pdf.paragraph(f"Quality: {problem}", size=9)
    differential_section(pdf, content)

    pdf.heading("Conclusion")
    if report["conclusion"]:
        pdf.paragraph("{}", size=10.5, typed=(report["conclusion"],))
    else:
        pdf.paragraph("(no conclusion yet)", size=10.5)
    if report["supersedes_version"]:
        pdf.paragraph(f"Amends version {report['supersedes_version']}. Reason: {{}}",
                      typed=(report["amendment_reason"],))
    if report["signed_by"]:
        pdf.paragraph(f"Signed by {{}} ({{}}) at {report['signed_at']} UTC", bold=True,
                      typed=(report["signer_name"], report["signed_by"]), names=(report["signer_name"],))

    frames_section(pdf, summary.get("captures", []), summary.get("cells", []), frame_file)

    pdf.heading("Decision support", keep=16)
    pdf.paragraph(content["disclaimer"], bold=True)
    from device.services.report_model import model_line  # local: keeps this module importable on its own

    if not content["models"]:
        pdf.paragraph("No frame has been analysed: no model to name.", size=9)
    for model in content["models"]:  # each model that produced the results, with its own validation figures
        pdf.paragraph(model_line(model), size=9)
        if model.get("training_data"):
            pdf.paragraph(f"Training cells: {model['training_data']}.", size=9)

    cell_grid(pdf, summary.get("cells", []), crop_file)
    return bytes(pdf.output())


def differential_section(pdf: ReportPDF, content: dict) -> None:
    """The reviewer's differential (a table of classes: count and % of the counted white cells), what was
    reviewed by whom, and the override reason of a signature below the minimum count."""
    from device.services.differential import override_line, summary_differential, summary_review

    summary, report = content["summary"], content["report"]
    diff = summary_differential(summary)
    pdf.heading(f"Differential ({diff['white_cells']} white cells counted)", keep=5.5 * (len(diff["rows"]) + 1))
    pdf.font(9.5, bold=True)
    pdf.cell(70, 5.5, pdf.t("Class"))
    pdf.cell(25, 5.5, pdf.t("Count"), align="R")
    pdf.cell(35, 5.5, pdf.t("% of counted"), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.font(9.5)
    for row in diff["rows"]:
        pdf.cell(70, 5.5, pdf.t(row["name"]))
        pdf.cell(25, 5.5, str(row["count"]), align="R")
        pdf.cell(35, 5.5, "n/a" if row["percentage"] is None else f"{row['percentage']:.1f} %", align="R",
                 new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.paragraph(summary_review(summary)["statement"], size=9)
    override = override_line(report.get("override_reason"), summary)
    if override:
        pdf.paragraph("{}", bold=True, typed=(override,))

