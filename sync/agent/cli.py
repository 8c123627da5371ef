"""``allscope sync run|status|export|import-acks``: the device side of sync on the command line."""

from __future__ import annotations

import argparse
import json
import sys

from device.config.choices import MEDIA_POLICIES

DATA_DIR_HELP = "records and images (default: $ALLSCOPE_DATA_DIR or ./var)"


def register(group: str, commands) -> None:
    """Add this module's subcommands of `allscope <group> ...` (group: central | device | sync)."""
    if group != "sync":
        return
    run = commands.add_parser("run", help="send the outbox to the central server until stopped (SIGTERM)")
    run.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    run.add_argument("--media", choices=MEDIA_POLICIES, default=None,
                     help="images that travel with captures (default: sync/agent.json, else crops)")
    run.add_argument("--config", default=None, help="configuration file: [sync] and device.data_dir (default: "
                     "$ALLSCOPE_CONFIG, else /etc/allscope/allscope.toml if it exists); flags win over it")
    run.add_argument("--until-empty", action="store_true",
                     help="exit once every pending entry is acknowledged (for scheduled syncs)")
    run.set_defaults(func=cmd_run)

    status = commands.add_parser("status", help="pending entries, oldest pending, last ack, last error, "
                                               "quarantined entries")
    status.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    export = commands.add_parser("export", help="write the pending entries as a sealed bundle (USB stick)")
    export.add_argument("--to", required=True, help="folder to write allscope-export-<device>-<time>/ into")
    export.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    export.add_argument("--media", choices=MEDIA_POLICIES, default=None,
                        help="images that travel with captures (default: sync/agent.json, else crops)")
    export.set_defaults(func=cmd_export)

    acks = commands.add_parser("import-acks", help="drop the entries the central acknowledged in an imported "
                               "export (its acks.json)")
    acks.add_argument("path", help="an export folder, or the folder holding them")
    acks.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    acks.set_defaults(func=cmd_import_acks)


def cmd_run(args: argparse.Namespace) -> int:
    """Precedence: flags > the configuration file's [sync] > sync/agent.json > built-in defaults."""
    import dataclasses
    import logging

    from device.config.schema import load_config as load_appliance_config
    from device.store import atrest
    from sync.agent.config import load_config
    from sync.agent.service import run_agent

    settings = load_appliance_config(args.config)
    if not settings.sync.enabled:
        print(f"allscope sync: disabled (sync.enabled = false in {settings.source})", flush=True)
        return 0
    overrides = {key: getattr(settings.sync, key) for key in ("media", "max_message_bytes")
                 if key in settings.sync.model_fields_set}  # set in the file: over agent.json
    if args.media is not None:
        overrides["media"] = args.media
    atrest.configure(settings.storage)
    config = load_config(args.data_dir or settings.device.data_dir, overrides)
    if settings.sync.broker:
        host, _, port = settings.sync.broker.rpartition(":")
        config = dataclasses.replace(config, broker_host=host, broker_port=int(port))
    if not logging.getLogger().isEnabledFor(logging.INFO):  # the agent is a service: say what it does
        logging.getLogger("allscope.sync").setLevel(logging.INFO)
    print(f"allscope sync: {config.device_id} -> {config.broker_host}:{config.broker_port} "
          f"(media {config.media})", flush=True)
    return run_agent(config, until_empty=args.until_empty)


def sync_status(data_dir) -> dict:
    """Outbox figures plus enrolment facts; works on a device that is not enrolled yet."""
    from device.store.datadir import DataDir
    from device.store.records import open_database
    from sync.agent import outbox
    from sync.agent.config import ConfigError, load_config

    data = DataDir.resolve(data_dir)
    open_database(data.database)
    status = outbox.status()
    status["rejected_entries"] = outbox.OutboxEntry.select().where(outbox.OutboxEntry.last_error != "").count()
    try:
        config = load_config(data.root)
        status.update(enrolled=True, device_id=config.device_id,
                      broker=f"{config.broker_host}:{config.broker_port}", media=config.media,
                      key_confirmed=bool(outbox.get_state("hello_key")))
    except ConfigError as error:
        status.update(enrolled=False, problem=str(error))
    return status


def _age(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def cmd_status(args: argparse.Namespace) -> int:
    status = sync_status(args.data_dir)
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    if status["enrolled"]:
        print(f"device      {status['device_id']} -> {status['broker']} (media {status['media']})")
    else:
        print(f"device      not enrolled: {status['problem']}")
    print(f"pending     {status['pending']} entries" +
          (f", {status['rejected_entries']} rejected by the central (kept)" if status["rejected_entries"] else "") +
          (f", {status['quarantined']} quarantined: cannot be sent (kept, listed below)"
           if status["quarantined"] else ""))
    print(f"oldest      {_age(status['oldest_pending_seconds'])}")
    print(f"last ack    {status['last_ack_at'] or 'never'}")
    print(f"last error  {status['last_error'] or 'none'}")
    for item in status["quarantined_entries"]:
        print(f"quarantined entry {item['entry']} ({item['record']} v{item['version']}, {item['bytes']} bytes) "
              f"since {item['since']}: {item['reason']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sync.agent.config import load_config
    from sync.agent.usb_export import export_pending

    result = export_pending(load_config(args.data_dir, {"media": args.media}), args.to)
    print(result.line())
    for message in result.quarantined:
        print(f"warning: {message}", file=sys.stderr)
    return 0


def cmd_import_acks(args: argparse.Namespace) -> int:
    from sync.agent.config import load_config
    from sync.agent.usb_export import import_acks

    result = import_acks(load_config(args.data_dir), args.path)
    print(result.line())
    return 1 if result.ignored else 0
