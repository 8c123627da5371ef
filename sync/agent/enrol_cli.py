"""``allscope device enrol BUNDLE [--data-dir DIR] [--new-key]``: install this device's enrolment bundle."""

from __future__ import annotations

from pathlib import Path


def _actor() -> str:
    from device.services.actor import cli_actor_name

    return cli_actor_name()


def register(group: str, commands) -> None:
    """Add ``allscope device enrol``."""
    enrol = commands.add_parser("enrol", help="install an enrolment bundle (directory or zip) and generate "
                                              "this device's signing key")
    enrol.add_argument("bundle", type=Path, help="bundle directory or zip from `allscope central enrol`")
    enrol.add_argument("--data-dir", default=None, help="records and images (default: device.data_dir of the "
                       "configuration, else $ALLSCOPE_DATA_DIR or ./var)")
    enrol.add_argument("--config", default=None, help="configuration file (default: $ALLSCOPE_CONFIG, else "
                       "/etc/allscope/allscope.toml if it exists)")
    enrol.add_argument("--new-key", action="store_true",
                       help="replace an existing signing key (the central admin must then re-enrol the device)")
    enrol.set_defaults(func=cmd_device_enrol)


def cmd_device_enrol(args) -> int:
    from device.store.datadir import DataDir
    from device.store.records import audit, db_proxy, open_database
    from sync.fleet.enrol import install_bundle

    data = DataDir.configured(args.data_dir, args.config)
    done = install_bundle(args.bundle, data.root, new_key=args.new_key)
    database = open_database(data.database)
    try:
        with db_proxy.atomic():
            audit("enrol", "device", done.device_id, username=_actor(),
                  after={"broker": done.broker, "clinic": done.clinic, "signing_key": done.signing_fingerprint,
                         "new_signing_key": done.key_created})
    finally:
        database.close()
    print(f"enrolled as {done.device_id} (broker {done.broker}); sync files in {done.sync_dir}")
    state = "new" if done.key_created else "existing"
    print(f"signing key ({state}, stays on this device) fingerprint {done.signing_fingerprint}")
    print(f"on the central (needed before a USB import, and it closes the first-hello race): "
          f"allscope central register-key {done.device_id} {done.signing_fingerprint}")
    return 0
