"""The ``allscope`` command line.

    allscope analyze FRAME... [--json] [--model M]   whole microscope frames
    allscope classify CROP... [--json] [--model M]   single-cell crops
    allscope bench [--frames N]                      speed figures from one run

Bad input never stops a batch: each bad file gets one line on stderr and the
exit status is 1; the good files are still reported. Errors a user can act
on are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from device.cli import backup as backup_cli
from device.cli import camera as camera_cli
from device.cli import config as config_cli
from device.cli import doctor
from device.cli import storage as storage_cli
from device.config.choices import DELEGATE_KINDS
from device.errors import AllscopeError
from device.resources import DEFAULT_MODEL, model_in_force
from device.services.actor import cli_actor_name
from sync.agent import cli as sync_cli
from sync.agent import enrol_cli as device_enrol_cli
from sync.central import backup_cli as central_backup_cli
from sync.central import cli as central_cli
from sync.central import fleet_cli as central_fleet_cli
from sync.central.web import cli as central_web_cli


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help=f"model file (default: $ALLSCOPE_MODEL or {DEFAULT_MODEL.name} in models/)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for inference (default 1)")
    parser.add_argument("--delegate", choices=DELEGATE_KINDS, default="cpu",
                        help="inference backend; falls back to CPU with a warning when absent")
    parser.add_argument("--delegate-library", default=None, help="library path for --delegate external")


def model_path(arg: Path | None) -> Path:
    return model_in_force(flag=arg)


def load_classifier(args: argparse.Namespace):
    from device.inference.classifier import CellClassifier
    from device.inference.delegates import DelegateConfig

    delegate = DelegateConfig(kind=args.delegate, num_threads=args.threads, library=args.delegate_library)
    return CellClassifier.load(model_path(args.model), delegate)


def _load_each(paths: list[str], failures: list[str]):
    """Yield (path, rgb) for every readable image; print one line per bad file and record it."""
    from device.core.imageio import iter_image_files, load_image

    for path in iter_image_files([Path(p) for p in paths]):
        try:
            rgb = load_image(path)
        except AllscopeError as error:
            print(f"allscope: {error}", file=sys.stderr, flush=True)
            failures.append(str(path))
            continue
        yield path, rgb


def cmd_classify(args: argparse.Namespace) -> int:
    from device.core.analysis import DISCLAIMER, Analyzer

    analyzer = Analyzer(load_classifier(args))
    if not args.json:
        _print_model_line(analyzer.classifier)
    results, failures = [], []
    for path, rgb in _load_each(args.paths, failures):
        batch, scales = analyzer.prepare_crops([rgb])
        p = float(analyzer.classifier.predict(batch)[0])
        label = "blast" if p >= analyzer.decision.threshold else "normal"
        results.append({"path": str(path), "label": label, "p_blast": round(p, 4), "scale": scales[0]})
        if not args.json:
            review = "  (uncertain: review)" if analyzer.decision.review_low <= p < analyzer.decision.review_high else ""
            print(f"{path}: {label} p_blast={p:.3f}{review}", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    elif results:
        print(DISCLAIMER)
    return 1 if failures else 0


def _print_model_line(classifier) -> None:
    info = classifier.info
    print(f"model {info.path.name} (sha256 {info.short_id}) on {classifier.backend}", flush=True)


def cmd_analyze(args: argparse.Namespace) -> int:
    from device.core.analysis import DISCLAIMER, Analyzer

    analyzer = Analyzer(load_classifier(args))
    if not args.json:
        _print_model_line(analyzer.classifier)
    results, failures = [], []
    for path, rgb in _load_each(args.paths, failures):
        result = analyzer.analyze_frame(rgb, path)
        results.append(result.to_dict())
        if not args.json:
            quality = "" if result.quality.get("usable", True) else \
                f" ({', '.join(result.quality.get('problems', []))})"
            print(f"{path}: {result.flag}{quality}: {result.cell_count} white cells, {result.blast_count} flagged as "
                  f"blasts ({100 * result.blast_fraction:.0f} %), {result.review_count} for review "
                  f"[{result.timings_ms.get('total', 0):.0f} ms]", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    elif results:
        print(DISCLAIMER)
    return 1 if failures else 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "all":
        from device.cli.bench_all import cmd_bench_all

        return cmd_bench_all(args)
    if args.what in ("thinlink", "fleet"):
        from sync.bench.cli import cmd_link_bench

        return cmd_link_bench(args)
    if args.what == "sync":
        from sync.bench.run import run_sync_bench

        report = run_sync_bench(records=args.records, json_path=args.json_out)
        return 0 if report["correct"] else 1
    if args.what == "web":
        from webui.bench.web import run_web_bench

        run_web_bench(clients=args.clients, duration_s=args.duration, think_s=args.think, model=args.model,
                      json_path=args.json_out)
        return 0
    from device.bench.cells import run_bench

    args.repeats = args.repeats or 200
    run_bench(args)
    return 0


def _open_records(data_dir, config=None):
    from device.store.datadir import DataDir
    from device.store.records import open_database

    data = DataDir.configured(data_dir, config)
    open_database(data.database)
    return data


def cmd_users(args: argparse.Namespace) -> int:
    from device.services import accounts
    from device.store.records import User

    _open_records(args.data_dir, args.config)
    if args.users_command == "create":
        user = accounts.create_user(args.username, accounts.read_new_password(), args.role, full_name=args.full_name or "",
                                    actor=cli_actor_name())
        print(f"created {user.username} ({user.roles.replace(',', ', ')})")
    elif args.users_command == "list":
        for user in User.select().order_by(User.username):
            state = "disabled" if user.disabled else "active"
            last = user.last_login_at.isoformat(timespec="minutes") if user.last_login_at else "never"
            print(f"{user.username}\t{user.roles}\t{state}\tlast login {last}")
    elif args.users_command in ("disable", "enable"):
        from device.services.account_rules import set_enabled

        target = User.get_or_none(User.username == args.username.strip().lower())
        if target is None:
            raise accounts.AccountError(f"no such user: {args.username}")
        user = set_enabled(target, args.users_command == "enable", actor=cli_actor_name())
        print(f"{user.username} {'disabled' if user.disabled else 'enabled'}")
    elif args.users_command == "unlock":
        cleared = accounts.unlock(args.username, actor=cli_actor_name())
        plural = "" if cleared == 1 else "s"
        print(f"unlocked {args.username.strip().lower()} (cleared {cleared} failed log-in{plural})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from webui.server import serve

    return serve(data_dir=args.data_dir, host=args.host, port=args.port, model=args.model, config=args.config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="allscope", description="allscope: white-cell finding and ALL blast "
                                     "flagging for professional review (decision support only).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    classify = sub.add_parser("classify", help="classify single-cell crops (folders are searched recursively)")
    classify.add_argument("paths", nargs="+")
    classify.add_argument("--json", action="store_true", help="print a JSON list")
    _add_model_args(classify)
    classify.set_defaults(func=cmd_classify)

    analyze = sub.add_parser("analyze", help="find and classify the white cells of whole frames")
    analyze.add_argument("paths", nargs="+")
    analyze.add_argument("--json", action="store_true", help="print a JSON list")
    _add_model_args(analyze)
    analyze.set_defaults(func=cmd_analyze)

    bench = sub.add_parser("bench", help="print speed figures: core (per-cell int8/float32, whole frame, model "
                           "size) or web (the served UI under concurrent clients)")
    bench.add_argument("what", nargs="?", choices=["core", "web", "sync", "thinlink", "fleet", "all"], default="core",
                       help="core (default), web, sync, thinlink (sync through a 256 kbit/s link), fleet (many "
                            "devices, several receivers, PostgreSQL), or all of them written to --out")
    bench.add_argument("--out", type=Path, default=None, help="all: results directory (default ./bench-results)")
    bench.add_argument("--quick", action="store_true", help="all: shorter runs (fewer records, seconds, frames)")
    bench.add_argument("--records", type=int, default=10000,
                       help="sync: queued records sent through the broker to the central (default 10000)")
    bench.add_argument("--frames", type=int, default=4, help="thinlink: analysed frames sent (default 4)")
    bench.add_argument("--devices", type=int, default=200, help="fleet: simulated devices (default 200)")
    bench.add_argument("--receivers", default="1,2,4", help="fleet: receiver counts to compare (default 1,2,4)")
    bench.add_argument("--clients", type=int, default=20, help="web: concurrent logged-in clients (default 20)")
    bench.add_argument("--duration", type=float, default=20.0, help="web: seconds of load (default 20)")
    bench.add_argument("--think", type=float, default=0.0,
                       help="web: mean pause between a client's pages in seconds (default 0: back to back)")
    bench.add_argument("--json-out", type=Path, default=None, help="web, sync: also write the figures to this JSON file")
    bench.add_argument("--model", type=Path, default=None, help="int8 model (default: the shipped one)")
    bench.add_argument("--float-model", type=Path, default=None,
                       help="float32 model of the same network (default: *_float32.tflite beside the int8 one)")
    bench.add_argument("--repeats", type=int, default=None,
                       help="core: timed inferences per setting (default 200); all: runs of every figure (default 3)")
    bench.add_argument("--frame", type=Path, default=None, help="a whole frame to time (default: ALL-IDB1 Im052_1 when ../shared/data is there, "
                       "else a demo frame scaled to 2592x1944)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)

    serve = sub.add_parser("serve", help="serve the touchscreen web UI (waitress)")
    serve.add_argument("--data-dir", default=None, help="records and images (default: $ALLSCOPE_DATA_DIR or ./var)")
    serve.add_argument("--host", default=None, help="listen address (default: device.host of the config, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="TCP port (default: device.port of the config, 8080)")
    serve.add_argument("--config", default=None, help="configuration file (default: $ALLSCOPE_CONFIG, else "
                       "/etc/allscope/allscope.toml if it exists); flags given here win over it")
    serve.add_argument("--model", type=Path, default=None, help="model file (default: the shipped one)")
    serve.set_defaults(func=cmd_serve)

    users = sub.add_parser("users", help="manage accounts (passwords are read from stdin)")
    users.add_argument("--data-dir", default=None, help="records and images (default: device.data_dir of the "
                       "configuration, else $ALLSCOPE_DATA_DIR or ./var)")
    users.add_argument("--config", default=None, help="configuration file (default: $ALLSCOPE_CONFIG, else "
                       "/etc/allscope/allscope.toml if it exists)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="create an account; the password is read from stdin")
    create.add_argument("username")
    create.add_argument("--role", required=True,
                        help="technician, pathologist or admin; several as a comma-separated list")
    create.add_argument("--full-name", default="")
    create.add_argument("--data-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    create.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    listing = users_sub.add_parser("list", help="list accounts")
    listing.add_argument("--data-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    listing.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for verb, text in (("disable", "disable an account"), ("enable", "enable an account"),
                       ("unlock", "clear the log-in delays of an account (every address)")):
        sub_verb = users_sub.add_parser(verb, help=text)
        sub_verb.add_argument("username")
        sub_verb.add_argument("--data-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub_verb.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    users.set_defaults(func=cmd_users)
    _add_module_commands(sub)
    return parser


# Command groups whose subcommands live in their own modules (each has ``register(group, commands)``).
COMMAND_GROUPS = {
    "central": ("central server: fleet PKI, enrolment, ingestion, admin UI",
                (central_fleet_cli, central_cli, central_web_cli, central_backup_cli)),
    "device": ("this device's sync identity (enrolment bundle, signing key)", (device_enrol_cli,)),
    "sync": ("encrypted store-and-forward sync to the central server", (sync_cli,)),
    "config": ("check or show the configuration file", (config_cli,)),
    "camera": ("list cameras, take a snapshot", (camera_cli,)),
    "backup": ("local backups: create, list, restore", (backup_cli,)),
    "storage": ("encryption at rest, retention of frames, disk space", (storage_cli,)),
}
# Single commands defined in their own modules (each has ``register_command(subparsers)``).
COMMAND_MODULES = (doctor,)


def _add_module_commands(sub) -> None:
    for module in COMMAND_MODULES:
        module.register_command(sub)
    for name, (help_text, modules) in COMMAND_GROUPS.items():
        parser = sub.add_parser(name, help=help_text)
        commands = parser.add_subparsers(dest=f"{name}_command", required=True)
        for module in modules:
            module.register(name, commands)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="allscope: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except AllscopeError as error:
        print(f"allscope: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
