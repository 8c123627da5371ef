"""Settings of the device's sync agent: the enrolment bundle plus optional overrides, validated up front.

Sources, later ones win:

1. ``<data_dir>/sync/bundle.json`` (installed by ``allscope device enrol``): device id, broker host/port;
2. ``<data_dir>/sync/agent.json`` (optional, written by an installer or by hand): any key of
   :data:`DEFAULTS`;
3. command-line overrides (``allscope sync run --media crops``).

A bad value stops the agent at start with one line naming the key, never halfway
through a sync. The bundle's key files are checked for presence here too, so a
device that was never enrolled gets "run allscope device enrol" rather than a
TLS traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from device.config.choices import MEDIA_POLICIES
from device.errors import AllscopeError, ConfigError  # noqa: F401  (ConfigError: raised here, imported from here)
from device.store.datadir import DataDir
from sync.wire.topics import check_device_id

DEFAULTS = {
    "media": "crops",               # frames: full frames + crops; crops: crops only; none: records only
    "max_message_bytes": 256 * 1024,  # every published envelope, overhead included
    "window": 500,                  # outbox entries in flight (sent, not yet acknowledged by central)
    "batch_records": 100,           # outbox entries per envelope at most (1: one envelope per entry)
    "backoff_initial_s": 1.0,       # first reconnect delay, doubled per failure ...
    "backoff_max_s": 60.0,          # ... up to this cap
    "backoff_jitter": 0.2,          # +-20 % random spread so a fleet does not reconnect in lock-step
    "ack_timeout_s": 60.0,          # resend an entry when central has not acknowledged it in this time
    "retry_rejected_s": 600.0,      # a rejected entry is offered again after this long
    "status_interval_s": 30.0,      # retained online/backlog status refresh
    "keepalive_s": 30,
    "session_expiry_s": 7 * 24 * 3600,  # broker keeps our session (acks queued) this long while offline
}

BUNDLE_FILES = ("ca.crt", "device.crt", "device.key", "central_enc_x25519.pub", "central_sign_ed25519.pub")
SIGNING_KEY = "device_sign_ed25519.key"


@dataclass(frozen=True)
class AgentConfig:
    data_dir: Path
    device_id: str
    broker_host: str
    broker_port: int
    media: str = DEFAULTS["media"]
    max_message_bytes: int = DEFAULTS["max_message_bytes"]
    window: int = DEFAULTS["window"]
    batch_records: int = DEFAULTS["batch_records"]
    backoff_initial_s: float = DEFAULTS["backoff_initial_s"]
    backoff_max_s: float = DEFAULTS["backoff_max_s"]
    backoff_jitter: float = DEFAULTS["backoff_jitter"]
    ack_timeout_s: float = DEFAULTS["ack_timeout_s"]
    retry_rejected_s: float = DEFAULTS["retry_rejected_s"]
    status_interval_s: float = DEFAULTS["status_interval_s"]
    keepalive_s: int = DEFAULTS["keepalive_s"]
    session_expiry_s: int = DEFAULTS["session_expiry_s"]
    extra: dict = field(default_factory=dict)  # unknown bundle keys, kept for status output

    @property
    def sync_dir(self) -> Path:
        return self.data_dir / "sync"

    def path(self, name: str) -> Path:
        return self.sync_dir / name

    @property
    def database(self) -> Path:
        return DataDir(self.data_dir).database


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: not readable as JSON ({' '.join(str(error).split())})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {what} must be a JSON object")
    return value


def _check(key: str, value, *, source: str):
    """Type and range of one tunable; returns the value converted to its type."""
    default = DEFAULTS[key]
    if key == "media":
        if value not in MEDIA_POLICIES:
            raise ConfigError(f"{source}: media must be one of {', '.join(MEDIA_POLICIES)} (got {value!r})")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: {key} must be a number (got {value!r})")
    if isinstance(default, int) and not isinstance(default, bool):
        if value != int(value):
            raise ConfigError(f"{source}: {key} must be a whole number (got {value!r})")
        value = int(value)
    else:
        value = float(value)
    limits = {"max_message_bytes": (8 * 1024, 256 * 1024 * 1024), "window": (1, 100_000), "batch_records": (1, 1000),
              "backoff_jitter": (0.0, 0.9), "keepalive_s": (5, 3600), "session_expiry_s": (60, 2**32 - 1)}
    low, high = limits.get(key, (0.001, 7 * 24 * 3600.0))
    if not low <= value <= high:
        raise ConfigError(f"{source}: {key} must be between {low} and {high} (got {value!r})")
    return value


def load_config(data_dir: str | Path | None = None, overrides: dict | None = None) -> AgentConfig:
    """The agent's settings for ``data_dir`` (default: $ALLSCOPE_DATA_DIR or ./var); one-line errors."""
    root = DataDir.resolve(data_dir).root
    sync_dir = root / "sync"
    bundle_path = sync_dir / "bundle.json"
    try:
        bundle = _read_json(bundle_path, "the bundle")
    except FileNotFoundError:
        raise ConfigError(f"this device is not enrolled ({bundle_path} is missing): "
                          f"run allscope device enrol BUNDLE_DIR --data-dir {root}") from None
    source = str(bundle_path)
    try:
        device_id = check_device_id(str(bundle.get("device_id", "")))
    except ValueError as error:
        raise ConfigError(f"{source}: device_id: {error}") from None
    host = bundle.get("broker_host")
    if not isinstance(host, str) or not host.strip():
        raise ConfigError(f"{source}: broker_host must be a host name or address")
    port = bundle.get("broker_port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{source}: broker_port must be a port number 1-65535 (got {port!r})")
    for name in BUNDLE_FILES + (SIGNING_KEY,):
        if not (sync_dir / name).is_file():
            raise ConfigError(f"{sync_dir / name} is missing: re-run allscope device enrol")

    values: dict = {}
    agent_path = sync_dir / "agent.json"
    layers = []
    if agent_path.exists():
        layers.append((str(agent_path), _read_json(agent_path, "the agent settings")))
    layers.append(("command line", {k: v for k, v in (overrides or {}).items() if v is not None}))
    for layer_source, layer in layers:
        for key, value in layer.items():
            if key not in DEFAULTS:
                raise ConfigError(f"{layer_source}: unknown sync setting {key!r} "
                                  f"(known: {', '.join(sorted(DEFAULTS))})")
            values[key] = _check(key, value, source=layer_source)
    if values.get("backoff_initial_s", DEFAULTS["backoff_initial_s"]) > \
            values.get("backoff_max_s", DEFAULTS["backoff_max_s"]):
        raise ConfigError("backoff_initial_s must not exceed backoff_max_s")
    known = {f.name for f in fields(AgentConfig)}
    extra = {k: v for k, v in bundle.items() if k not in known}
    return AgentConfig(data_dir=root, device_id=device_id, broker_host=host.strip(), broker_port=port,
                       extra=extra, **values)
