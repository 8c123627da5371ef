"""The Markdown of ``allscope bench all`` (bench.md): one table of every figure, then cells against time."""

from __future__ import annotations

# (section, figure key, label, unit); figures without a label here are still shown, under their key
LABELS = (
    ("per_cell", "int8_1t_ms", "int8, 1 thread, per cell", "ms"),
    ("per_cell", "int8_2t_ms", "int8, 2 threads, per cell", "ms"),
    ("per_cell", "float32_1t_ms", "float32, 1 thread, per cell", "ms"),
    ("per_cell", "float32_2t_ms", "float32, 2 threads, per cell", "ms"),
    ("per_cell", "float32_over_int8_1t", "int8 speed-up over float32, 1 thread", "×"),
    ("per_cell", "float32_over_int8_2t", "int8 speed-up over float32, 2 threads", "×"),
    ("frames", "slope_ms_per_cell", "whole frame: cost per cell (fitted slope)", "ms"),
    ("frames", "fixed_ms", "whole frame: fixed cost (fitted, 0 cells)", "ms"),
    ("frames", "slope_over_int8_1t", "whole frame cost per cell ÷ int8 classification per cell (1 thread)", "×"),
    ("web", "think1s_p50_ms", "web, {clients} clients, 1 s think: p50", "ms"),
    ("web", "think1s_p95_ms", "web, {clients} clients, 1 s think: p95", "ms"),
    ("web", "think1s_requests_per_s", "web, {clients} clients, 1 s think: pages/s", ""),
    ("web", "saturated_p50_ms", "web, {clients} clients, back to back: p50", "ms"),
    ("web", "saturated_p95_ms", "web, {clients} clients, back to back: p95", "ms"),
    ("web", "saturated_requests_per_s", "web, {clients} clients, back to back: pages/s", ""),
    ("web", "think1s_server_peak_rss_mb", "web server peak RSS (1 s think)", "MB"),
    ("web", "saturated_server_peak_rss_mb", "web server peak RSS (back to back)", "MB"),
    ("sync", "encrypted_records_per_s", "sync, {records} records, encrypted envelopes", "records/s"),
    ("sync", "plaintext_records_per_s", "sync, {records} records, plaintext envelopes", "records/s"),
    ("sync", "plaintext_over_encrypted", "sync throughput plaintext ÷ encrypted", "×"),
    ("sync", "encrypted_live_p50_ms", "sync live record to central, encrypted: p50", "ms"),
    ("sync", "plaintext_live_p50_ms", "sync live record to central, plaintext: p50", "ms"),
    ("memory", "idle_rss_mb", "device service RSS, idle", "MB"),
    ("memory", "idle_peak_rss_mb", "device service peak RSS, idle", "MB"),
    ("memory", "model_loaded_rss_mb", "device service RSS, model loaded", "MB"),
    ("memory", "model_loaded_peak_rss_mb", "device service peak RSS, model loaded", "MB"),
    ("memory", "after_frames_rss_mb", "device service RSS, after {frames} frames", "MB"),
    ("memory", "after_frames_peak_rss_mb", "device service peak RSS, after {frames} frames", "MB"),
    ("memory", "concurrent4_peak_rss_mb", "device service peak RSS, 4 uploads arriving at once", "MB"),
    ("memory", "concurrent4_refused_busy", "of those 4, refused busy (503: every decoding slot taken)", ""),
    ("memory", "cells_per_frame", "cells per analysed frame (those {frames})", ""),
    ("memory", "net_written_kb_per_frame", "storage writes per analysed frame (net)", "KB"),
    ("memory", "written_kb_per_frame", "dirtied pages per frame (write_bytes)", "KB"),
    ("memory", "cancelled_kb_per_frame", "of them deleted before write-back (upload spooled by waitress and werkzeug)", "KB"),
    ("memory", "camera_stored_kb_per_frame", "stored on disk per camera still (the appliance's own frames)", "KB"),
    ("memory", "camera_stored_image_kb_per_frame", "camera still: frame file (default still_format, JPEG q90 4:4:4)",
     "KB"),
    ("memory", "camera_stored_crops_kb_per_frame", "camera still: cell crops", "KB"),
    ("memory", "camera_stored_crop_kb_per_cell", "camera still: one cell crop (JPEG q95 4:4:4)", "KB"),
    ("memory", "camera_stored_thumbs_kb_per_frame", "camera still: thumbnail", "KB"),
    ("memory", "camera_stored_database_kb_per_frame", "camera still: database growth (WAL checkpointed)", "KB"),
    ("memory", "camera_stored_after_prune_kb_per_frame", "camera still once its full frame is pruned", "KB"),
    ("memory", "camera_cells_per_frame", "cells per camera still (the same {frames} fields)", ""),
    ("memory", "stored_kb_per_frame", "stored on disk per uploaded frame (kept bit-exact as it arrived)", "KB"),
    ("memory", "stored_image_kb_per_frame", "upload: frame file (the upload as received)", "KB"),
    ("memory", "stored_crops_kb_per_frame", "upload: cell crops", "KB"),
    ("memory", "stored_crop_kb_per_cell", "upload: one cell crop (JPEG q95 4:4:4)", "KB"),
    ("memory", "stored_thumbs_kb_per_frame", "upload: thumbnail", "KB"),
    ("memory", "stored_database_kb_per_frame", "upload: database growth (WAL checkpointed)", "KB"),
    ("memory", "stored_after_prune_kb_per_frame", "upload once its full frame is pruned", "KB"),
    ("storage", "original_kb", "frame as uploaded (ALL-IDB1 JPEG)", "KB"),
    ("storage", "png1_kb", "frame as PNG level 1 (before issue 15)", "KB"),
    ("storage", "png1_ms", "frame as PNG level 1: encode", "ms"),
    ("storage", "webp_lossless_kb", "camera still as WebP lossless (still_format webp-lossless)", "KB"),
    ("storage", "webp_lossless_ms", "camera still as WebP lossless: encode", "ms"),
    ("storage", "jpeg95_kb", "camera still as JPEG q95 4:4:4 (still_format jpeg95)", "KB"),
    ("storage", "jpeg95_ms", "camera still as JPEG q95 4:4:4: encode", "ms"),
    ("storage", "jpeg90_kb", "camera still as JPEG q90 4:4:4 (default still_format)", "KB"),
    ("storage", "jpeg90_ms", "camera still as JPEG q90 4:4:4: encode", "ms"),
    ("storage", "thumb_kb", "thumbnail (1024 px, JPEG q85)", "KB"),
    ("storage", "crop_png_kb", "cell crop as PNG (before issue 15)", "KB"),
    ("storage", "crop_jpeg95_kb", "cell crop as JPEG q95 4:4:4", "KB"),
    ("storage", "crop_webp_lossless_kb", "cell crop as WebP lossless", "KB"),
)


