"""Device settings changed from the admin pages, stored in the ``Setting`` table (key -> JSON value).

    current = DeviceSettings.load()                       # defaults merged with stored values
    DeviceSettings.save({"threshold": "0.4"}, actor="ana")  # validate all, then write + audit at once
    decision = decision_settings()                        # device.core.decision.DecisionSettings

Values arrive as text from forms or as JSON from the API, so each field is
coerced and checked by its own rule; a bad value raises :class:`SettingsError`
whose ``.key`` names the field and whose message is one line. ``save``
validates every change (and the combination, e.g. the review band around the
threshold) before touching the database, then writes all keys and one audit
event in a single transaction: a bad key among good ones changes nothing.

``load`` never fails on a stored value that no longer fits (a hand-edited
database, an older release): it logs and falls back to the default, so the
device still starts. Whether a model file still exists is checked on save
only (reading and hashing it on every load would cost ~5 ms per request).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from device.config.choices import CAMERA_KINDS
from device.core.decision import DecisionSettings
from device.errors import AllscopeError, InvalidInput
from device.store.records import Setting, audit, db_proxy, utcnow

log = logging.getLogger(__name__)

MAX_SOURCE_LENGTH = 1000


class SettingsError(InvalidInput, ValueError):
    """A setting value that cannot be used; ``key`` names the setting."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{LABELS.get(key, key)}: {message}")


