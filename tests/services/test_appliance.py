"""The running appliance: one typed configuration, computed once (flag > stored > file > environment > default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.config.schema import AllscopeConfig, parse_config
from device.resources import DEFAULT_MODEL
from device.services.actor import Actor
from device.services.appliance import Appliance, settings_defaults
from device.services.settings import SettingsError


@pytest.fixture
def device(tmp_path, monkeypatch):
    monkeypatch.delenv("ALLSCOPE_MODEL", raising=False)
    made = []

    def make(config: AllscopeConfig | None = None, **options) -> Appliance:
        options.setdefault("start_workers", False)
        made.append(Appliance(config, data_dir=tmp_path / "var", **options))
        return made[-1]

    yield make
    for appliance in made:
        appliance.close()


def test_each_setting_follows_one_precedence(device, monkeypatch, tmp_path):
    model = str(DEFAULT_MODEL)  # a real model: a stored model_path is checked on save
    assert device().model_path == DEFAULT_MODEL and device().settings.idle_minutes == 10  # built-in defaults
    monkeypatch.setenv("ALLSCOPE_MODEL", "/env/model.tflite")
    assert device().model_path == Path("/env/model.tflite")  # environment > default
    config = parse_config('[inference]\nmodel = "/file/model.tflite"\n[ui]\nidle_minutes = 7\n')
    assert device(config).model_path == Path("/file/model.tflite")  # file > environment
    assert device(config).settings.idle_minutes == 7
    stored = device(config)
    stored.save_settings({"model_path": model, "idle_minutes": "3"}, Actor("admin", "127.0.0.1"))
    again = device(config)
    assert again.model_path == DEFAULT_MODEL and again.settings.idle_minutes == 3  # stored > file
    assert device(config, model="/flag/model.tflite").model_path == Path("/flag/model.tflite")  # flag > stored


def test_the_defaults_come_from_the_file_and_a_bad_one_is_left_out(monkeypatch):
    monkeypatch.delenv("ALLSCOPE_MODEL", raising=False)
    config = parse_config('[camera]\nbackend = "opencv"\nsource = "0"\n[analysis]\nreview_low = 0.2\n'
                          'threshold = 0.4\nreview_high = 0.9\n')
    assert settings_defaults(config) == {"camera_kind": "opencv", "camera_source": "0", "idle_minutes": 10,
                                         "max_upload_mb": 64, "review_low": 0.2, "threshold": 0.4,
                                         "review_high": 0.9, "target_white_cells": 200, "min_white_cells": 100}
    assert settings_defaults(AllscopeConfig(), "/flag.tflite")["model_path"] == "/flag.tflite"
    monkeypatch.setenv("ALLSCOPE_MODEL", "x" * 2000)  # longer than any path: ignored with a warning, not a crash
    assert "model_path" not in settings_defaults(AllscopeConfig())


def test_saving_settings_applies_them_and_tells_the_listeners(device):
    appliance = device()
    seen = []
    appliance.listeners.append(lambda settings, changed: seen.append((settings.threshold, changed)))
    saved = appliance.save_settings({"threshold": "0.45"}, Actor("admin"))
    assert saved.changed == {"threshold"} and saved.apply_problem == "" and not saved.restart_needed
    assert appliance.settings.threshold == 0.45 and seen == [(0.45, {"threshold"})]
    saved = appliance.save_settings({"camera_kind": "opencv"}, Actor("admin"))
    assert saved.restart_needed  # nothing runs here to take a camera change now
    with pytest.raises(SettingsError, match="Idle logout"):
        appliance.save_settings({"idle_minutes": "500"}, Actor("admin"))
    assert appliance.settings.idle_minutes == 10


def test_a_bad_camera_is_a_status_line_and_stop_stops_both(device):
    appliance = device(parse_config('[camera]\nbackend = "opencv"\nsource = "/dev/video-gone"\n'),
                       start_workers=True).start()
    try:
        assert appliance.worker is not None and appliance.worker.alive
        assert appliance.camera is not None and appliance.camera.name == "opencv"
        assert appliance.camera_status()  # one line, whatever the grabber says while it retries
        old = appliance.grabber
        appliance.start_camera("usb", None)  # a kind no camera backend knows
        assert not old.running and appliance.grabber is None and "usb" in appliance.camera_status()
    finally:
        appliance.stop()
    assert not appliance.worker.alive
