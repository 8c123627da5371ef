"""``allscope config check [FILE]`` and ``allscope config show [FILE]``.

check prints "ok" and a summary, or one line per problem on stderr and exits 2.
show prints the configuration in force as TOML: every key, defaults filled in.
No secret is ever printed: the file cannot hold any (the key lives in a key
file or a systemd credential), and show only says where the key would come from.
"""

from __future__ import annotations

import argparse
import json
import sys

FILE_HELP = "the configuration file (default: $ALLSCOPE_CONFIG, else /etc/allscope/allscope.toml if it exists)"


def register(group: str, commands) -> None:
    """Add this module's subcommands of `allscope <group> ...`."""
    if group != "config":
        return
    check = commands.add_parser("check", help="validate a configuration file: 'ok' and a summary, or one line "
                                              "per problem (exit status 2)")
    check.add_argument("file", nargs="?", default=None, help=FILE_HELP)
    check.set_defaults(func=cmd_check)

    show = commands.add_parser("show", help="print the configuration in force (defaults filled in) as TOML")
    show.add_argument("file", nargs="?", default=None, help=FILE_HELP)
    show.add_argument("--json", action="store_true", help="print JSON instead")
    show.add_argument("--schema", action="store_true", help="print the JSON schema of the file (every key with "
                                                            "its type, default, bounds and description)")
    show.set_defaults(func=cmd_show)


def _load(file):
    from device.config.schema import ConfigError, config_path, load_config

    try:
        return config_path(file), load_config(file)
    except ConfigError as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        return config_path(file), None


def cmd_check(args: argparse.Namespace) -> int:
    path, config = _load(args.file)
    if config is None:
        return 2
    print(f"ok: {path}" if path else "ok: no configuration file, the built-in defaults")
    for line in summary(config):
        print(f"  {line}")
    return 0


def summary(config) -> list[str]:
    """A few lines saying what the device will do with this configuration."""
    device, camera, inference, storage, sync = (config.device, config.camera, config.inference, config.storage,
                                                config.sync)
    model = str(inference.model) if inference.model else "$ALLSCOPE_MODEL or the shipped model"
    delegate = inference.delegate + (f" ({inference.delegate_library})" if inference.delegate_library else "")
    analysis = config.analysis.overrides()
    if storage.encrypt_at_rest:
        key = f"key file {storage.key_file}" if storage.key_file else f"systemd credential {storage.key_credential}"
        encryption = f"encrypted at rest ({key})"
    else:
        encryption = "not encrypted at rest"
    return [
        f"data dir   {device.data_dir or '$ALLSCOPE_DATA_DIR or ./var'}",
        f"web UI     http://{device.host}:{device.port}/" + (" behind TLS" if device.tls else ""),
        f"camera     {camera.backend}" + (f" {camera.source}" if camera.source else "")
        + f", live view {camera.live_fps:g} fps at {camera.live_max_width} px",
        f"model      {model} on {delegate}, {inference.threads} thread(s), watchdog {inference.watchdog_seconds:g} s",
        "decision   " + (", ".join(f"{k} {v:g}" for k, v in analysis.items()) if analysis else "the model card's"),
        f"ui         idle logout {config.ui.idle_minutes} min, uploads up to {config.ui.max_upload_mb} MB",
        f"storage    synchronous={storage.synchronous}, {encryption}, keep {storage.backup_keep} backups "
        f"every {storage.backup_interval_hours:g} h",
        "sync       " + (f"on, media {sync.media}" + (f", broker {sync.broker}" if sync.broker else "")
                         if sync.enabled else "off"),
    ]


def cmd_show(args: argparse.Namespace) -> int:
    from device.config.schema import AllscopeConfig

    if args.schema:
        print(json.dumps(AllscopeConfig.model_json_schema(), indent=1))
        return 0
    path, config = _load(args.file)
    if config is None:
        return 2
    if args.json:
        print(json.dumps(config.model_dump(mode="json"), indent=1))
        return 0
    print(f"# in force: {path or 'built-in defaults (no configuration file)'}")
    print(to_toml(config.model_dump(mode="json")), end="")
    return 0


def to_toml(data: dict) -> str:
    """Sections of scalars as TOML; an unset (None) key is written commented out."""
    out = []
    for section, values in data.items():
        out.append(f"\n[{section}]\n")
        for key, value in values.items():
            if value is None:
                out.append(f"# {key} = (unset)\n")
            else:
                out.append(f"{key} = {_toml_value(value)}\n")
    return "".join(out).lstrip("\n")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string