@dataclass(frozen=True)
class DeviceSettings:
    """What an admin can change on the device. Field names are the keys stored in the ``Setting`` table."""

    threshold: float = DecisionSettings.threshold
    review_low: float = DecisionSettings.review_low
    review_high: float = DecisionSettings.review_high
    camera_kind: str = "replay"
    camera_source: str = ""      # "" = the kind's default (replay: the bundled demo frames; opencv: device 0)
    model_path: str = ""         # "" = the shipped model (models/allscope_blast_int8.tflite)
    idle_minutes: int = 10
    max_upload_mb: int = 64
    target_white_cells: int = 200  # a manual differential counts 200 white cells
    min_white_cells: int = 100     # fewer counted: sign-off needs an override reason

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def load(cls, defaults: Mapping[str, Any] | None = None) -> "DeviceSettings":
        """Defaults (the dataclass's, overridden by ``defaults``), overridden by the stored values."""
        base = dataclasses.replace(cls(), **{k: v for k, v in (defaults or {}).items() if k in cls.keys()})
        values = {}
        for row in Setting.select().where(Setting.key.in_(cls.keys())):
            try:
                values[row.key] = _coerce(row.key, row.value)
            except SettingsError as error:
                log.warning("ignoring stored setting (%s); using the default", error)
        merged = dataclasses.replace(base, **values)
        try:
            merged.check_count()
        except SettingsError as error:
            log.warning("stored white cell counts do not fit together (%s); using the defaults", error)
            merged = dataclasses.replace(merged, target_white_cells=base.target_white_cells,
                                         min_white_cells=min(base.min_white_cells, base.target_white_cells))
        try:
            merged.decision()
        except SettingsError as error:
            log.warning("stored decision settings do not fit together (%s); using the defaults", error)
            merged = dataclasses.replace(merged, threshold=base.threshold, review_low=base.review_low,
                                         review_high=base.review_high)
        return merged

    @classmethod
    def stored_keys(cls) -> set[str]:
        """Keys an admin has set (the others still follow the defaults)."""
        return {row.key for row in Setting.select(Setting.key).where(Setting.key.in_(cls.keys()))}

    @classmethod
    def save(cls, changes: Mapping[str, Any], actor: str, *, address: str = "",
             defaults: Mapping[str, Any] | None = None) -> "DeviceSettings":
        """Validate every change, then store them all and one audit event in one transaction.

        Returns the new settings. Raises SettingsError (naming the key) and changes nothing on any bad value.
        """
        unknown = [k for k in changes if k not in cls.keys()]
        if unknown:
            raise SettingsError(unknown[0], "no such setting")
        coerced = {key: _coerce(key, value) for key, value in changes.items()}
        for key, value in coerced.items():
            check = _FILE_CHECKS.get(key)
            if check is not None:
                check(value)
        with db_proxy.atomic():
            current = cls.load(defaults)
            updated = dataclasses.replace(current, **coerced)
            updated.decision(changed=set(coerced))  # the band must hold around the threshold
            if {"target_white_cells", "min_white_cells"} & set(coerced):
                updated.check_count(changed=set(coerced))
            if {"camera_kind", "camera_source"} & set(coerced):
                _check_camera(updated.camera_kind, updated.camera_source)
            before = {k: getattr(current, k) for k in coerced if getattr(current, k) != coerced[k]}
            after = {k: coerced[k] for k in before}
            if not before:
                return current
            now = utcnow()
            for key, value in after.items():
                (Setting.insert(key=key, value=value, updated_at=now, updated_by=actor)
                 .on_conflict(conflict_target=[Setting.key],
                              update={Setting.value: value, Setting.updated_at: now, Setting.updated_by: actor})
                 .execute())
            audit("update", "settings", "device", username=actor, before=before, after=after, address=address)
        return updated

    def decision(self, changed: set[str] = frozenset()) -> DecisionSettings:
        """These thresholds as DecisionSettings; SettingsError if they do not fit together.

        The error names the field of an out-of-order pair that was just ``changed`` (the band end by default).
        """
        if not self.review_low <= self.threshold:
            if "threshold" in changed and "review_low" not in changed:
                raise SettingsError("threshold", f"must not be below the review band's low end ({self.review_low:g})")
            raise SettingsError("review_low", f"must not be above the decision threshold ({self.threshold:g})")
        if not self.threshold <= self.review_high:
            if "threshold" in changed and "review_high" not in changed:
                raise SettingsError("threshold", f"must not be above the review band's high end ({self.review_high:g})")
            raise SettingsError("review_high", f"must not be below the decision threshold ({self.threshold:g})")
        try:
            return DecisionSettings(threshold=self.threshold, review_low=self.review_low, review_high=self.review_high)
        except ValueError as error:
            raise SettingsError("threshold", str(error)) from None

    def check_count(self, changed: set[str] = frozenset()) -> None:
        """The sign-off minimum must not exceed the target count (SettingsError naming the field just changed)."""
        if self.min_white_cells > self.target_white_cells:
            if "target_white_cells" in changed and "min_white_cells" not in changed:
                raise SettingsError("target_white_cells",
                                    f"must not be below the sign-off minimum ({self.min_white_cells})")
            raise SettingsError("min_white_cells", f"must not be above the target count ({self.target_white_cells})")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_errors(changes: Mapping[str, Any]) -> dict[str, str]:
    """Every bad value at once (key -> one-line message), for a form that shows each next to its field.

    Checks each value alone; ``DeviceSettings.save`` still checks how they fit together.
    """
    errors = {}
    for key, value in changes.items():
        try:
            if key not in _COERCE:
                raise SettingsError(key, "no such setting")
            coerced = _coerce(key, value)
            if key in _FILE_CHECKS:
                _FILE_CHECKS[key](coerced)
        except SettingsError as error:
            errors[key] = str(error)
    return errors


def valid_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults given by the configuration (flags, file, environment; see ``device/services/appliance.py``),
    each coerced by its setting's rule; a value that does not fit is logged and left out."""
    out = {}
    for key, value in values.items():
        if value is None or key not in _COERCE:
            continue
        try:
            out[key] = _coerce(key, value)
        except SettingsError as error:
            log.warning("ignoring the configured %s (%s)", key, error)
    return out


def decision_settings(defaults: Mapping[str, Any] | None = None) -> DecisionSettings:
    """The decision threshold and review band in force (stored values over defaults)."""
    return DeviceSettings.load(defaults).decision()


# --- per-field rules -------------------------------------------------------------------------------------

LABELS = {
    "threshold": "Decision threshold",
    "review_low": "Review band, low end",
    "review_high": "Review band, high end",
    "camera_kind": "Camera kind",
    "camera_source": "Camera source",
    "model_path": "Model file",
    "idle_minutes": "Idle logout (minutes)",
    "max_upload_mb": "Largest upload (MB)",
    "target_white_cells": "Target white cell count",
    "min_white_cells": "Minimum white cells to sign",
}

