"""``allscope bench thinlink`` and ``allscope bench fleet``: argument checks and exit codes (one line on errors)."""

from __future__ import annotations

from device.errors import AllscopeError


def cmd_link_bench(args) -> int:
    if args.what == "thinlink":
        from sync.bench.thinlink import run_thinlink_bench

        report = run_thinlink_bench(frames=args.frames, model=args.model, json_path=args.json_out)
        return 0 if report.get("skipped") or report["exactly_once"] else 1
    from sync.bench.fleet import run_fleet_bench

    try:
        receivers = [int(part) for part in str(args.receivers).split(",") if part.strip()]
    except ValueError:
        raise AllscopeError(f"--receivers {args.receivers!r}: use receiver counts such as 1,2,4") from None
    report = run_fleet_bench(devices=args.devices, receivers=receivers, records=args.records,
                             json_path=args.json_out)
    return 0 if report.get("skipped") or report["correct"] else 1
