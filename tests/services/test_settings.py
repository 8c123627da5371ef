"""Device settings: defaults, one-line errors that name the key, all-or-nothing saves, audit, real model checks."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO_ROOT

from device.core.decision import DecisionSettings
from device.services.settings import DeviceSettings, SettingsError, decision_settings, field_errors
from device.store.records import AuditEvent, Setting

SHIPPED_MODEL = REPO_ROOT / "models" / "allscope_blast_int8.tflite"


@pytest.fixture
def db(app):
    with app.app_context():
        yield


def settings_events():
    return list(AuditEvent.select().where(AuditEvent.entity == "settings").order_by(AuditEvent.id))


def test_defaults_match_the_decision_defaults_and_can_be_overridden(db):
    current = DeviceSettings.load()
    assert current.decision() == DecisionSettings()
    assert current.camera_kind == "replay" and current.model_path == "" and current.idle_minutes == 10
    assert DeviceSettings.load({"idle_minutes": 3, "bogus": 1}).idle_minutes == 3
    assert decision_settings() == DecisionSettings()


def test_save_coerces_form_text_stores_json_and_audits_only_changed_keys(db):
    updated = DeviceSettings.save({"threshold": "0.4", "review_low": " 0.2 ", "idle_minutes": "15",
                                   "camera_kind": "replay"}, actor="admin", address="10.0.0.5")
    assert (updated.threshold, updated.review_low, updated.idle_minutes) == (0.4, 0.2, 15)
    assert DeviceSettings.load() == updated
    assert Setting.get_by_id("threshold").value == 0.4 and Setting.get_by_id("threshold").updated_by == "admin"
    assert not Setting.select().where(Setting.key == "camera_kind").exists()  # unchanged: not written
    [event] = settings_events()
    assert event.action == "update" and event.username == "admin" and event.address == "10.0.0.5"
    assert event.before == {"threshold": 0.5, "review_low": 0.25, "idle_minutes": 10}
    assert event.after == {"threshold": 0.4, "review_low": 0.2, "idle_minutes": 15}
    assert decision_settings() == DecisionSettings(0.4, 0.2, 0.75)


def test_saving_the_same_values_writes_no_audit_event(db):
    DeviceSettings.save({"threshold": 0.5, "idle_minutes": 10}, actor="admin")
    assert settings_events() == []


@pytest.mark.parametrize("changes, key, words", [
    ({"threshold": "1.5"}, "threshold", "between 0 and 1"),
    ({"threshold": "abc"}, "threshold", "must be a number"),
    ({"threshold": "nan"}, "threshold", "between 0 and 1"),
    ({"review_high": True}, "review_high", "must be a number"),
    ({"idle_minutes": "0"}, "idle_minutes", "between 1 and 120"),
    ({"idle_minutes": "2.5"}, "idle_minutes", "whole number"),
    ({"max_upload_mb": 600}, "max_upload_mb", "between 1 and 512"),
    ({"camera_kind": "webcam"}, "camera_kind", "replay, opencv, picamera2"),
    ({"camera_source": "a\nb"}, "camera_source", "one line"),
    ({"camera_source": "/no/such/folder"}, "camera_source", "no such folder"),
    ({"model_path": "/no/such/model.tflite"}, "model_path", "model file not found"),
    ({"model_path": "models/x.tflite"}, "model_path", "full path"),
    ({"review_low": "0.6"}, "review_low", "above the decision threshold"),
    ({"threshold": "0.9"}, "threshold", "above the review band's high end"),
    ({"colour": "red"}, "colour", "no such setting"),
])
def test_each_bad_value_is_one_line_naming_its_key(db, changes, key, words):
    with pytest.raises(SettingsError) as caught:
        DeviceSettings.save(changes, actor="admin")
    assert caught.value.key == key
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert isinstance(caught.value, ValueError)


def test_a_bad_key_among_good_ones_changes_nothing(db):
    with pytest.raises(SettingsError) as caught:
        DeviceSettings.save({"threshold": "0.45", "idle_minutes": "20", "max_upload_mb": "9999"}, actor="admin")
    assert caught.value.key == "max_upload_mb"
    assert Setting.select().where(Setting.updated_by != "test").count() == 0 and settings_events() == []
    # the combination is checked after each value: a band that no longer holds also changes nothing
    with pytest.raises(SettingsError):
        DeviceSettings.save({"idle_minutes": "20", "review_low": "0.3", "review_high": "0.2"}, actor="admin")
    assert Setting.select().where(Setting.updated_by != "test").count() == 0 and settings_events() == []


def test_field_errors_reports_every_bad_field_at_once(db):
    errors = field_errors({"threshold": "2", "idle_minutes": "x", "camera_kind": "replay"})
    assert set(errors) == {"threshold", "idle_minutes"}
    assert errors["threshold"].startswith("Decision threshold:")


def test_model_path_accepts_a_real_allscope_model_and_refuses_other_files(db, tmp_path):
    copy = tmp_path / "model copy.tflite"
    shutil.copy(SHIPPED_MODEL, copy)
    assert DeviceSettings.save({"model_path": str(copy)}, actor="admin").model_path == str(copy)
    not_a_model = tmp_path / "notes.tflite"
    not_a_model.write_bytes(b"hello world, not a flatbuffer")
    with pytest.raises(SettingsError, match="not a TFLite model"):
        DeviceSettings.save({"model_path": str(not_a_model)}, actor="admin")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(SHIPPED_MODEL.read_bytes()[:4096])
    with pytest.raises(SettingsError, match="no allscope metadata"):
        DeviceSettings.save({"model_path": str(truncated)}, actor="admin")
    assert DeviceSettings.load().model_path == str(copy)


def test_a_replay_folder_that_exists_is_accepted(db, tmp_path):
    updated = DeviceSettings.save({"camera_kind": "replay", "camera_source": str(tmp_path)}, actor="admin")
    assert updated.camera_source == str(tmp_path)
    # other kinds take device indexes, paths or pipelines without a folder check
    pipeline = "libcamerasrc ! video/x-raw,width=1920,height=1080 ! videoconvert ! appsink"
    assert DeviceSettings.save({"camera_kind": "opencv", "camera_source": pipeline}, actor="admin").camera_source \
        == pipeline


def test_load_falls_back_to_defaults_for_stored_values_that_no_longer_fit(db):
    Setting.create(key="idle_minutes", value="forever")
    Setting.create(key="review_low", value=0.9)  # above the threshold: the band is reset as a whole
    current = DeviceSettings.load()
    assert current.idle_minutes == 10 and current.decision() == DecisionSettings()
