"""The commands take their settings from the configuration file: serve, sync run, the central commands (real processes where it matters)."""

from __future__ import annotations

import http.cookiejar
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TEST_PASSWORD, csrf_from, free_port, stop_process, wait_until_serving

from device.config import schema as cfg
from device.config.schema import parse_config

ALLSCOPE = [sys.executable, "-m", "device.cli"]


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch, tmp_path):
    """Tests see neither the caller's $ALLSCOPE_CONFIG nor a real /etc/allscope/allscope.toml."""
    monkeypatch.delenv(cfg.ENV_VAR, raising=False)
    monkeypatch.delenv(cfg.CREDENTIALS_ENV, raising=False)
    monkeypatch.setattr(cfg, "SYSTEM_CONFIG", tmp_path / "etc-allscope.toml")


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in (cfg.ENV_VAR, "ALLSCOPE_DATA_DIR")}
    environment.update(env or {})
    return subprocess.run([*ALLSCOPE, *args], capture_output=True, text=True, cwd=REPO_ROOT, env=environment,
                          timeout=60)


def test_serve_uses_the_config_file(tmp_path, users_database):
    """Data dir, port and idle logout from the file; the environment's data dir loses to it."""
    data_dir = tmp_path / "configured-var"
    data_dir.mkdir()
    shutil.copyfile(users_database, data_dir / "allscope.db")
    port = free_port()
    config_file = tmp_path / "allscope.toml"
    config_file.write_text(f'[device]\ndata_dir = "{data_dir}"\nport = {port}\n\n[ui]\nidle_minutes = 7\n')
    elsewhere = tmp_path / "env-var"
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != cfg.ENV_VAR}
    env["ALLSCOPE_DATA_DIR"] = str(elsewhere)
    with open(log_path, "w") as log:
        process = subprocess.Popen([*ALLSCOPE, "serve", "--config", str(config_file)], stdout=log, stderr=log,
                                   cwd=REPO_ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, base + "/login", log_path)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(base + "/login", timeout=10) as response:
            token = csrf_from(response.read().decode())
        form = urllib.parse.urlencode({"csrf_token": token, "username": "tech", "password": TEST_PASSWORD,
                                       "next": ""}).encode()
        with opener.open(urllib.request.Request(base + "/login", data=form, headers={"Referer": base + "/login"}),
                         timeout=30) as response:
            page = response.read().decode()
        # the login worked only because the server uses the configured data dir (its database holds "tech")
        assert 'data-idle-minutes="7"' in page
    finally:
        stop_process(process)
    output = log_path.read_text()
    assert f"configuration from {config_file}" in output and f"data in {data_dir}" in output
    assert (data_dir / "secret_key").is_file()
    assert not elsewhere.exists()


def test_serve_flags_beat_the_file_and_a_bad_file_stops_it_in_one_line(tmp_path):
    flag_dir = tmp_path / "flag-var"
    config_file = tmp_path / "allscope.toml"
    config_file.write_text(f'[device]\ndata_dir = "{tmp_path / "file-var"}"\nport = 1\n')
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([*ALLSCOPE, "serve", "--config", str(config_file), "--data-dir", str(flag_dir),
                                    "--port", str(port)], stdout=log, stderr=log, cwd=REPO_ROOT)
    try:
        wait_until_serving(process, f"http://127.0.0.1:{port}/login", log_path)
    finally:
        stop_process(process)
    assert (flag_dir / "allscope.db").is_file() and not (tmp_path / "file-var").exists()

    config_file.write_text('[device]\nport = 70000\n')
    bad = _run("serve", "--config", str(config_file))
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"allscope: {config_file}:2: device.port: must be between 1 and 65535 (got 70000)"


def test_the_web_app_runs_its_services_as_configured(tmp_path):
    """Camera live-view limits, inference delegate and threads, and the decision band reach the services."""
    from device.inference.delegates import DelegateConfig
    from webui.app import create_app

    config = parse_config('[camera]\nlive_fps = 2.5\nlive_max_width = 640\n'
                          '[inference]\nthreads = 3\nwatchdog_seconds = 12\n'
                          '[analysis]\nreview_low = 0.2\nthreshold = 0.4\nreview_high = 0.9\n[ui]\nmax_upload_mb = 9\n')
    app = create_app(config, data_dir=tmp_path / "var", start_workers=True)
    try:
        grabber = app.appliance.grabber
        assert grabber.max_width == 640 and grabber.interval == pytest.approx(1 / 2.5)
        worker = app.appliance.worker
        assert worker.delegate == DelegateConfig(kind="cpu", num_threads=3) and worker.watchdog_seconds == 12
        assert (worker.decision.review_low, worker.decision.threshold, worker.decision.review_high) == (0.2, 0.4, 0.9)
        assert app.config["MAX_CONTENT_LENGTH"] == 9 * 1024 * 1024
    finally:
        app.appliance.stop()


