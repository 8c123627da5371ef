"""The configuration file: the documented example against the models, one-line errors, secrets, the CLI,
and `allscope serve --config` using what the file says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from pydantic import BaseModel

from device.config import schema as cfg
from device.config.schema import AllscopeConfig, ConfigError, SecretError, load_config, parse_config, read_secret

EXAMPLE = REPO_ROOT / "firmware_config" / "allscope.example.toml"
ALLSCOPE = [sys.executable, "-m", "device.cli"]


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch, tmp_path):
    """Tests see neither the caller's $ALLSCOPE_CONFIG nor a real /etc/allscope/allscope.toml."""
    monkeypatch.delenv(cfg.ENV_VAR, raising=False)
    monkeypatch.delenv(cfg.CREDENTIALS_ENV, raising=False)
    monkeypatch.setattr(cfg, "SYSTEM_CONFIG", tmp_path / "etc-allscope.toml")


def _sections() -> dict[str, type[BaseModel]]:
    return {name: info.annotation for name, info in AllscopeConfig.model_fields.items()}


def _documented_keys(text: str) -> tuple[dict[str, set[str]], str]:
    """Keys set or shown commented out (``# key = value``) per section, and the text with those uncommented."""
    keys: dict[str, set[str]] = {}
    section = ""
    uncommented = []
    fields = {name: set(model.model_fields) for name, model in _sections().items()}
    for line in text.splitlines():
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            section = header.group(1)
            keys.setdefault(section, set())
        assignment = re.match(r"^(#\s*)?(\w+)\s*=", line)
        if section and assignment and assignment.group(2) in fields.get(section, ()):
            keys[section].add(assignment.group(2))
            line = line.lstrip("#").lstrip()
        uncommented.append(line)
    return keys, "\n".join(uncommented) + "\n"


def test_example_file_validates_and_documents_every_field():
    text = EXAMPLE.read_text()
    config = load_config(EXAMPLE)
    assert config.source == str(EXAMPLE)
    # the appliance's choices, not the development defaults
    assert config.device.data_dir == Path("/var/lib/allscope")
    assert config.storage.encrypt_at_rest is True and config.storage.synchronous == "full"
    assert config.camera.backend == "picamera2"

    documented, uncommented = _documented_keys(text)
    for section, model in _sections().items():
        assert section in documented, f"[{section}] is missing from {EXAMPLE.name}"
        missing = set(model.model_fields) - documented[section]
        assert not missing, f"{EXAMPLE.name} does not document {section}.{', '.join(sorted(missing))}"
        # every key carries its documentation in the model too: description and a default
        for name, info in model.model_fields.items():
            assert info.description, f"{section}.{name} has no description"
            assert not info.is_required(), f"{section}.{name} has no default"
    # the commented-out examples are valid values too, and every value in the file is checked
    full = parse_config(uncommented, "uncommented.toml")
    assert full.analysis.overrides() == {"review_low": 0.25, "threshold": 0.5, "review_high": 0.75}
    assert full.inference.delegate_library and full.storage.key_file and full.central.data_dir
    assert set(tomllib.loads(uncommented)) == set(_sections())


def test_schema_documents_every_key():
    schema = AllscopeConfig.model_json_schema()
    camera = schema["$defs"]["CameraSection"]
    assert camera["additionalProperties"] is False
    assert camera["properties"]["backend"]["enum"] == ["replay", "opencv", "picamera2"]
    assert camera["properties"]["live_fps"]["exclusiveMinimum"] == 0
    assert schema["$defs"]["UISection"]["properties"]["idle_minutes"]["maximum"] == 120


def test_no_file_gives_the_built_in_defaults_and_env_var_and_system_file_are_found(tmp_path, monkeypatch):
    defaults = load_config()
    assert defaults.source == "" and defaults.device.data_dir is None and defaults.camera.backend == "replay"
    assert defaults.storage.encrypt_at_rest is False and defaults.ui.idle_minutes == 10

    system = tmp_path / "etc-allscope.toml"
    system.write_text("[ui]\nidle_minutes = 20\n")
    assert load_config().ui.idle_minutes == 20
    env_file = tmp_path / "env.toml"
    env_file.write_text("[ui]\nidle_minutes = 30\n")
    monkeypatch.setenv(cfg.ENV_VAR, str(env_file))
    assert load_config().ui.idle_minutes == 30
    flag_file = tmp_path / "flag.toml"
    flag_file.write_text("[ui]\nidle_minutes = 40\n")
    assert load_config(flag_file).ui.idle_minutes == 40
    with pytest.raises(ConfigError, match=r"missing\.toml: no such configuration file"):
        load_config(tmp_path / "missing.toml")


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "allscope.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


