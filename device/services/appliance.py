"""The running appliance: one typed object holding what the device web UI (and any other front end) runs on.

    appliance = Appliance(load_config(), data_dir=flag_or_none, model=flag_or_none, start_workers=True)
    appliance.start()                 # the analysis worker and the camera grabber (when start_workers)
    appliance.settings                # the DeviceSettings in force
    appliance.model_path              # the model file in force
    appliance.save_settings({"threshold": "0.4"}, Actor("ana", "10.0.0.7"))   # store, audit, apply
    appliance.stop()

The configuration is computed once, here, with one precedence for every
setting: a command-line flag > the setting an admin saved in the database >
the configuration file > the environment > the built-in default. The flags,
the file and the environment make the defaults (:func:`settings_defaults`);
the stored settings override them (``DeviceSettings.load``); a flag given at
start (``--model``) wins over both. The settings in force are read once at
start and replaced by :meth:`Appliance.save_settings`, which also applies a
change to the running services (decision thresholds and model to the worker,
camera kind and source to a restarted grabber) and then tells the
``listeners`` (the web UI's own: its upload limit).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from device.config.schema import AllscopeConfig
from device.resources import model_in_force
from device.services.actor import Actor
from device.services.decode_budget import DecodeBudget
from device.services.disk_guard import DiskGuard
from device.services.settings import DeviceSettings, valid_defaults
from device.store.datadir import DataDir
from device.store.records import open_database

log = logging.getLogger(__name__)

DECISION_KEYS = frozenset({"threshold", "review_low", "review_high"})
CAMERA_KEYS = frozenset({"camera_kind", "camera_source"})
RESTART_KEYS = frozenset({"model_path"}) | CAMERA_KEYS  # read by the services when they start

SettingsListener = Callable[[DeviceSettings, set], None]


def settings_defaults(config: AllscopeConfig, model_flag: str | os.PathLike | None = None) -> dict[str, Any]:
    """The settings' defaults on this device: a flag > the configuration file > the environment > built-in.

    Only the values these sources set; ``DeviceSettings`` has the built-in ones. The stored settings then
    override these (``DeviceSettings.load(defaults)``).
    """
    out: dict[str, Any] = {"camera_kind": config.camera.backend, "camera_source": config.camera.source,
                           "idle_minutes": config.ui.idle_minutes, "max_upload_mb": config.ui.max_upload_mb,
                           "target_white_cells": config.review.target_white_cells,
                           "min_white_cells": config.review.min_white_cells,
                           **config.analysis.overrides()}
    model = model_flag or config.inference.model or os.environ.get("ALLSCOPE_MODEL")
    if model:
        out["model_path"] = str(model)
    return valid_defaults(out)


@dataclass(frozen=True)
class SettingsSaved:
    """What :meth:`Appliance.save_settings` did: the settings now in force, the keys that changed, and the
    first failure to apply them to the running services as one line ("" when none failed)."""

    settings: DeviceSettings
    changed: frozenset[str]
    apply_problem: str = ""
    restart_needed: bool = False  # model or camera changed while no service runs to take them now


class Appliance:
    """Data directory, database, the settings in force, the analysis worker and the camera grabber."""

    def __init__(self, config: AllscopeConfig | None = None, *, data_dir: str | os.PathLike | None = None,
                 model: str | os.PathLike | None = None, start_workers: bool = True):
        self.config = config if config is not None else AllscopeConfig()
        self.model_flag = Path(model) if model else None
        self.start_workers = start_workers
        self.data = DataDir.resolve(data_dir or self.config.device.data_dir)
        self.database = open_database(self.data.database)
        self.defaults = settings_defaults(self.config, self.model_flag)
        self.listeners: list[SettingsListener] = []
        self.worker = None            # device.services.jobs.AnalysisWorker once started
        self.grabber = None           # device.camera.grabber.FrameGrabber while a camera runs
        self.camera_problem: str | None = None  # why no camera runs (a bad camera setting), one line
        self._lock = threading.Lock()
        self._settings = DeviceSettings.load(self.defaults)
        self.decode_budget = DecodeBudget.from_config(self.config)  # uploads: pixel limit, decodes at a time
        self.disk_guard = DiskGuard.from_config(self.data, self.config.storage)  # refuses captures at the reserve
        self.pruner = None            # device.services.retention.PruneTimer once started (when a policy is set)

    # --- the settings in force ----------------------------------------------------------------------------
    @property
    def settings(self) -> DeviceSettings:
        with self._lock:
            return self._settings

    @property
    def model_path(self) -> Path:
        """The model file in force: the flag, else the stored setting, else the file's, else $ALLSCOPE_MODEL,
        else the shipped model (``settings.model_path`` already holds stored > file > environment)."""
        return model_in_force(self.model_flag, self.settings.model_path)

    def stored_keys(self) -> set[str]:
        return DeviceSettings.stored_keys()

    def save_settings(self, changes: Mapping[str, Any], actor: Actor) -> SettingsSaved:
        """Validate and store ``changes`` with their audit event (SettingsError, nothing stored, on a bad
        value), then apply them to the running services and tell the listeners."""
        current = self.settings
        updated = DeviceSettings.save(changes, actor.username, address=actor.address, defaults=self.defaults)
        changed = frozenset(k for k in DeviceSettings.keys() if getattr(updated, k) != getattr(current, k))
        with self._lock:
            self._settings = updated
        problem = self.apply(updated, set(changed))
        return SettingsSaved(updated, changed, problem,
                             restart_needed=bool(changed & RESTART_KEYS) and not self.running)

    def apply(self, settings: DeviceSettings, changed: set[str]) -> str:
        """Apply changed settings to the running worker and camera, then the listeners; the first failure as
        one line, or ""."""
        if not changed:
            return ""
        try:
            if self.worker is not None:
                if changed & DECISION_KEYS:
                    self.worker.set_decision(settings.decision())
                if "model_path" in changed:
                    self.worker.set_model(model_in_force(self.model_flag, settings.model_path))
            if self.running and changed & CAMERA_KEYS:
                self.start_camera(settings.camera_kind, settings.camera_source or None)
            for listener in list(self.listeners):
                listener(settings, changed)
        except Exception as error:  # noqa: BLE001 - the settings are stored; say what did not take effect
            log.exception("applying saved settings failed")
            return " ".join(str(error).split())[:200] or type(error).__name__
        return ""

    # --- the background services --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """The worker (and camera) were started (they may have stopped since)."""
        return self.worker is not None

    def start(self) -> "Appliance":
        """Start the analysis worker and the camera grabber when ``start_workers``; a no-op otherwise."""
        if not self.start_workers or self.worker is not None:
            return self
        from device.inference.delegates import DelegateConfig
        from device.services.jobs import AnalysisWorker

        settings = self.settings
        configured = bool(self.config.analysis.overrides())
        # None: the model card's own thresholds, unless an admin stored some or the file sets them
        decision = settings.decision() if self.stored_keys() & DECISION_KEYS or configured else None
        self.worker = AnalysisWorker(self.data, self.model_path, decision=decision,
                                     delegate=DelegateConfig.from_section(self.config.inference),
                                     watchdog_seconds=self.config.inference.watchdog_seconds).start()
        self.start_camera(settings.camera_kind, settings.camera_source or None)
        from device.services.retention import Policy, PruneTimer

        storage = self.config.storage
        self.pruner = PruneTimer(self.data, Policy.from_config(storage), storage.prune_interval_hours).start()
        return self

    def start_camera(self, kind: str, source: str | None) -> None:
        """(Re)start the camera grabber; a bad camera setting is a status line, never a failed start."""
        from device.camera.backends import CameraError, make_camera
        from device.camera.grabber import FrameGrabber

        old = self.grabber
        if old is not None:
            old.stop()
        self.grabber, self.camera_problem = None, None
        try:
            camera = make_camera(kind, source)
        except CameraError as error:
            log.error("camera: %s", error)
            self.camera_problem = str(error)
            return
        self.grabber = FrameGrabber(camera, **self.config.camera.grabber_options()).start()

    @property
    def camera(self):
        """The camera the grabber reads (None when none runs)."""
        return self.grabber.camera if self.grabber is not None else None

    def camera_status(self) -> str:
        """One line: the grabber's status ("ok"), or why no camera runs."""
        if self.grabber is None:
            return self.camera_problem or "no camera is running on this device"
        return self.grabber.status

    def stop(self) -> None:
        """Stop the grabber, then the worker (it finishes or abandons its job, never half-written)."""
        if self.grabber is not None:
            self.grabber.stop()
        if self.worker is not None:
            self.worker.stop()
        if self.pruner is not None:
            self.pruner.stop()

    def close(self) -> None:
        """Stop the services and close the database."""
        self.stop()
        self.database.close()