def test_serve_applies_storage_and_listen_settings_in_process(tmp_path, monkeypatch):
    """synchronous from [storage] reaches the database connection; host/port from the file unless flagged."""
    import waitress

    from device.store import atrest
    from webui import server

    served = {}

    def fake_serve(app, host, port, **_options):
        served.update(host=host, port=port, app=app)
        with app.app_context():
            served["synchronous"] = app.appliance.database.execute_sql("PRAGMA synchronous").fetchone()[0]

    monkeypatch.setattr(waitress, "serve", fake_serve)
    monkeypatch.setattr("signal.signal", lambda *_args: None)  # leave pytest's own SIGTERM handling alone
    config_file = tmp_path / "allscope.toml"
    config_file.write_text(f'[device]\ndata_dir = "{tmp_path / "var"}"\nhost = "0.0.0.0"\nport = 8181\n'
                           '[storage]\nsynchronous = "normal"\n')
    try:
        assert server.serve(None, config=str(config_file)) == 0
        assert (served["host"], served["port"], served["synchronous"]) == ("0.0.0.0", 8181, 1)  # 1 = NORMAL
        assert served["app"].appliance.data.root == tmp_path / "var"
        config_file.write_text(f'[device]\ndata_dir = "{tmp_path / "var"}"\n')
        assert server.serve(None, host="127.0.0.2", port=8282, config=str(config_file)) == 0
        assert (served["host"], served["port"], served["synchronous"]) == ("127.0.0.2", 8282, 2)  # 2 = FULL
    finally:
        atrest.reset()


def _fake_enrolment(data_dir: Path, **agent_settings) -> None:
    """The files `allscope device enrol` installs (presence is all the settings loader checks)."""
    import json

    from sync.agent.config import BUNDLE_FILES, SIGNING_KEY

    sync_dir = data_dir / "sync"
    sync_dir.mkdir(parents=True)
    (sync_dir / "bundle.json").write_text(json.dumps({"device_id": "scope-01", "broker_host": "broker.lab",
                                                      "broker_port": 8883}))
    for name in BUNDLE_FILES + (SIGNING_KEY,):
        (sync_dir / name).write_text("placeholder")
    if agent_settings:
        (sync_dir / "agent.json").write_text(json.dumps(agent_settings))


def test_sync_run_takes_its_settings_from_the_config_file(tmp_path, monkeypatch):
    """[sync] beats sync/agent.json, a flag beats [sync]; device.data_dir and sync.broker apply too."""
    from device.cli import main as cli
    from sync.agent import service as agent

    data_dir = tmp_path / "var"
    _fake_enrolment(data_dir, media="none", max_message_bytes=100_000, window=7)
    started = []
    monkeypatch.setattr(agent, "run_agent", lambda config, until_empty=False: started.append(config) or 0)
    config_file = tmp_path / "allscope.toml"
    config_file.write_text(f'[device]\ndata_dir = "{data_dir}"\n[sync]\nmedia = "frames"\n'
                           'max_message_bytes = 65536\nbroker = "10.0.0.5:18883"\n')
    try:
        assert cli.main(["sync", "run", "--config", str(config_file)]) == 0
        assert cli.main(["sync", "run", "--config", str(config_file), "--media", "crops"]) == 0
        config_file.write_text(f'[device]\ndata_dir = "{data_dir}"\n')
        assert cli.main(["sync", "run", "--config", str(config_file)]) == 0
    finally:
        from device.store import atrest

        atrest.reset()
    from_file, flagged, agent_json = started
    assert (from_file.data_dir, from_file.media, from_file.max_message_bytes) == (data_dir, "frames", 65536)
    assert (from_file.broker_host, from_file.broker_port, from_file.window) == ("10.0.0.5", 18883, 7)
    assert flagged.media == "crops" and flagged.max_message_bytes == 65536
    # keys the file leaves out keep agent.json's values and the bundle's broker
    assert (agent_json.media, agent_json.max_message_bytes, agent_json.broker_host) == ("none", 100_000, "broker.lab")


def test_sync_run_as_a_process_disabled_or_not_enrolled(tmp_path):
    config_file = tmp_path / "allscope.toml"
    config_file.write_text("[sync]\nenabled = false\n")
    disabled = _run("sync", "run", "--config", str(config_file))
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.strip() == f"allscope sync: disabled (sync.enabled = false in {config_file})"

    data_dir = tmp_path / "configured-var"
    config_file.write_text(f'[device]\ndata_dir = "{data_dir}"\n[sync]\nmedia = "crops"\n')
    not_enrolled = _run("sync", "run", "--config", str(config_file))
    assert not_enrolled.returncode == 2
    assert not_enrolled.stderr.startswith(f"allscope: this device is not enrolled ({data_dir}/sync/bundle.json is "
                                          f"missing)")

    config_file.write_text('[sync]\nmedia = "all"\n')
    bad = _run("sync", "run", "--config", str(config_file))
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"allscope: {config_file}:2: sync.media: must be one of frames, crops, none (got 'all')"


def test_central_commands_take_their_defaults_from_the_central_section(tmp_path, monkeypatch, capsys):
    import waitress

    from device.cli import main as cli

    central_dir = tmp_path / "central-var"
    config_file = tmp_path / "allscope.toml"
    config_file.write_text(f'[central]\ndata_dir = "{central_dir}"\nhost = "0.0.0.0"\nport = 8191\n')
    # central run: the data directory (and so the PKI inside it) comes from the file
    assert cli.main(["central", "run", "--config", str(config_file)]) == 2
    assert f"no fleet PKI in {central_dir}/pki" in capsys.readouterr().err

    served = {}
    monkeypatch.setattr(waitress, "serve", lambda app, host, port, **_: served.update(app=app, host=host, port=port))
    monkeypatch.setattr("signal.signal", lambda *_args: None)
    assert cli.main(["central", "serve", "--config", str(config_file)]) == 0
    assert (served["host"], served["port"]) == ("0.0.0.0", 8191)
    assert served["app"].central.data.root == central_dir and (central_dir / "central.db").is_file()
    flag_db = tmp_path / "flag.db"
    assert cli.main(["central", "serve", "--config", str(config_file), "--port", "8192",
                     "--central-db", str(flag_db)]) == 0
    assert served["port"] == 8192 and flag_db.is_file()
