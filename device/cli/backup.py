"""``allscope backup create|list|restore``: local backups of the data directory (see device/store/backup.py).

    allscope backup create [--to DIR] [--keep N]      one complete backup, then rotation (storage.backup_keep)
    allscope backup list [--to DIR]                   newest last
    allscope backup restore BACKUP [--force]          into the data directory; the services must be stopped

The data directory is --data-dir, else device.data_dir of the config, else $ALLSCOPE_DATA_DIR or ./var;
the backup directory --to, else storage.backup_dir, else backups/ in the data directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIG_HELP = "configuration file (default: $ALLSCOPE_CONFIG, else /etc/allscope/allscope.toml if it exists)"


def register(group: str, commands) -> None:
    """Add this module's subcommands of `allscope <group> ...`."""
    if group != "backup":
        return
    create = commands.add_parser("create", help="back up the database (online) and the images; keep the N newest")
    create.add_argument("--to", type=Path, default=None, help="backup directory (default: storage.backup_dir, "
                        "else backups/ in the data directory)")
    create.add_argument("--keep", type=int, default=None, help="backups kept (default: storage.backup_keep)")
    _common(create)
    create.set_defaults(func=cmd_create)

    listing = commands.add_parser("list", help="list the backups, oldest first")
    listing.add_argument("--to", type=Path, default=None, help="backup directory (default as for create)")
    _common(listing)
    listing.set_defaults(func=cmd_list)

    restore = commands.add_parser("restore", help="verify a backup and restore it into the data directory "
                                  "(stop allscope-device and allscope-sync first)")
    restore.add_argument("backup", type=Path, help="a backup directory (see allscope backup list)")
    restore.add_argument("--force", action="store_true", help="restore into a non-empty data directory; its "
                         "contents are moved aside into .before-restore-<time>/, not deleted")
    _common(restore)
    restore.set_defaults(func=cmd_restore)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="the data directory (default: device.data_dir of the "
                        "config, else $ALLSCOPE_DATA_DIR or ./var)")
    parser.add_argument("--config", default=None, help=CONFIG_HELP)


def _setup(args: argparse.Namespace):
    """(config, DataDir) with this process's storage options taken from the config."""
    from device.config.schema import load_config
    from device.store import atrest
    from device.store.datadir import DataDir

    config = load_config(args.config)
    atrest.configure(config.storage)
    return config, DataDir.resolve(args.data_dir or config.device.data_dir)


def _backup_dir(args, config, data) -> Path:
    from device.store.backup import default_backup_dir

    return Path(args.to or config.storage.backup_dir or default_backup_dir(data))


def cmd_create(args: argparse.Namespace) -> int:
    from device.store.backup import create_backup, list_backups

    config, data = _setup(args)
    to = _backup_dir(args, config, data)
    keep = args.keep if args.keep is not None else config.storage.backup_keep
    path = create_backup(data, to, keep=keep)
    info = next(b for b in list_backups(to) if b.path == path)
    print(f"backup {path} ({info.files} files, {info.bytes / 1e6:.1f} MB{', encrypted' if info.encrypted else ''}); "
          f"keeping the {keep} newest")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from device.store.backup import list_backups

    config, data = _setup(args)
    to = _backup_dir(args, config, data)
    found = list_backups(to)
    if not found:
        print(f"no backups in {to}")
    for info in found:
        print(f"{info.path}\t{info.created_at}\t{info.files} files\t{info.bytes / 1e6:.1f} MB"
              f"{chr(9) + 'encrypted' if info.encrypted else ''}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from device.store.backup import restore_backup

    _config, data = _setup(args)
    aside = restore_backup(args.backup, data.root, force=args.force)
    print(f"restored {args.backup} into {data.root}; integrity_check ok")
    if aside is not None:
        print(f"the previous contents are in {aside}")
    return 0
