"""The picture sections of the PDF report: each frame with its cell outlines, and the grid of cell crops.

Both take the ``ReportPDF`` of ``report_pdf.py`` (its ``heading``, ``font`` and ``t``) and the report content's
plain dicts; pictures are made small by ``pdf_pictures`` before fpdf2 sees them. A section's heading is kept
with its first row (never alone at the foot of a page), and a row never splits across pages.
"""

from __future__ import annotations

import io

from fpdf.enums import XPos, YPos

from device.services.pdf_pictures import crop_jpeg, frame_jpeg

GRID_COLUMNS = 6
TILE_MM = 26.0
FRAME_GAP_MM = 5.0
CAPTION_MM = 4.5
LEGEND = ("Outlines: red blast, green normal, purple other, grey unusable, thick orange flagged and not yet "
          "reviewed; dashed: at the frame edge (not counted).")


def _room(pdf, height: float) -> bool:
    return pdf.get_y() + height <= pdf.page_break_trigger


def _picture(pdf, jpeg: bytes | None, x: float, y: float, w: float, h: float) -> None:
    if jpeg is None:
        pdf.rect(x, y, w, h)
        return
    pdf.image(io.BytesIO(jpeg), x=x, y=y, w=w, h=h, keep_aspect_ratio=True)


def frames_section(pdf, captures: list[dict], cells: list[dict], frame_file) -> None:
    """A small picture of each frame with its cells' outlines, two or three to a row, with a caption.

    ``frame_file(capture_dict)``: the stored frame (bytes or a path) or None (then an empty box)."""
    shown = [cap for cap in captures if cap.get("width") and cap.get("height")]
    if not shown or frame_file is None:
        return
    by_capture: dict[int, list[dict]] = {}
    for cell in cells:
        by_capture.setdefault(cell["capture_id"], []).append(cell)
    columns = 3
    usable = pdf.w - pdf.l_margin - pdf.r_margin
    width = (usable - (columns - 1) * FRAME_GAP_MM) / columns
    for start in range(0, len(shown), columns):
        row = shown[start:start + columns]
        height = max(width * cap["height"] / cap["width"] for cap in row)
        row_h = height + CAPTION_MM + 3
        if start == 0:
            pdf.heading(f"Frames ({len(shown)})", keep=row_h + 10)
            pdf.font(8)
            pdf.multi_cell(0, 4, pdf.t(LEGEND), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(1)
        elif not _room(pdf, row_h):
            pdf.add_page()
        top = pdf.get_y()
        for column, cap in enumerate(row):
            x = pdf.l_margin + column * (width + FRAME_GAP_MM)
            try:
                source = frame_file(cap)
            except (OSError, ValueError):
                source = None
            _picture(pdf, frame_jpeg(source, by_capture.get(cap["id"], []), frame_width=cap["width"]), x, top, width,
                     width * cap["height"] / cap["width"])
            pdf.set_xy(x, top + height + 0.5)
            pdf.font(7.5)
            flag = f", {cap['flag'].replace('_', ' ')}" if cap.get("flag") else ""
            status = "" if cap.get("status") == "done" else f", {cap.get('status')}"
            counted = cap.get("counted_cells", 0)
            pdf.cell(width, CAPTION_MM - 0.5, pdf.t(f"Frame {cap['number']}: {counted} cell{'' if counted == 1 else 's'} "
                                                    f"counted{flag}{status}"))
        pdf.set_xy(pdf.l_margin, top + row_h)


def cell_grid(pdf, cells: list[dict], crop_file) -> None:
    """Every cell's crop with its final label and the AI's, six to a row."""
    if not cells:
        return
    gap = (pdf.w - pdf.l_margin - pdf.r_margin - GRID_COLUMNS * TILE_MM) / (GRID_COLUMNS - 1)
    row_h = TILE_MM + 9
    pdf.heading(f"Cells ({len(cells)}; hardest first, edge cells last)", keep=row_h)
    top = pdf.get_y()
    for i, cell in enumerate(cells):
        column = i % GRID_COLUMNS
        if column == 0:
            if not _room(pdf, row_h):
                pdf.add_page()
            top = pdf.get_y()
        x = pdf.l_margin + column * (TILE_MM + gap)
        try:
            source = crop_file(cell)
        except (OSError, ValueError):
            source = None
        _picture(pdf, crop_jpeg(source), x, top, TILE_MM, TILE_MM)
        pdf.set_xy(x, top + TILE_MM + 0.5)
        pdf.font(7.5, bold=True)
        final = cell["final_label"] + ("" if cell["reviewer_label"] is None else
                                       " (AI accepted)" if cell.get("label_source") == "ai_accepted" else " (reviewed)")
        pdf.cell(TILE_MM, 3.8, pdf.t(final))
        pdf.set_xy(x, top + TILE_MM + 4.3)
        pdf.font(7)
        edge = ", edge" if cell["edge"] else ""
        pdf.cell(TILE_MM, 3.5, pdf.t(f"AI {cell['ai_label']} {cell['p_blast'] * 100:.0f}%{edge}"))
        if column == GRID_COLUMNS - 1 or i == len(cells) - 1:
            pdf.set_xy(pdf.l_margin, top + row_h)
