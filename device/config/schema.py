"""The appliance's configuration file: TOML, validated at start, one line per problem.

    config = load_config()            # --config FILE, else $ALLSCOPE_CONFIG, else /etc/allscope/allscope.toml
    config = load_config("a.toml")    # if it exists, else the built-in defaults (they work on a Pi)
    config.camera.backend, config.ui.idle_minutes, config.storage.key_bytes() ...
    AllscopeConfig.model_json_schema()   # every key with its type, default, bounds and description

Precedence: a command-line flag > the configuration file > the built-in default
(which, for the data directory and the model, still honours $ALLSCOPE_DATA_DIR and $ALLSCOPE_MODEL as before).
Settings an admin stores in the device database (``device/services/settings.py``: camera, model, thresholds,
idle logout, upload limit) override the file at run time.

Every field has a default, a description and bounds; unknown keys are refused
(``extra="forbid"``), so a typo never silently falls back to a default. A bad
file raises :class:`ConfigError` whose ``problems`` are lines such as::

    allscope.toml:12: camera.backend: must be one of replay, opencv, picamera2 (got 'usb')

Secrets (the at-rest key) never live in the file: ``storage.key_file`` names a file readable only by the
service user, or systemd passes a credential (``LoadCredential=allscope-db-key:/etc/allscope/db.key``) that
arrives as ``$CREDENTIALS_DIRECTORY/allscope-db-key``; see :func:`read_secret`.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator

from device.config.choices import CameraKind, DelegateKind, MediaPolicy, SqliteSynchronous
from device.config.errors import problem_lines
from device.config.monitoring import MonitoringSection, check_networks
from device.config.retention import StorageGrowth
from device.errors import AllscopeError, ConfigError  # noqa: F401  (ConfigError: raised here, imported from here)

ENV_VAR = "ALLSCOPE_CONFIG"
SYSTEM_CONFIG = Path("/etc/allscope/allscope.toml")
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
DEFAULT_KEY_CREDENTIAL = "allscope-db-key"


class SecretError(AllscopeError):
    """A secret (key file or systemd credential) is missing, empty or readable by others."""


class _Section(BaseModel):
    # strict: TOML is typed, so "10" for a number or 1 for true is a mistake worth naming, not coercing
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _path(description: str) -> Any:
    return Field(default=None, description=description, strict=False)  # TOML strings become paths


class DeviceSection(_Section):
    data_dir: Path | None = _path("Records, images and secrets of this device (unset: $ALLSCOPE_DATA_DIR or ./var; "
                                  "the appliance uses /var/lib/allscope).")
    host: str = Field("127.0.0.1", min_length=1, max_length=255,
                      description="Address the web UI listens on: 127.0.0.1 for the touchscreen kiosk only, "
                                  "0.0.0.0 to serve other computers on the network as well.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the web UI.")
    tls: bool = Field(False, description="The UI is reached through a TLS-terminating proxy: mark the session "
                                         "cookie Secure (leave false for the local kiosk on http://127.0.0.1).")


class CameraSection(_Section):
    backend: CameraKind = Field(
        "replay", description="replay: a folder of frames, looping (demos, tests); opencv: a USB/UVC camera or a "
                              "GStreamer pipeline (Jetson CSI); picamera2: a Raspberry Pi camera module.")
    source: str = Field("", max_length=1000,
                        description="replay: a folder of frames (empty: the bundled demo frames); opencv: a device "
                                    "index such as 0, a path such as /dev/video0, or a GStreamer pipeline; "
                                    "picamera2: the camera number (empty: the first).")
    width: int = Field(0, ge=0, le=16384, description="Still capture width in pixels (0: the sensor's full width).")
    height: int = Field(0, ge=0, le=16384, description="Still capture height in pixels (0: the sensor's full "
                                                       "height).")
    live_fps: float = Field(5.0, gt=0, le=30, description="Live-view frames per second at most (keeps the CPU "
                                                          "for analysis).")
    live_max_width: int = Field(960, ge=160, le=4096, description="Live-view frames are scaled down to this width "
                                                                  "in pixels.")

    def grabber_options(self) -> dict:
        """Keyword arguments of device.camera.grabber.FrameGrabber."""
        return {"max_fps": self.live_fps, "max_width": self.live_max_width}


class InferenceSection(_Section):
    model: Path | None = _path("The .tflite model (unset: $ALLSCOPE_MODEL or the shipped "
                               "models/allscope_blast_int8.tflite).")
    delegate: DelegateKind = Field(
        "cpu", description="cpu (XNNPACK), edgetpu (Coral USB/PCIe, needs the _edgetpu.tflite model) or external "
                           "(a delegate library, e.g. Arm NN). A delegate that fails falls back to the CPU with a "
                           "warning.")
    delegate_library: str | None = Field(None, min_length=1, max_length=1000, validate_default=True,
                                         description="Shared library of the external delegate (required for "
                                                     "delegate = \"external\"; optional for edgetpu to override "
                                                     "libedgetpu.so.1).")
    threads: int = Field(1, ge=1, le=64, description="CPU threads for inference (a Pi 4/5 has 4 cores; the web "
                                                     "server needs some too).")
    watchdog_seconds: float = Field(30.0, ge=1, le=3600, description="A frame whose analysis takes longer is "
                                                                     "failed and the model reloaded (a hung "
                                                                     "delegate).")

    @field_validator("delegate_library")
    @classmethod
    def _library_for_external(cls, value, info: ValidationInfo):
        if value is None and info.data.get("delegate") == "external":
            raise ValueError('required when delegate = "external"')
        return value



def _unit(description: str) -> Any:
    return Field(None, ge=0.0, le=1.0, description=description)


class AnalysisSection(_Section):
    review_low: float | None = _unit("Low end of the review band: cells from here up to review_high go to a "
                                     "pathologist (unset: the model card's).")
    threshold: float | None = _unit("A cell at or above this blast probability is labelled blast (unset: the "
                                    "model card's).")
    review_high: float | None = Field(None, ge=0.0, le=1.0, validate_default=True,
                                      description="High end of the review band (unset: the model card's). "
                                                  "Set the three together, or none.")

    @field_validator("threshold")
    @classmethod
    def _above_low(cls, value, info: ValidationInfo):
        low = info.data.get("review_low")
        if value is not None and low is not None and value < low:
            raise ValueError(f"must not be below analysis.review_low ({low:g})")
        return value

    @field_validator("review_high")
    @classmethod
    def _above_threshold(cls, value, info: ValidationInfo):
        given = {"review_low": info.data.get("review_low", 0), "threshold": info.data.get("threshold", 0),
                 "review_high": value}  # a key that failed its own check is absent from info.data: not "unset"
        missing = [key for key, v in given.items() if v is None]
        if missing and len(missing) < 3:
            raise ValueError(f"set review_low, threshold and review_high together (or none: the model card's); "
                             f"missing {', '.join(missing)}")
        for key in ("threshold", "review_low"):
            other = info.data.get(key)
            if value is not None and other is not None and value < other:
                raise ValueError(f"must not be below analysis.{key} ({other:g})")
        return value

    def overrides(self) -> dict[str, float]:
        """The values the file sets (the others stay the model card's)."""
        return {key: value for key, value in self.model_dump().items() if value is not None}


class UISection(_Section):
    idle_minutes: int = Field(10, ge=1, le=120, description="A shared touchscreen logs its user out after this "
                                                            "many minutes without activity.")
    max_upload_mb: int = Field(64, ge=1, le=512, description="Largest image file accepted by the upload page, "
                                                             "in MB.")
    max_upload_megapixels: float = Field(0.0, ge=0, le=200,
                                         description="Largest image accepted by upload, in megapixels (0: the "
                                                     "largest camera this device supports, the Pi HQ camera's "
                                                     "12.3 MP or camera.width x camera.height if larger, plus "
                                                     "50 %). Checked from the header, before any pixel is decoded.")
    decode_memory_mb: int = Field(0, ge=0, le=1024 * 1024,
                                  description="Memory uploads may take while they are decoded at once, in MB (0: a "
                                              "quarter of this machine's memory, at most 128 MB: one 2592x1944 "
                                              "frame at a time); each image reserves 16 bytes a pixel of its own "
                                              "size, read from its header, and waits until it fits.")
    max_parallel_decodes: int = Field(2, ge=1, le=16, description="Images decoded at a time at most, whatever the "
                                                                  "memory allows.")
    decode_wait_seconds: float = Field(15.0, ge=0, le=300,
                                       description="An upload waits this long for a decoding slot, then is refused "
                                                   "(503, try again).")
    max_live_streams: int = Field(2, ge=0, le=6,
                                  description="Live views (MJPEG streams) open at a time; each holds one of the web "
                                              "server's threads, so more are refused (503) to keep pages served.")
    max_json_kb: int = Field(256, ge=1, le=64 * 1024,
                             description="Largest JSON request body, in KB, of the device and the central web "
                                         "UIs; larger is refused (400) before parsing.")
    max_json_depth: int = Field(32, ge=2, le=500, description="Deepest nesting of arrays and objects in a JSON "
                                                               "request body; deeper is refused (400) before "
                                                               "parsing.")


class ReviewSection(_Section):  # the white cell count of a sample: defaults of the admin settings of the same names
    target_white_cells: int = Field(200, ge=10, le=1000, description="White cells to count per sample, as in a manual "
                                    "differential; the capture page shows the progress.")
    min_white_cells: int = Field(100, ge=0, le=1000, description="Signing with fewer counted white cells needs an "
                                 "override reason, printed on the report (at most target_white_cells).")

    @field_validator("min_white_cells")
    @classmethod
    def _not_above_target(cls, value, info: ValidationInfo):
        target = info.data.get("target_white_cells")
        if target is not None and value > target:
            raise ValueError(f"must not be above review.target_white_cells ({target})")
        return value


class LoginSection(_Section):
    """Failed log-ins of both web UIs (device and central): growing delays per (user name, client address)."""

    free_failures: int = Field(3, ge=1, le=100, description="Failed log-ins a user name may have from one address "
                                                            "before each further attempt must wait.")
    first_delay_seconds: int = Field(5, ge=1, le=3600, description="The first wait; it doubles with each further "
                                                                   "failure.")
    max_delay_minutes: int = Field(15, ge=1, le=24 * 60, description="The longest wait between two attempts.")
    forget_after_hours: int = Field(24, ge=1, le=24 * 30, description="Failures older than this are forgotten "
                                                                      "(and deleted).")
    audited_failures_per_hour: int = Field(30, ge=1, le=100_000,
                                           description="Failed log-ins itemised in the audit trail per client "
                                                       "address and hour; the rest are counted in one event.")


class StorageSection(_Section, StorageGrowth):  # the storage-growth keys: device/config/retention.py
    synchronous: SqliteSynchronous = Field(
        "full", description="SQLite synchronous mode: full survives a power cut with every committed record; "
                            "normal is faster but may lose the last commits.")
    encrypt_at_rest: bool = Field(False, description="Encrypt the database and stored images (against a stolen "
                                                     "SD card); needs a key.")
    key_file: Path | None = _path("File holding the at-rest key, mode 0600, owned by the service user (unset: "
                                  "the systemd credential named by key_credential).")
    key_credential: str = Field(DEFAULT_KEY_CREDENTIAL, pattern=r"^[A-Za-z0-9_.@-]{1,128}$",
                                description="Name of the systemd credential (LoadCredential=NAME:FILE) holding "
                                            "the key, read from $CREDENTIALS_DIRECTORY/NAME.")
    backup_dir: Path | None = _path("Where allscope backup create writes (unset: backups/ in the data directory; "
                                    "better another disk or a USB stick).")
    backup_keep: int = Field(7, ge=1, le=1000, description="Backups kept; older ones are deleted after a new "
                                                           "one is complete.")
    backup_interval_hours: float = Field(24.0, ge=1, le=24 * 31, description="Hours between scheduled backups "
                                                                             "(allscope-backup.timer).")

    def key_bytes(self) -> bytes:
        """The at-rest key from key_file or the systemd credential; SecretError otherwise."""
        return read_secret(self.key_credential, self.key_file)


class SyncSection(_Section):
    enabled: bool = Field(True, description="Run the sync agent (allscope sync run exits at once when false).")
    media: MediaPolicy = Field(
        "crops", description="Images that travel with captures: frames (whole frames and crops), crops (cell "
                             "crops only) or none (records only).")
    max_message_bytes: int = Field(256 * 1024, ge=8 * 1024, le=256 * 1024 * 1024,
                                   description="Largest MQTT message, envelope overhead included; larger files "
                                               "travel in chunks.")
    broker: str = Field("", max_length=260, pattern=r"^$|^[^\s:]+:[0-9]{1,5}$",
                        description="HOST:PORT overriding the broker of the enrolment bundle (empty: the "
                                    "bundle's).")


class CentralSection(_Section):
    data_dir: Path | None = _path("Received files of the central server (unset: $ALLSCOPE_CENTRAL_DATA_DIR or "
                                  "./var-central).")
    database: str = Field("", max_length=1000,
                          description="SQLite path or postgresql://user@host/db URL (empty: central.db in the "
                                      "data directory). No password here: use ~/.pgpass or $PGPASSFILE.")
    host: str = Field("127.0.0.1", min_length=1, max_length=255, description="Address of the central admin UI.")
    port: int = Field(8090, ge=1, le=65535, description="TCP port of the central admin UI.")
    broker_restart_command: str = Field("", max_length=300, description="Restarts mosquitto so a revocation "
                                        "closes the device's connection (e.g. systemctl restart mosquitto).")
    trusted_proxies: tuple[str, ...] = Field((), max_length=32, strict=False,
                                             description="Addresses or networks of the reverse proxies in front of "
                                                         "the admin UI (e.g. [\"127.0.0.1\"]): X-Forwarded-For is "
                                                         "honoured only from these. Empty: never.")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]):
        return check_networks(value)

    @field_validator("database")
    @classmethod
    def _no_password(cls, value: str):
        if "://" in value and urlsplit(value).password:
            raise ValueError("no password in the config file: put it in ~/.pgpass or $PGPASSFILE")
        return value


