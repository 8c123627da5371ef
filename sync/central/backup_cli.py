"""``allscope central backup create|restore`` (SQLite central database; PostgreSQL: pg_dump, see the README).

    allscope central backup create [--to DIR] [--data-dir DIR] [--central-db PATH]
    allscope central backup restore BACKUP_DIR [--force] [--data-dir DIR] [--central-db PATH]
"""

from __future__ import annotations

import argparse
import os


def register(group: str, commands) -> None:
    if group != "central":
        return
    from sync.central.web.cli import _add_location_args

    backup = commands.add_parser("backup", help="back up or restore the central's SQLite database and data "
                                                "directory (PostgreSQL: pg_dump, see the README)")
    _add_location_args(backup)
    sub = backup.add_subparsers(dest="central_backup_command", required=True)
    create = sub.add_parser("create", help="make a verified backup (online: the services may keep running)")
    create.add_argument("--to", default=None, help="backup directory (default: backups/ in the data directory)")
    _add_location_args(create, suppress=True)
    restore = sub.add_parser("restore", help="restore a backup (stop allscope central run and serve first)")
    restore.add_argument("backup_dir", metavar="BACKUP_DIR")
    restore.add_argument("--force", action="store_true",
                         help="restore over existing contents (moved aside into .before-restore-<time>/)")
    _add_location_args(restore, suppress=True)
    backup.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace) -> int:
    from device.config.schema import apply_central_config
    from sync.central.backup import create_backup, restore_backup
    from sync.central.web.app import resolve_central_db, resolve_data_dir

    apply_central_config(args)  # [central] data_dir and database of the configuration file, for flags not given
    data = resolve_data_dir(getattr(args, "data_dir", None))
    database = resolve_central_db(getattr(args, "central_db", None), data)
    if args.central_backup_command == "create":
        path = create_backup(database, data.root, args.to or data.root / "backups")
        print(f"backup written to {path}")
        _audit(database, "backup", path.name, f"backup written to {path}")
        return 0
    aside = restore_backup(args.backup_dir, database, data.root, force=bool(args.force))
    print(f"restored {args.backup_dir} into {data.root}" + (f" (previous contents in {aside})" if aside else ""))
    _audit(database, "restore", os.path.basename(os.path.normpath(args.backup_dir)),
           f"restored from {args.backup_dir}")
    return 0


def _audit(database: str, action: str, name: str, detail: str) -> None:
    from device.services.actor import cli_actor_name
    from device.store.records import audit, db_proxy
    from sync.central.db import open_central_database

    db = open_central_database(database)  # also migrates a backup made by an older version
    try:
        with db_proxy.atomic():
            audit(action, "backup", name[:64], username=cli_actor_name(),
                  detail=detail[:500])
    finally:
        db.close()
