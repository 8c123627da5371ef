"""What every ``allscope doctor`` check shares: the verdicts, one result line, the context and a time limit."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from device.errors import AllscopeError

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


@dataclass
class Result:
    name: str
    status: str
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        text = f"{self.status}  {self.name:<11} {self.detail}"
        return text + (f"  -> {self.fix}" if self.fix and self.status in (WARN, FAIL) else "")


# --- configuration ---------------------------------------------------------------------------------------

def load_settings(path: str | os.PathLike | None):
    """The validated configuration (device/config/schema.py) and a line saying where it came from."""
    from device.config.schema import load_config

    config = load_config(path)
    return config, config.source or "built-in defaults (no configuration file)"


class Context:
    """What the checks share: the configuration, paths derived from it, and the loaded classifier."""

    def __init__(self, config, source: str):
        self.config, self.source = config, source
        # unset: as DataDir.resolve and device.resources.model_in_force decide
        from device.resources import model_in_force
        from device.store.datadir import DEFAULT_DATA_DIR

        data_dir = config.device.data_dir or os.environ.get("ALLSCOPE_DATA_DIR") or DEFAULT_DATA_DIR
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.model_path = model_in_force(configured=config.inference.model)
        self.classifier = None


def with_timeout(function: Callable[[], Any], seconds: float, what: str) -> Any:
    """Run ``function`` in a daemon thread; AllscopeError if it does not return in time (a hung driver)."""
    outcome: dict[str, Any] = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed back to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"allscope-doctor-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AllscopeError(f"{what} did not answer within {seconds:g} s (hung driver?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def one_line(error: object) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__