class AllscopeConfig(BaseModel):
    """The whole file. Each section is optional; an absent one takes its defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    device: DeviceSection = Field(default_factory=DeviceSection, description="The device's web UI.")
    camera: CameraSection = Field(default_factory=CameraSection, description="The microscope camera.")
    inference: InferenceSection = Field(default_factory=InferenceSection, description="Model and accelerator.")
    analysis: AnalysisSection = Field(default_factory=AnalysisSection,
                                      description="Decision threshold and review band, overriding the model card.")
    ui: UISection = Field(default_factory=UISection, description="The touchscreen UI.")
    review: ReviewSection = Field(default_factory=ReviewSection,
                                  description="The white cell count per sample and the sign-off minimum.")
    storage: StorageSection = Field(default_factory=StorageSection,
                                    description="Database durability, encryption at rest, backups.")
    sync: SyncSection = Field(default_factory=SyncSection, description="The sync agent (allscope sync run).")
    central: CentralSection = Field(default_factory=CentralSection,
                                    description="The central server (allscope central run / serve).")
    login: LoginSection = Field(default_factory=LoginSection,
                                description="Failed log-ins of the device and central web UIs.")
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection,
                                          description="/metrics access and the fleet's health thresholds.")

    _source: str = PrivateAttr("")  # the file these values came from ("" for the built-in defaults)

    @property
    def source(self) -> str:
        return self._source


# --- loading ------------------------------------------------------------------------------------------------

def config_path(path: str | os.PathLike | None = None) -> Path | None:
    """The file to read: ``path``, else $ALLSCOPE_CONFIG, else the system file if it exists, else None."""
    if path:
        return Path(path)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def load_config(path: str | os.PathLike | None = None) -> AllscopeConfig:
    """The validated configuration; ConfigError with one line per problem. No file: the built-in defaults."""
    chosen = config_path(path)
    if chosen is None:
        return AllscopeConfig()
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{chosen}: no such configuration file"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{chosen}: cannot read ({getattr(error, 'strerror', None) or error})"]) from None
    return parse_config(text, str(chosen))


def parse_config(text: str, name: str = "allscope.toml") -> AllscopeConfig:
    """Validate TOML text; ``name`` prefixes every problem line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = match.group(1) if match else "1"
        raise ConfigError([f"{name}:{line}: TOML syntax: {re.sub(r' *[(]at line.*', '', message)}"]) from None
    try:
        config = AllscopeConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(problem_lines(name, text, error.errors(), AllscopeConfig)) from None
    config._source = name
    return config


