"""`allscope central run` (the MQTT receiver) and `allscope central import` (USB exports).

Defaults follow the admin UI's: data directory ``--data-dir`` / $ALLSCOPE_CENTRAL_DATA_DIR /
./var-central; database ``--central-db`` / $ALLSCOPE_CENTRAL_DB / <data dir>/central.db;
PKI ``--pki`` / $ALLSCOPE_PKI / <data dir>/pki; broker ``--broker`` / $ALLSCOPE_BROKER /
localhost:8883.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from device.errors import AllscopeError

DEFAULT_DATA_DIR = Path("var-central")
DEFAULT_BROKER = "localhost:8883"


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="received files (default: $ALLSCOPE_CENTRAL_DATA_DIR or ./var-central)")
    parser.add_argument("--central-db", default=None,
                        help="SQLite path or postgresql://user@host/db (default: $ALLSCOPE_CENTRAL_DB or "
                             "central.db in the data directory)")
    parser.add_argument("--pki", default=None, help="fleet PKI directory (default: $ALLSCOPE_PKI or pki in the "
                                                    "data directory)")
    parser.add_argument("--config", default=None, help="configuration file whose [central] gives the defaults of "
                        "--data-dir and --central-db (default: $ALLSCOPE_CONFIG, else /etc/allscope/allscope.toml)")


def register(group: str, commands) -> None:
    """Add `allscope central run` and `allscope central import`."""
    if group != "central":
        return
    run = commands.add_parser("run", help="receive envelopes from the broker, store them, acknowledge them "
                                          "(several may run side by side)")
    _add_common(run)
    run.add_argument("--broker", default=None, help="HOST:PORT of the TLS broker (default: $ALLSCOPE_BROKER or "
                                                    f"{DEFAULT_BROKER})")
    run.add_argument("--client-id", default=None,
                     help="MQTT client id, unique per receiver (default: central-<host name>)")
    run.add_argument("--allow-plaintext", action="store_true",
                     help="also accept unencrypted envelopes (the sync benchmark's comparison run only)")
    run.set_defaults(func=cmd_run)

    rec = commands.add_parser("receivers", help="list the receivers (allscope central run) as they last reported; "
                                                "--forget ID removes a retired one from the list")
    _add_common(rec)
    rec.add_argument("--forget", metavar="CLIENT_ID", default=None, help="remove a stopped receiver's row")
    rec.set_defaults(func=cmd_receivers)

    imp = commands.add_parser("import", help="ingest a device's USB export (allscope sync export) and write "
                                             "signed acks.json beside it")
    imp.add_argument("bundle_dir", metavar="BUNDLE_DIR",
                     help="an allscope-export-* folder, or a folder holding several")
    _add_common(imp)
    imp.set_defaults(func=cmd_import)


def _open(args) -> tuple:
    """(Ingestor, central signing key, data dir) with the database bound; one-line errors."""
    from device.config.schema import apply_central_config
    from device.store.datadir import DataDir
    from sync.central.db import open_central_database
    from sync.central.ingest import Ingestor
    from sync.fleet.pki import load_central_keys, open_pki

    apply_central_config(args)  # [central] of the configuration file, for the flags not given
    data = DataDir.resolve(args.data_dir or os.environ.get("ALLSCOPE_CENTRAL_DATA_DIR") or DEFAULT_DATA_DIR)
    pki = open_pki(args.pki or os.environ.get("ALLSCOPE_PKI") or data.root / "pki")
    open_central_database(args.central_db or os.environ.get("ALLSCOPE_CENTRAL_DB") or data.root / "central.db")
    enc_key, sign_key = load_central_keys(pki)
    ingestor = Ingestor(enc_key, data.root, allow_plaintext=getattr(args, "allow_plaintext", False))
    return ingestor, sign_key, pki


def cmd_run(args) -> int:
    from sync.central.service import BrokerSettings, CentralService, parse_broker
    from sync.wire.acks import make_ack

    host, port = parse_broker(args.broker or os.environ.get("ALLSCOPE_BROKER") or DEFAULT_BROKER)
    ingestor, sign_key, pki = _open(args)
    broker = BrokerSettings(host=host, port=port, ca=pki.ca_cert, cert=pki.cert_path("central"),
                            key=pki.key_path("central"), client_id=args.client_id or "")

    def sign(device_id: str, acks: list[dict]) -> bytes:
        return make_ack(device_id=device_id, acks=acks, signing_key=sign_key)

    if ingestor.allow_plaintext:
        print("allscope central: accepting UNENCRYPTED envelopes (--allow-plaintext)", file=sys.stderr, flush=True)
    return CentralService(ingestor, sign, broker).run()


def cmd_receivers(args) -> int:
    from device.config.schema import apply_central_config
    from device.store.datadir import DataDir
    from sync.central import receivers
    from sync.central.db import open_central_database

    apply_central_config(args)
    data = DataDir.resolve(args.data_dir or os.environ.get("ALLSCOPE_CENTRAL_DATA_DIR") or DEFAULT_DATA_DIR)
    open_central_database(args.central_db or os.environ.get("ALLSCOPE_CENTRAL_DB") or data.root / "central.db")
    if args.forget:
        states = {view.client_id: view.state for view in receivers.listing()}
        if args.forget not in states:
            raise AllscopeError(f"no receiver {args.forget!r} has reported (see allscope central receivers)")
        if states[args.forget] == "running":
            raise AllscopeError(f"{args.forget} is running: stop it first (SIGTERM, or systemctl stop)")
        receivers.forget(args.forget)
        print(f"{args.forget} removed from the list of receivers")
        return 0
    views = receivers.listing()
    for view in views:
        print(f"{view.client_id}\t{view.state}\t{view.host}\tpid {view.pid}\t"
              f"last seen {view.last_seen_at:%Y-%m-%d %H:%M:%S} UTC\t{view.handled} envelopes")
    if not views:
        print("no receiver has reported yet: start allscope central run")
    return 0


def cmd_import(args) -> int:
    from sync.central.usb_import import find_exports, import_export

    exports = find_exports(args.bundle_dir)  # before touching the database: a wrong path is one line
    ingestor, sign_key, _ = _open(args)
    rejected = 0
    for directory in exports:
        result = import_export(directory, ingestor, sign_key)
        rejected += result.statuses["rejected"]
        print(f"{result.line()}; acks in {directory / 'acks.json'}", flush=True)
    if rejected:
        raise AllscopeError(f"{rejected} envelopes rejected (see the ingestion errors in the admin UI)")
    return 0
