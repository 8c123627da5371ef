"""``allscope storage init-key|status|prune|space``: the key of encryption at rest (see device/store/atrest.py),
the retention policy and the disk-space guard (device/services/retention.py, disk_guard.py).

    allscope storage init-key [--out FILE]   a new random key file (0600); never overwrites one
    allscope storage status                  encrypted or not, key source, whether the key opens the data
    allscope storage prune [--dry-run]       delete the full frames the retention policy allows (audited)
    allscope storage space                   free space, the recent rate of writes, days left

Switch encryption on for a NEW data directory: init-key, set storage.encrypt_at_rest = true and
storage.key_file (or LoadCredential=allscope-db-key:FILE in the units), then start the device service; the
data directory is made encrypted on first use. Losing the key loses the data (backups included: they are
encrypted with it): keep a copy of the key file off the device.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

CONFIG_HELP = "configuration file (default: $ALLSCOPE_CONFIG, else /etc/allscope/allscope.toml if it exists)"
DATA_DIR_HELP = "the data directory (default: device.data_dir of the config, else $ALLSCOPE_DATA_DIR or ./var)"


def register(group: str, commands) -> None:
    """Add this module's subcommands of `allscope <group> ...`."""
    if group != "storage":
        return
    init = commands.add_parser("init-key", help="write a new random at-rest key file (mode 0600); refuses to "
                               "overwrite one")
    init.add_argument("--out", type=Path, default=None, help="the key file (default: storage.key_file)")
    init.add_argument("--owner", default=None, help="user that owns the file, e.g. allscope (needs root)")
    init.add_argument("--config", default=None, help=CONFIG_HELP)
    init.set_defaults(func=cmd_init_key)

    status = commands.add_parser("status", help="is the data directory encrypted, where the key comes from, "
                                 "and whether it opens the data")
    status.add_argument("--data-dir", default=None, help="the data directory (default: device.data_dir of the "
                        "config, else $ALLSCOPE_DATA_DIR or ./var)")
    status.add_argument("--config", default=None, help=CONFIG_HELP)
    status.set_defaults(func=cmd_status)

    prune = commands.add_parser("prune", help="delete the full frames the retention policy allows "
                                "(storage.prune_after_ack, storage.prune_offline_days); crops, thumbnails and "
                                "hashes stay; each pruning audited")
    prune.add_argument("--dry-run", action="store_true", help="only list what would be pruned")
    prune.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    prune.add_argument("--config", default=None, help=CONFIG_HELP)
    prune.set_defaults(func=cmd_prune)

    space = commands.add_parser("space", help="free space on the data disk, the recent rate of writes, days left")
    space.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    space.add_argument("--config", default=None, help=CONFIG_HELP)
    space.set_defaults(func=cmd_space)


def cmd_init_key(args: argparse.Namespace) -> int:
    from device.config.schema import load_config
    from device.errors import AllscopeError
    from device.store import atrest

    config = load_config(args.config)
    out = args.out or config.storage.key_file
    if out is None:
        raise AllscopeError("where should the key go? give --out FILE or set storage.key_file")
    out = Path(out)
    if out.exists():
        raise AllscopeError(f"{out} exists: a new key would lock out the data encrypted with the old one")
    secret = atrest.new_secret()
    out.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never replaces a key that appeared meanwhile; 0600 from the start, never readable by others.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    if args.owner:
        import shutil

        shutil.chown(out, user=args.owner, group=args.owner)
    print(f"wrote {out} (256-bit key, id {atrest.key_fingerprint(secret)}, mode 0600). Keep a copy off the "
          f"device: without it the encrypted data and backups cannot be read.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from device.config.schema import load_config
    from device.store import atrest
    from device.store.datadir import DataDir

    config = load_config(args.config)
    options = atrest.configure(config.storage)
    data = DataDir(Path(args.data_dir or config.device.data_dir or os.environ.get("ALLSCOPE_DATA_DIR") or "var")
                   .expanduser().resolve())
    source = str(options.key_file) if options.key_file else \
        f"systemd credential {options.key_credential} ($CREDENTIALS_DIRECTORY)"
    print(f"data directory {data.root}")
    print(f"synchronous={options.synchronous}; encrypt_at_rest={'on' if options.encrypt else 'off'}; key from {source}")
    if not atrest.is_encrypted(data.root):
        print("the data directory is NOT encrypted" + (" (it will be on first use)" if options.encrypt and
                                                      not (data.root / 'allscope.db').exists() else ""))
        return 1 if options.encrypt and (data.root / "allscope.db").exists() else 0
    atrest.keys_for(data.root)  # AtRestError (one line, exit 2) for a missing or wrong key
    if data.database.exists():
        connection = atrest.connect(data.database)
        try:
            version = connection.execute("PRAGMA cipher_version").fetchone()[0]
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
        print(f"encrypted (SQLCipher {version}, files AES-256-GCM); the key opens it")
    else:
        print("encrypted (no database yet); the key matches")
    return 0


def _open(args: argparse.Namespace):
    """(config, DataDir) with the database open and migrated."""
    from device.config.schema import load_config
    from device.store import atrest
    from device.store.datadir import DataDir
    from device.store.records import open_database

    config = load_config(args.config)
    atrest.configure(config.storage)
    data = DataDir.resolve(args.data_dir or config.device.data_dir)
    open_database(data.database)
    return config, data


def cmd_prune(args: argparse.Namespace) -> int:
    from device.services.actor import cli_actor_name
    from device.services.retention import Policy, prune

    config, data = _open(args)
    policy = Policy.from_config(config.storage)
    if not policy.enabled:
        print("no retention policy is set (storage.prune_after_ack = false, storage.prune_offline_days = 0): "
              "nothing is pruned")
        return 0
    result = prune(data, policy, dry_run=args.dry_run, username=cli_actor_name())
    for capture_id, reason in result.pruned:
        print(f"capture #{capture_id}: {reason}")
    for capture_id, problem in result.skipped:
        print(f"capture #{capture_id}: kept ({problem})")
    print(result.summary(dry_run=args.dry_run))
    return 1 if result.skipped else 0


def cmd_space(args: argparse.Namespace) -> int:
    from device.services.disk_guard import DiskGuard

    config, data = _open(args)
    state = DiskGuard.from_config(data, config.storage).state()
    days = "unknown (no capture in the last 7 days)" if state.days_left is None else f"{state.days_left:.0f}"
    print(f"data directory {data.root}: {state.free_bytes / 2**20:.0f} MB free, reserve "
          f"{state.reserve_bytes / 2**20:.0f} MB, {state.bytes_per_day / 2**20:.1f} MB a day recently, "
          f"days left {days}")
    if state.message:
        print(state.message)
    return 2 if state.level == "full" else 1 if state.level == "warn" else 0
