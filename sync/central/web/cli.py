"""``allscope central serve`` (the admin web UI behind waitress) and ``allscope central users create|list``.

    allscope central serve [--central-db URL] [--data-dir DIR] [--host H] [--port 8090]
    allscope central users create NAME [--role admin] [--full-name TEXT]   (password from stdin)
    allscope central users list
    allscope central setup-token            (the one-time token of the first set-up page, /setup)
    allscope central users unlock NAME      (clears the log-in delays of NAME, from every address; audited)
    allscope central users disable|enable NAME, password NAME (stdin), roles NAME --role admin[,pathologist]

The central database is ``--central-db`` (a SQLite path or ``postgresql://``
URL), else ``$ALLSCOPE_CENTRAL_DB``, else ``central.db`` in the central data
directory (``--data-dir``, ``$ALLSCOPE_CENTRAL_DATA_DIR`` or ./var-central).
"""

from __future__ import annotations

import argparse

from device.services.actor import cli_actor_name


def _add_location_args(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--central-db", default=default, help="SQLite path or postgresql:// URL (default: "
                        "$ALLSCOPE_CENTRAL_DB or central.db in the data directory)")
    parser.add_argument("--data-dir", default=default, help="central data directory (default: "
                        "$ALLSCOPE_CENTRAL_DATA_DIR or ./var-central)")