def number(value) -> str:
    if value is None:
        return "–"
    size = abs(value)
    return f"{value:.0f}" if size >= 100 else f"{value:.1f}" if size >= 10 else f"{value:.2f}"


def _context(section: str, data: dict) -> dict:
    return {"clients": data.get("clients", ""), "records": data.get("records", ""),
            "frames": data.get("frames_per_run", "")}


def figure_rows(report: dict) -> list[tuple[str, str, dict]]:
    """(label, unit, spread) for every figure of every section that ran, in the order of LABELS."""
    rows = []
    for section, data in report["sections"].items():
        figures = dict(data.get("figures", {}))
        for owner, key, label, unit in LABELS:
            if owner == section and key in figures:
                rows.append((label.format(**_context(section, data)), unit, figures.pop(key)))
        rows += [(f"{section}: {key}", "", stats) for key, stats in figures.items()]
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    runs = report["repeats"]
    lines = [f"# allscope bench all{' --quick' if report['quick'] else ''}", "",
             f"{m['machine']} {m['processor']}, {m['cpus']} CPUs, {m['system']}, Python {m['python']}; "
             f"{report['started']}. Each figure: median of {runs} run{'s' if runs > 1 else ''} "
             f"and the min–max over them.", "",
             "| figure | median | min–max |", "|---|---|---|"]
    for label, unit, stats in figure_rows(report):
        suffix = f" {unit}" if unit and unit != "×" else unit
        spread = (f"{number(stats['min'])}–{number(stats['max'])}{suffix}" if stats["runs"] else "–")
        lines.append(f"| {label} | {number(stats['median'])}{suffix if stats['runs'] else ''} | {spread} |")
    frames = report["sections"].get("frames")
    if frames and frames.get("table"):
        lines += ["", f"Whole-frame analysis time against cells found ({frames['source']}, {frames['backend']}; "
                      f"median of {runs} run{'s' if runs > 1 else ''}, each the median of "
                      f"{report['sizes']['timed_per_frame']} analyses):", "",
                  "| frame | cells | ms | min–max ms | quality / finding / preparing / classifying ms |",
                  "|---|---|---|---|---|"]
        for row in frames["table"]:
            parts = row["parts_median_ms"]
            lines.append(f"| {row['frame']} | {row['cells']} | {number(row['median'])} | {number(row['min'])}–"
                         f"{number(row['max'])} | {parts['quality']:.0f} / {parts['detect']:.0f} / "
                         f"{parts['prepare']:.0f} / {parts['classify']:.0f} |")
    for name, data in report["sections"].items():
        if "skipped" in data:
            lines.append(f"\n{name}: skipped ({data['skipped']})")
        if "error" in data:
            lines.append(f"\n{name}: failed ({data['error']})")
    if report.get("problems"):
        lines += ["", "Problems seen: " + "; ".join(report["problems"])]
    return "\n".join(lines) + "\n"