def apply_central_config(args) -> AllscopeConfig:
    """Fill the central commands' flags left unset (``--data-dir``, ``--central-db``, ``--host``, ``--port``)
    from ``[central]`` of ``args.config`` (or the file in force); flags win. Returns the configuration."""
    config = load_config(getattr(args, "config", None))
    central = config.central
    for attr, value in (("data_dir", central.data_dir), ("central_db", central.database or None),
                        ("host", central.host), ("port", central.port)):
        if value is not None and getattr(args, attr, "absent") is None:
            setattr(args, attr, str(value) if isinstance(value, Path) else value)
    return config


# --- secrets ------------------------------------------------------------------------------------------------

def read_secret(credential: str, path: str | os.PathLike | None = None) -> bytes:
    """A secret from ``path`` if given, else from ``$CREDENTIALS_DIRECTORY/<credential>`` (systemd).

    The bytes are returned as stored (a trailing newline included). A key file other users can read is
    refused: the point of the key is that only the service user holds it.
    """
    if path is not None:
        source = Path(path)
        try:
            mode = source.stat().st_mode
        except FileNotFoundError:
            raise SecretError(f"{source}: no such key file (create it with allscope storage init-key)") from None
        if mode & 0o077:
            raise SecretError(f"{source}: readable by other users (run: chmod 600 {source})")
    elif os.environ.get(CREDENTIALS_ENV):
        source = Path(os.environ[CREDENTIALS_ENV]) / credential
        if not source.is_file():
            raise SecretError(f"systemd credential {credential!r} is missing from $CREDENTIALS_DIRECTORY "
                              f"(LoadCredential={credential}:FILE in the unit)")
    else:
        raise SecretError(f"no key: set storage.key_file, or run under systemd with "
                          f"LoadCredential={credential}:FILE")
    try:
        secret = source.read_bytes()
    except OSError as error:
        raise SecretError(f"{source}: cannot read ({error.strerror or error})") from None
    if not secret.strip():
        raise SecretError(f"{source}: the key file is empty")
    return secret