@pytest.mark.parametrize("text, expected", [
    ('[camera]\nsource = ""\nbackend = "usb"\n',
     "allscope.toml:3: camera.backend: must be one of replay, opencv, picamera2 (got 'usb')"),
    ("[device]\n# the port\nport = \"8080\"\n",
     "allscope.toml:3: device.port: must be a whole number (got '8080')"),
    ("[sync]\nenabled = 1\n", "allscope.toml:2: sync.enabled: must be true or false (got 1)"),
    ("[ui]\nidle_minutes = 500\n", "allscope.toml:2: ui.idle_minutes: must be between 1 and 120 (got 500)"),
    ("[camera]\nlive_fps = 0\n", "allscope.toml:2: camera.live_fps: must be between 0 and 30 (got 0)"),
    ("\n[camera]\nbackend = \"replay\"\nframerate = 5\n",
     "allscope.toml:4: camera.framerate: unknown key (known: backend, source, width, height, live_fps, "
     "live_max_width)"),
    ("[cammera]\nbackend = \"replay\"\n",
     "allscope.toml:1: cammera: unknown section (known: device, camera, inference, analysis, ui, review, storage, sync, "
     "central, login, monitoring); did you mean camera?"),
    ("[inference]\ndelegate = \"external\"\n",
     "allscope.toml:1: inference.delegate_library: required when delegate = \"external\""),
    ("[analysis]\nreview_low = 0.3\nthreshold = 0.2\nreview_high = 0.8\n",
     "allscope.toml:3: analysis.threshold: must not be below analysis.review_low (0.3)"),
    ("[analysis]\nthreshold = 0.4\n",
     "allscope.toml:1: analysis.review_high: set review_low, threshold and review_high together (or none: the "
     "model card's); missing review_low, review_high"),
    ("ui = 3\n", "allscope.toml:1: ui: must be a table (got 3)"),
    ("[sync]\nbroker = \"broker.example\"\n", "allscope.toml:2: sync.broker: must be HOST:PORT (got "
                                              "'broker.example')"),
    ("[ui\nidle_minutes = 3\n", "allscope.toml:1: TOML syntax: Expected ']' at the end of a table declaration"),
])
def test_each_problem_is_one_line_with_file_line_and_dotted_key(tmp_path, text, expected):
    problems = _problems(tmp_path, text)
    assert problems == [f"{tmp_path}/{expected}"]


def test_several_problems_each_get_their_line_in_file_order(tmp_path):
    problems = _problems(tmp_path, '[ui]\nidle_minutes = 0\nmax_upload_mb = 10\n\n[camera]\nbackend = "usb"\n'
                                   '[ui.extra]\n')
    assert [p.split(": ", 2)[:2] for p in problems] == [
        [f"{tmp_path}/allscope.toml:2", "ui.idle_minutes"],
        [f"{tmp_path}/allscope.toml:6", "camera.backend"],
        [f"{tmp_path}/allscope.toml:7", "ui.extra"],
    ]
    assert all("\n" not in p for p in problems)


def test_secrets_are_refused_in_the_file_and_never_echoed(tmp_path):
    (problem,) = _problems(tmp_path, '[storage]\nencrypt_at_rest = true\nkey = "hunter2hunter2"\n')
    assert problem.startswith(f"{tmp_path}/allscope.toml:3: storage.key: secrets do not belong in the config file")
    assert "hunter2" not in problem
    (problem,) = _problems(tmp_path, '[central]\ndatabase = "postgresql://allscope:hunter2@db/central"\n')
    assert problem.startswith(f"{tmp_path}/allscope.toml:2: central.database: no password in the config file")
    assert "hunter2" not in problem


def test_secret_from_a_key_file(tmp_path):
    key = tmp_path / "db.key"
    key.write_bytes(b"0123456789abcdef" * 4 + b"\n")
    key.chmod(0o600)
    config = parse_config(f'[storage]\nencrypt_at_rest = true\nkey_file = "{key}"\n')
    assert config.storage.key_bytes() == b"0123456789abcdef" * 4 + b"\n"
    key.chmod(0o640)
    with pytest.raises(SecretError, match=r"readable by other users \(run: chmod 600 .*db.key\)"):
        config.storage.key_bytes()
    with pytest.raises(SecretError, match="no such key file"):
        read_secret("allscope-db-key", tmp_path / "absent.key")
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"\n")
    empty.chmod(0o600)
    with pytest.raises(SecretError, match="empty"):
        read_secret("allscope-db-key", empty)


def test_secret_from_the_systemd_credentials_directory(tmp_path, monkeypatch):
    config = parse_config("[storage]\nencrypt_at_rest = true\n")
    with pytest.raises(SecretError, match="LoadCredential=allscope-db-key:FILE"):
        config.storage.key_bytes()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    with pytest.raises(SecretError, match="'allscope-db-key' is missing from \\$CREDENTIALS_DIRECTORY"):
        config.storage.key_bytes()
    (credentials / "allscope-db-key").write_bytes(b"systemd-passed-key")
    assert config.storage.key_bytes() == b"systemd-passed-key"
    named = parse_config('[storage]\nkey_credential = "fleet-key"\n')
    (credentials / "fleet-key").write_bytes(b"other")
    assert named.storage.key_bytes() == b"other"


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in (cfg.ENV_VAR, "ALLSCOPE_DATA_DIR")}
    environment.update(env or {})
    return subprocess.run([*ALLSCOPE, *args], capture_output=True, text=True, cwd=REPO_ROOT, env=environment,
                          timeout=60)


def test_config_check_and_show_as_real_processes(tmp_path):
    good = _run("config", "check", str(EXAMPLE))
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith(f"ok: {EXAMPLE}\n") and "picamera2" in good.stdout
    assert "systemd credential allscope-db-key" in good.stdout

    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('[camera]\nbackend = "usb"\n[ui]\nidle_minutes = 0\n')
    bad = _run("config", "check", str(bad_file))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        f"{bad_file}:2: camera.backend: must be one of replay, opencv, picamera2 (got 'usb')",
        f"{bad_file}:4: ui.idle_minutes: must be between 1 and 120 (got 0)"]
    # FILE defaults to $ALLSCOPE_CONFIG
    by_env = _run("config", "check", env={cfg.ENV_VAR: str(bad_file)})
    assert by_env.returncode == 2 and "camera.backend" in by_env.stderr

    # show prints the effective configuration as TOML that reads back to the same values
    shown = _run("config", "show", str(EXAMPLE))
    assert shown.returncode == 0, shown.stderr
    assert parse_config(shown.stdout).model_dump() == load_config(EXAMPLE).model_dump()
    assert "# key_file = (unset)" in shown.stdout
