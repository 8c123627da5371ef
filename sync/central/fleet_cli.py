"""The central's fleet commands: PKI, broker configuration, enrolment, revocation.

    allscope central pki init --dir PKI [--broker-host H ...] [--force]
    allscope central pki issue NAME --dir PKI [--server-host H ...] [--replace]
    allscope central broker-config --pki PKI --persistence DIR [--port 8883] [--bind ADDR] [--user U] [--out FILE]
    allscope central enrol DEVICE_ID --out BUNDLE_DIR [--pki PKI] [--broker HOST:PORT] [--clinic NAME]
                                      [--central-db URL] [--data-dir DIR]
    allscope central revoke DEVICE_ID [--pki PKI] [--central-db URL] [--data-dir DIR]
    allscope central register-key DEVICE_ID FINGERPRINT [--central-db URL] [--data-dir DIR]

Defaults are those of the other central commands: PKI ``$ALLSCOPE_PKI`` or pki/ in the data directory; database
``$ALLSCOPE_CENTRAL_DB`` or central.db in the central data directory (``$ALLSCOPE_CENTRAL_DATA_DIR`` or
./var-central); broker ``$ALLSCOPE_BROKER`` or localhost:8883.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_BROKER = "localhost:8883"


def _actor() -> str:
    from device.services.actor import cli_actor_name

    return cli_actor_name()


def register(group: str, commands) -> None:
    """Add ``allscope central pki|broker-config|enrol|revoke``."""
    pki = commands.add_parser("pki", help="the fleet CA and certificates")
    pki_sub = pki.add_subparsers(dest="pki_command", required=True)
    init = pki_sub.add_parser("init", help="create the CA, broker and central certificates, CRL and envelope keys")
    init.add_argument("--dir", required=True, type=Path, help="PKI directory (created)")
    init.add_argument("--broker-host", action="append", default=None, metavar="HOST",
                      help="a DNS name or IP of the broker for its certificate (repeat; default localhost, 127.0.0.1)")
    init.add_argument("--force", action="store_true", help="replace an existing PKI (every certificate stops working)")
    init.set_defaults(func=cmd_pki_init)
    issue = pki_sub.add_parser("issue", help="issue a client certificate (or a server one with --server-host)")
    issue.add_argument("name", help="CN: a device id, 'central' or 'broker'")
    issue.add_argument("--dir", required=True, type=Path, help="PKI directory")
    issue.add_argument("--server-host", action="append", default=None, metavar="HOST",
                       help="issue a server certificate for this DNS name or IP (repeat)")
    issue.add_argument("--replace", action="store_true", help="replace the name's certificate (the old one is revoked)")
    issue.set_defaults(func=cmd_pki_issue)

    conf = commands.add_parser("broker-config", help="write the mosquitto configuration for a PKI")
    conf.add_argument("--pki", default=None, help="fleet PKI directory (default: $ALLSCOPE_PKI or var-central/pki)")
    conf.add_argument("--persistence", required=True, type=Path, help="mosquitto's persistence directory")
    conf.add_argument("--port", type=int, default=8883)
    conf.add_argument("--bind", default="", help="listen address (default: every interface)")
    conf.add_argument("--user", default="mosquitto", help="user mosquitto drops to when started as root")
    conf.add_argument("--acl", type=Path, default=None, help="ACL file (default: /etc/allscope/mosquitto/acl "
                      "as install.sh --with-broker puts it, else the one shipped with allscope)")
    conf.add_argument("--out", type=Path, default=None, help="write here (default: print)")
    conf.set_defaults(func=cmd_broker_config)

    check = commands.add_parser("broker-check", help="can mosquitto's user write its persistence folder and read "
                                                     "its keys? (exit 1 and one line per problem if not)")
    check.add_argument("conf", nargs="?", type=Path, default=None,
                       help="the written configuration (default: /etc/mosquitto/conf.d/allscope.conf)")
    check.set_defaults(func=cmd_broker_check)

    enrol = commands.add_parser("enrol", help="issue a device certificate and write its enrolment bundle")
    enrol.add_argument("device_id")
    enrol.add_argument("--out", required=True, type=Path, help="bundle directory to create")
    enrol.add_argument("--broker", default=None, help="HOST:PORT the device connects to (default: $ALLSCOPE_BROKER "
                                                      f"or {DEFAULT_BROKER})")
    enrol.add_argument("--clinic", default="", help="clinic name shown on the central server")
    enrol.add_argument("--force", action="store_true",
                       help="re-enrol an id that exists: its certificate is revoked, a revocation lifted and its "
                            "pinned signing key forgotten")
    _add_central_args(enrol)
    enrol.set_defaults(func=cmd_enrol)

    renew = commands.add_parser("renew", help="a new certificate and bundle for an enrolled device before its "
                                              "certificate expires (keeps its pinned signing key; the old "
                                              "certificate is revoked)")
    renew.add_argument("device_id")
    renew.add_argument("--out", required=True, type=Path, help="bundle directory to create")
    renew.add_argument("--broker", default=None, help="HOST:PORT the device connects to (default: $ALLSCOPE_BROKER "
                                                      f"or {DEFAULT_BROKER})")
    _add_central_args(renew)
    renew.set_defaults(func=cmd_renew)

    revoke = commands.add_parser("revoke", help="refuse a device's envelopes and put its certificate on the CRL; "
                                                "its open connection closes when the broker restarts")
    revoke.add_argument("device_id")
    revoke.add_argument("--restart-broker", action="store_true",
                        help="restart the broker now ([central] broker_restart_command, or --restart-command) so "
                             "the device's open connection is closed and its certificate refused")
    revoke.add_argument("--restart-command", default=None, help="the command that restarts mosquitto (default: "
                        "[central] broker_restart_command of the configuration file)")
    _add_central_args(revoke)
    revoke.set_defaults(func=cmd_revoke)

    register_key = commands.add_parser(
        "register-key", help="register the signing key fingerprint a device printed at allscope device enrol "
                             "(needed before its first USB import; closes the first-hello race)")
    register_key.add_argument("device_id")
    register_key.add_argument("fingerprint", help="the 64 hex digits (colons optional) the device printed")
    _add_central_args(register_key)
    register_key.set_defaults(func=cmd_register_key)


def _add_central_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pki", default=None, help="fleet PKI directory (default: $ALLSCOPE_PKI or pki in the data directory)")
    parser.add_argument("--central-db", default=None, help="SQLite path or postgresql:// URL (default: "
                        "$ALLSCOPE_CENTRAL_DB or central.db in the data directory)")
    parser.add_argument("--data-dir", default=None,
                        help="central data directory (default: [central] data_dir of the configuration file, "
                             "$ALLSCOPE_CENTRAL_DATA_DIR or ./var-central)")
    parser.add_argument("--config", default=None, help="configuration file whose [central] gives the defaults of "
                        "--data-dir and --central-db (default: $ALLSCOPE_CONFIG, else /etc/allscope/allscope.toml)")


def _pki_dir(args) -> Path:
    """Same default as `central run` and `central serve`: $ALLSCOPE_PKI, else pki/ in the central data directory."""
    from device.config.schema import apply_central_config
    from sync.central.web.app import resolve_data_dir

    apply_central_config(args)
    return Path(args.pki or os.environ.get("ALLSCOPE_PKI") or resolve_data_dir(args.data_dir).root / "pki")


def _open_central(args):
    """The central database of ``--central-db``, else of [central] in the configuration file (as `central run`)."""
    from device.config.schema import apply_central_config
    from sync.central.db import open_central_database
    from sync.central.web.app import resolve_central_db, resolve_data_dir

    apply_central_config(args)
    return open_central_database(resolve_central_db(args.central_db, resolve_data_dir(args.data_dir)))


# --- commands ---------------------------------------------------------------------------------------------

def cmd_pki_init(args) -> int:
    from sync.fleet.pki import cert_fingerprint, init_pki, load_certificate

    pki = init_pki(args.dir, broker_hosts=args.broker_host or ("localhost", "127.0.0.1"), force=args.force)
    print(f"fleet PKI in {pki.root}")
    print(f"CA certificate  {pki.ca_cert}  SHA-256 {cert_fingerprint(load_certificate(pki.ca_cert))}")
    print(f"{pki.ca_key} signs enrolments and revocations: keep it here (0600, the service user's) for web "
          f"enrolment, or offline and enrol/revoke with the CLI where it is")
    return 0


def cmd_pki_issue(args) -> int:
    from sync.fleet.pki import issue, open_pki

    issued = issue(open_pki(args.dir), args.name, server_hosts=args.server_host, replace=args.replace)
    print(f"{issued.name}: {issued.cert} (key {issued.key}), SHA-256 {issued.fingerprint}")
    return 0


def cmd_broker_config(args) -> int:
    from device.store.atomic import write_atomic
    from sync.fleet.broker import render_config
    from sync.fleet.broker_checks import check_broker_files, default_acl
    from sync.fleet.pki import open_pki

    pki = open_pki(args.pki)
    acl = Path(args.acl) if args.acl else default_acl()
    text = render_config(pki, port=args.port, persistence_dir=args.persistence, bind=args.bind, acl_file=acl,
                         user=args.user)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.out, text.encode(), mode=0o644)
        print(f"mosquitto configuration written to {args.out} (mosquitto -c {args.out})")
    problems = check_broker_files(user=args.user, persistence_dir=args.persistence, key=pki.key_path("broker"),
                                  readable=[pki.ca_cert, pki.cert_path("broker"), pki.crl, acl])
    return _report_problems(problems)


def _report_problems(problems: list[str]) -> int:
    for problem in problems:
        print(f"allscope: broker problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_broker_check(args) -> int:
    from device.errors import AllscopeError
    from sync.fleet.broker_checks import INSTALLED_CONF, check_mosquitto_conf

    conf = args.conf or INSTALLED_CONF
    try:
        problems = check_mosquitto_conf(conf)
    except OSError as error:
        raise AllscopeError(f"cannot read {conf}: {error.strerror}") from None
    if not problems:
        print(f"{conf}: mosquitto can write its persistence folder and read its certificates, CRL, ACL and key")
    return _report_problems(problems)


def cmd_enrol(args) -> int:
    from device.errors import AllscopeError
    from device.store.records import audit, db_proxy
    from sync.central.enrolment import enrol_device
    from sync.fleet.enrol import check_device_name, parse_broker

    check_device_name(args.device_id)
    host, port = parse_broker(args.broker or os.environ.get("ALLSCOPE_BROKER") or DEFAULT_BROKER)
    _open_central(args)
    from sync.central.models import Device

    existing = Device.get_or_none(Device.device_id == args.device_id)
    if existing is not None and not args.force:
        raise AllscopeError(f"{args.device_id} is already enrolled ({existing.state}): --force re-enrols it (its "
                            f"certificate is revoked, a revocation lifted, its pinned signing key forgotten)")
    with db_proxy.atomic():
        done = enrol_device(args.device_id, out=args.out, pki_dir=_pki_dir(args), broker_host=host, broker_port=port,
                            clinic=args.clinic)
        audit("enrol", "device", args.device_id, username=_actor(),
              after={"clinic": args.clinic, "broker": f"{host}:{port}", "cert_fingerprint": done.cert_fingerprint,
                     "re_enrolled": done.re_enrolled})
    print(f"{'re-enrolled' if done.re_enrolled else 'enrolled'} {done.device_id}: bundle in {done.bundle}")
    print(f"certificate SHA-256 {done.cert_fingerprint}")
    print(f"on the device: allscope device enrol {done.bundle}  (device.key in it is secret: carry it safely)")
    return 0


def cmd_renew(args) -> int:
    from device.store.records import audit, db_proxy
    from sync.central.enrolment import renew_device
    from sync.fleet.enrol import check_device_name, parse_broker
    from sync.fleet.pki import load_certificate, open_pki

    check_device_name(args.device_id)
    host, port = parse_broker(args.broker or os.environ.get("ALLSCOPE_BROKER") or DEFAULT_BROKER)
    _open_central(args)
    with db_proxy.atomic():
        done = renew_device(args.device_id, out=args.out, pki_dir=_pki_dir(args), broker_host=host, broker_port=port)
        audit("renew", "device", args.device_id, username=_actor(),
              after={"broker": f"{host}:{port}", "cert_fingerprint": done.cert_fingerprint})
    expiry = load_certificate(open_pki(_pki_dir(args)).cert_path(done.device_id)).not_valid_after_utc
    print(f"renewed {done.device_id}: bundle in {done.bundle}, certificate valid until {expiry:%Y-%m-%d}")
    print(f"certificate SHA-256 {done.cert_fingerprint}; the old certificate is on the CRL (refused once the broker "
          f"restarts)")
    print(f"on the device: allscope device enrol {done.bundle}  (it keeps its signing key)")
    return 0


def cmd_revoke(args) -> int:
    from device.config.schema import load_config
    from device.store.records import audit, db_proxy
    from sync.central import broker_control
    from sync.central.enrolment import revoke_device

    command = args.restart_command if args.restart_command is not None else \
        load_config(args.config).central.broker_restart_command
    _open_central(args)
    with db_proxy.atomic():
        done = revoke_device(args.device_id, pki_dir=_pki_dir(args))
        audit("revoke", "device", args.device_id, username=_actor(),
              after={"state": "revoked", "crl_serials": [str(s) for s in done.revoked_serials]},
              detail=done.crl_note)
    print(f"{done.device_id} revoked: {broker_control.REFUSED_NOW}")
    if done.crl_note:
        print(f"warning: {done.crl_note}", file=sys.stderr)
        return 0
    if not args.restart_broker:
        print(broker_control.pending_line(done.device_id, command))
        return 0
    broker_control.restart_broker(command)
    audit("restart-broker", "broker", "mosquitto", username=_actor(), detail=f"after revoking {done.device_id}")
    print(broker_control.done_line(done.device_id))
    return 0


def cmd_register_key(args) -> int:
    from device.store.records import audit, db_proxy
    from sync.central.enrolment import parse_key_fingerprint, register_signing_key

    parse_key_fingerprint(args.fingerprint)  # a typo is one line before the database is touched
    _open_central(args)
    with db_proxy.atomic():
        done = register_signing_key(args.device_id, args.fingerprint)
        audit("register-key", "device", args.device_id, username=_actor(),
              before={"signing_key_fingerprint": done.previous, "pinned": done.pinned},
              after={"signing_key_fingerprint": done.fingerprint, "unpinned": done.unpinned})
    print(done.line())
    return 0