def register(group: str, commands) -> None:
    """Add ``serve`` and ``users`` to ``allscope central``."""
    if group != "central":
        return
    serve = commands.add_parser("serve", help="serve the central admin web UI (waitress)")
    _add_location_args(serve)
    serve.add_argument("--host", default=None, help="listen address (default: central.host of the config, "
                                                    "127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="TCP port (default: central.port of the config, 8090)")
    serve.add_argument("--config", default=None, help="configuration file whose [central] gives the defaults of "
                       "the flags above (default: $ALLSCOPE_CONFIG, else /etc/allscope/allscope.toml)")
    serve.add_argument("--pki", default=None,
                       help="fleet PKI directory for enrol/revoke (default: $ALLSCOPE_PKI or <data dir>/pki)")
    serve.add_argument("--broker", default=None,
                       help="broker host:port offered for new bundles (default: $ALLSCOPE_BROKER or localhost:8883)")
    serve.add_argument("--tls", action="store_true", help="served behind TLS: mark the session cookie Secure")
    serve.set_defaults(func=cmd_serve)

    token = commands.add_parser("setup-token", help="print the one-time token the first set-up page (/setup) asks "
                                                    "for, while no account exists")
    _add_location_args(token)
    token.set_defaults(func=cmd_setup_token)

    users = commands.add_parser("users", help="central admin accounts (passwords are read from stdin)")
    _add_location_args(users)
    users_sub = users.add_subparsers(dest="central_users_command", required=True)
    create = users_sub.add_parser("create", help="create an account; the password is read from stdin")
    create.add_argument("username")
    create.add_argument("--role", choices=["admin"], default="admin", help="central accounts are admins")
    create.add_argument("--full-name", default="")
    _add_location_args(create, suppress=True)
    _add_location_args(users_sub.add_parser("list", help="list accounts"), suppress=True)
    for verb, text in (("unlock", "clear the log-in delays of an account (every address)"),
                       ("disable", "disable an account (its open sessions end)"), ("enable", "enable an account"),
                       ("password", "set a new password (read from stdin; the account's open sessions end)")):
        sub_verb = users_sub.add_parser(verb, help=text)
        sub_verb.add_argument("username")
        _add_location_args(sub_verb, suppress=True)
    roles = users_sub.add_parser("roles", help="set an account's roles (admin: everything; pathologist: the "
                                               "per-clinic export only)")
    roles.add_argument("username")
    roles.add_argument("--role", required=True, help="admin, pathologist, or both as a comma-separated list")
    _add_location_args(roles, suppress=True)
    users.set_defaults(func=cmd_users)


def _open(args: argparse.Namespace):
    from device.config.schema import apply_central_config
    from sync.central.db import open_central_database
    from sync.central.web.app import resolve_central_db, resolve_data_dir

    apply_central_config(args)  # [central] data_dir and database of the configuration file, for flags not given
    data = resolve_data_dir(args.data_dir)
    return data, open_central_database(resolve_central_db(args.central_db, data))


def cmd_setup_token(args: argparse.Namespace) -> int:
    from device.services import accounts
    from sync.central import setup_token

    data, _database = _open(args)
    if accounts.any_user_exists():
        setup_token.consume(data.root)
        print("set-up is closed: an account exists (add administrators with allscope central users create)")
        return 1
    print(setup_token.issue(data.root))
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    from device.services import accounts
    from device.store.records import User

    _open(args)
    if args.central_users_command == "create":
        user = accounts.create_user(args.username, accounts.read_new_password(), [args.role], full_name=args.full_name,
                                    actor=cli_actor_name())
        print(f"created {user.username} ({user.roles})")
    elif args.central_users_command in ("disable", "enable", "password", "roles"):
        _change_user(args, actor=cli_actor_name())
    elif args.central_users_command == "unlock":
        cleared = accounts.unlock(args.username, actor=cli_actor_name())
        plural = "" if cleared == 1 else "s"
        print(f"unlocked {args.username.strip().lower()} (cleared {cleared} failed log-in{plural})")
    else:
        for user in User.select().order_by(User.username):
            state = "disabled" if user.disabled else "active"
            last = user.last_login_at.isoformat(timespec="minutes") if user.last_login_at else "never"
            print(f"{user.username}\t{user.roles}\t{state}\tlast login {last}")
    return 0


def _change_user(args: argparse.Namespace, actor: str) -> None:
    """disable / enable / password / roles: the device's rules (``device.services.account_rules``: never
    the last active administrator), audited with the shell user as the actor."""
    from device.services import account_rules, accounts
    from device.store.records import User
    from sync.central.roles import central_roles

    target = User.get_or_none(User.username == args.username.strip().lower())
    if target is None:
        raise accounts.NoSuchAccount(f"no such user: {args.username}")
    if args.central_users_command == "password":
        account_rules.reset_password(target, accounts.read_new_password(), actor)
        print(f"new password set for {target.username}")
    elif args.central_users_command == "roles":
        roles = account_rules.change_roles(target, central_roles(args.role), actor)
        print(f"{target.username} now has the roles: {', '.join(roles)}")
    else:
        user = account_rules.set_enabled(target, args.central_users_command == "enable", actor)
        print(f"{user.username} {'disabled' if user.disabled else 'enabled'}")


def cmd_serve(args: argparse.Namespace) -> int:
    from device.config.schema import apply_central_config
    from device.services import accounts
    from sync.central import setup_token
    from sync.central.web.app import create_central_app
    from webui.server import run_waitress

    config = apply_central_config(args)  # [central] of the configuration file, for the flags not given
    app = create_central_app(args.central_db, args.data_dir, pki_dir=args.pki or None, broker=args.broker or None,
                             tls=bool(args.tls), login_policy=accounts.LockoutPolicy.from_config(config.login),
                             trusted_proxies=config.central.trusted_proxies,
                             broker_restart_command=config.central.broker_restart_command,
                             monitoring=config.monitoring)
    print(f"allscope central admin UI on http://{args.host}:{args.port}/  (data in {app.central.data.root})",
          flush=True)
    with app.app_context():
        if not accounts.any_user_exists():
            token = setup_token.issue(app.central.data.root)
            print(f"No account exists yet: open http://{args.host}:{args.port}/setup with the set-up token {token}\n"
                  f"  (also printed by allscope central setup-token), or run\n"
                  f"  allscope central users create ADMIN_NAME --role admin  (the password is read from stdin)",
                  flush=True)
    return run_waitress(app, args.host, args.port, ident="allscope-central")
