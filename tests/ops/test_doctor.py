"""`allscope doctor`: real camera (replay), real shipped model, real SQLite, real PKI and mosquitto.

Each test builds the setup it names (a good one, a missing camera source, a corrupt model, an
enrolled device whose broker goes down, ...) in a temporary data directory and reads the doctor's
own output: the CLI's lines and exit status, or the checks' results from ``run_checks``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from device.cli.doctor import (
    FAIL,
    PASS,
    SKIP,
    WARN,
    Context,
    check_certificates,
    check_clock,
    load_settings,
    run_checks,
)
from device.inference.model_info import read_model_info
from device.resources import DEFAULT_MODEL
from device.store.records import Patient, open_database

DEMO = REPO_ROOT / "device" / "demo"


def write_config(tmp_path: Path, *, data_dir: Path, camera_source: Path | str = DEMO, model: Path | None = None,
                 extra: str = "") -> Path:
    lines = ["[device]", f'data_dir = "{data_dir}"', "", "[camera]", 'backend = "replay"',
             f'source = "{camera_source}"', ""]
    if model is not None:
        lines += ["[inference]", f'model = "{model}"', ""]
    path = tmp_path / "allscope.toml"
    path.write_text("\n".join(lines) + extra)
    return path


@pytest.fixture
def data_dir(tmp_path):
    """A data directory with a real, migrated database holding one patient."""
    path = tmp_path / "var"
    database = open_database(path / "allscope.db")
    Patient.create(identifier="P-DOC", name="Doctor Test")
    database.close()
    return path


def doctor(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLSCOPE_")}
    return subprocess.run([sys.executable, "-m", "device.cli", "doctor", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=120)


def by_name(results) -> dict:
    return {r.name: r for r in results}


def test_good_setup_passes_and_exits_0(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir=data_dir)
    run = doctor("--config", str(config))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = {line.split()[1]: line for line in run.stdout.splitlines()[:-1]}
    assert list(lines) == ["config", "camera", "model", "delegate", "disk", "clock", "database", "certificate",
                           "broker", "broker-files"]
    for name in ("config", "camera", "model", "delegate", "database"):
        assert lines[name].startswith("PASS"), lines[name]
    assert str(config) in lines["config"]
    assert "one frame" in lines["camera"]
    size = read_model_info(DEFAULT_MODEL).provenance["input_size"]  # the shipped model's own input
    assert "sha256 " in lines["model"] and f"input {size}x{size} px" in lines["model"]
    assert "ms per inference (20 runs)" in lines["delegate"] and "cpu-xnnpack" in lines["delegate"]
    assert "integrity_check ok" in lines["database"]
    assert lines["disk"].split()[0] in (PASS, WARN)  # depends on the machine's free space, never a FAIL
    assert lines["certificate"].startswith("SKIP") and lines["broker"].startswith("SKIP")
    summary = run.stdout.splitlines()[-1]
    assert summary in ("7 pass, 3 skip", "6 pass, 1 warn, 3 skip"), summary
    assert run.stderr == ""

    as_json = json.loads(doctor("--config", str(config), "--json").stdout)
    assert as_json["ok"] is True
    checks = {c["name"]: c for c in as_json["checks"]}
    assert checks["delegate"]["data"]["latency_ms"] > 0 and checks["model"]["data"]["input_size"] == size


def test_missing_camera_source_fails_with_what_to_fix(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir=data_dir, camera_source=tmp_path / "no-such-folder")
    run = doctor("--config", str(config))
    assert run.returncode == 1
    camera = [line for line in run.stdout.splitlines() if line.split()[1] == "camera"]
    assert len(camera) == 1 and camera[0].startswith("FAIL")
    assert "no-such-folder does not exist" in camera[0] and "-> check camera.backend and camera.source" in camera[0]
    assert "fix the FAIL lines above" in run.stdout
    assert [line.split()[0] for line in run.stdout.splitlines()[2:4]] == [PASS, PASS]  # model and delegate still run


def test_corrupt_model_fails_and_the_delegate_is_skipped(tmp_path, data_dir):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(os.urandom(4096))
    results = by_name(run_checks(str(write_config(tmp_path, data_dir=data_dir, model=bad))))
    assert results["model"].status == FAIL and "broken.tflite" in results["model"].detail
    assert "\n" not in results["model"].detail and results["model"].fix
    assert results["delegate"].status == SKIP
    assert results["camera"].status == PASS and results["database"].status == PASS


def test_a_configured_accelerator_that_is_absent_warns_and_names_the_cpu_fallback(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir=data_dir, extra='[inference]\ndelegate = "edgetpu"\n')
    delegate = by_name(run_checks(str(config)))["delegate"]
    assert delegate.status == WARN  # no Edge TPU here: this is the real fallback path
    assert "configured edgetpu not in use" in delegate.detail and "cpu-xnnpack" in delegate.detail
    assert delegate.data["backend"].startswith("cpu-xnnpack") and delegate.data["latency_ms"] > 0


def test_damaged_database_fails_the_integrity_check(tmp_path, data_dir):
    database = open_database(data_dir / "allscope.db")
    Patient.insert_many([{"identifier": f"P-{i}", "name": "x" * 200} for i in range(400)]).execute()
    database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    database.close()
    path = data_dir / "allscope.db"
    raw = bytearray(path.read_bytes())
    page = 4096
    assert len(raw) > 8 * page
    for offset in range(3 * page, len(raw) - page, page):  # wreck every page after the schema's
        raw[offset + 8:offset + 200] = os.urandom(192)
    path.write_bytes(bytes(raw))
    results = by_name(run_checks(str(write_config(tmp_path, data_dir=data_dir))))
    assert results["database"].status == FAIL and "allscope backup restore" in results["database"].fix


def test_missing_database_and_data_dir_warn_without_creating_anything(tmp_path):
    data_dir = tmp_path / "not-yet"
    results = by_name(run_checks(str(write_config(tmp_path, data_dir=data_dir))))
    assert results["database"].status == WARN and results["disk"].status == WARN
    assert not data_dir.exists()


def test_invalid_configuration_fails_and_skips_the_rest(tmp_path, data_dir):
    config = tmp_path / "allscope.toml"
    config.write_text("[camera\nbackend = 'replay'\n")
    run = doctor("--config", str(config))
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[0].startswith("FAIL  config") and str(config) in lines[0]
    assert all(line.startswith("SKIP") for line in lines[1:-1]) and len(lines) == 11


def test_clock_before_2025_fails_and_unsynchronised_ntp_warns(tmp_path, data_dir):
    ctx = Context(*load_settings(write_config(tmp_path, data_dir=data_dir)))
    utc = dt.UTC
    assert check_clock(ctx, now=dt.datetime(1970, 1, 1, tzinfo=utc), ntp=lambda: True).status == FAIL
    assert check_clock(ctx, now=dt.datetime(2026, 3, 1, tzinfo=utc), ntp=lambda: False).status == WARN
    synced = check_clock(ctx, now=dt.datetime(2026, 3, 1, tzinfo=utc), ntp=lambda: True)
    assert synced.status == PASS and "NTP-synchronised" in synced.detail


def _enrol(pki, data_dir: Path, tmp_path: Path, host: str, port: int) -> None:
    from sync.fleet.enrol import install_bundle, write_bundle

    write_bundle(pki, "dev-doctor", tmp_path / "bundle", broker_host=host, broker_port=port)
    install_bundle(tmp_path / "bundle", data_dir)


def test_enrolled_device_broker_up_then_down(tmp_path, data_dir, pki, mqtt_broker):
    _enrol(pki, data_dir, tmp_path, mqtt_broker.host, mqtt_broker.port)
    config = str(write_config(tmp_path, data_dir=data_dir))
    up = by_name(run_checks(config))
    assert up["broker"].status == PASS, up["broker"].line()
    assert f"{mqtt_broker.host}:{mqtt_broker.port}: mutual TLS and MQTT connect ok" in up["broker"].detail
    assert up["certificate"].status == PASS and "days)" in up["certificate"].detail

    mqtt_broker.stop()
    run = doctor("--config", config)
    assert run.returncode == 1
    broker = [line for line in run.stdout.splitlines() if line.split()[1] == "broker"][0]
    assert broker.startswith("FAIL") and "unreachable" in broker and "-> is the broker running" in broker


def test_certificate_expiry_warns_30_days_ahead_and_fails_after(tmp_path, data_dir, pki):
    from sync.fleet.pki import load_certificate

    _enrol(pki, data_dir, tmp_path, "127.0.0.1", 8883)
    ctx = Context(*load_settings(write_config(tmp_path, data_dir=data_dir)))
    until = min(load_certificate(data_dir / "sync" / name).not_valid_after_utc for name in ("device.crt", "ca.crt"))
    assert check_certificates(ctx, now=until - dt.timedelta(days=90)).status == PASS
    soon = check_certificates(ctx, now=until - dt.timedelta(days=10))
    assert soon.status == WARN and "(10 days)" in soon.detail
    assert check_certificates(ctx, now=until + dt.timedelta(days=1)).status == FAIL


def test_each_configuration_problem_is_a_fail_line_naming_the_key(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir=data_dir, extra='[inference]\nthreads = 0\n')
    config.write_text(config.read_text().replace('backend = "replay"', 'backend = "usb"'))
    results = run_checks(str(config))
    problems = [r for r in results if r.name == "config"]
    assert [r.status for r in problems] == [FAIL, FAIL]
    assert any("camera.backend" in r.detail and ":5:" in r.detail for r in problems), [r.detail for r in problems]
    assert any("inference.threads" in r.detail for r in problems)
    assert {r.status for r in results if r.name != "config"} == {SKIP}


def test_a_hung_driver_call_is_reported_not_waited_for():
    import threading
    import time

    from device.cli.doctor import with_timeout
    from device.errors import AllscopeError

    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(AllscopeError, match="camera x did not answer within 0.3 s"):
        with_timeout(lambda: release.wait(30), 0.3, "camera x")
    assert time.monotonic() - started < 5
    release.set()
    assert with_timeout(lambda: 42, 5, "quick") == 42