DESCRIPTIONS = {
    "threshold": "A cell whose blast probability is at or above this value is labelled blast (0 to 1).",
    "review_low": "Cells with a probability from here up to the high end go to a pathologist for review.",
    "review_high": "Upper end of the review band; must be at or above the decision threshold.",
    "camera_kind": "replay reads frames from a folder; opencv a USB/CSI camera or GStreamer pipeline; "
                   "picamera2 the Raspberry Pi camera.",
    "camera_source": "replay: a folder of frames (empty: the bundled demo frames). opencv: a device index "
                     "such as 0, a device path such as /dev/video0, or a GStreamer pipeline.",
    "model_path": "Full path of an allscope .tflite model on the device (empty: the shipped model). "
                  "The file is checked before it is accepted.",
    "idle_minutes": "A shared touchscreen logs its user out after this many minutes without activity (1 to 120).",
    "max_upload_mb": "Largest image file accepted by the upload page (1 to 512 MB).",
    "target_white_cells": "White cells to count per sample, as in a manual differential (10 to 1000; "
                          "the capture page shows the progress).",
    "min_white_cells": "Signing with fewer counted white cells needs an override reason, printed on the report "
                       "(0 to 1000, at most the target).",
}


def _number(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool):
        raise SettingsError(key, "must be a number")
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise SettingsError(key, "must be a number") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise SettingsError(key, f"must be between {low:g} and {high:g}")
    return number


def _integer(key: str, value: Any, low: int, high: int) -> int:
    number = _number(key, value, low, high)
    if number != int(number):
        raise SettingsError(key, "must be a whole number")
    return int(number)


def _text(key: str, value: Any, max_length: int = MAX_SOURCE_LENGTH) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise SettingsError(key, "must be text")
    text = str(value).strip()
    if len(text) > max_length:
        raise SettingsError(key, f"is too long (at most {max_length} characters)")
    if any(ord(ch) < 32 for ch in text):
        raise SettingsError(key, "must be one line without control characters")
    return text


def _camera_kind(key: str, value: Any) -> str:
    kind = _text(key, value, 32)
    if kind not in CAMERA_KINDS:
        raise SettingsError(key, f"must be one of {', '.join(CAMERA_KINDS)}")
    return kind


_COERCE: dict[str, Callable[[str, Any], Any]] = {
    "threshold": lambda k, v: _number(k, v, 0.0, 1.0),
    "review_low": lambda k, v: _number(k, v, 0.0, 1.0),
    "review_high": lambda k, v: _number(k, v, 0.0, 1.0),
    "camera_kind": _camera_kind,
    "camera_source": _text,
    "model_path": _text,
    "idle_minutes": lambda k, v: _integer(k, v, 1, 120),
    "max_upload_mb": lambda k, v: _integer(k, v, 1, 512),
    "target_white_cells": lambda k, v: _integer(k, v, 10, 1000),
    "min_white_cells": lambda k, v: _integer(k, v, 0, 1000),
}


def _coerce(key: str, value: Any) -> Any:
    return _COERCE[key](key, value)


def _check_model(path: str) -> None:
    """An empty path means the shipped model; anything else must read as an allscope model."""
    if not path:
        return
    from device.inference.model_info import read_model_info

    if not Path(path).is_absolute():
        raise SettingsError("model_path", "give the full path (starting with /)")
    try:
        info = read_model_info(path)
    except AllscopeError as error:
        raise SettingsError("model_path", str(error)) from None
    if "blast" not in info.labels:
        raise SettingsError("model_path", f"{path}: not a blast classifier (labels {', '.join(info.labels)})")


def _check_camera(kind: str, source: str) -> None:
    if kind == "replay" and source and not Path(source).is_dir():
        raise SettingsError("camera_source", f"{source}: no such folder (replay reads frames from a folder)")


_FILE_CHECKS: dict[str, Callable[[Any], None]] = {"model_path": _check_model}
