"""Hardware delegates as small plugins chosen by configuration, with a CPU fallback.

A delegate that cannot be used (library absent, no device plugged in, model
not compiled for it) must not stop the appliance: it logs one warning line
and runs on the CPU, and the backend that actually runs is recorded so the
UI and result records can show it.

Plugins get ``load_delegate`` from the runtime (ai-edge-litert or
tflite_runtime) instead of importing one, so this module imports no runtime.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from device.errors import AllscopeError, ModelLoadError

log = logging.getLogger("allscope.inference")

LoadDelegate = Callable[..., Any]

EDGETPU_SUFFIX = "_edgetpu"
EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


class DelegateConfigError(AllscopeError, ValueError):
    """The delegate section of the configuration is invalid."""


class DelegateUnavailable(Exception):
    """Raised by a plugin when its delegate cannot be used here; triggers the CPU fallback."""


@dataclass(frozen=True)
class DelegateConfig:
    """Which backend to run on.

    kind: a key of ``DELEGATE_PLUGINS`` ("cpu", "edgetpu", "external").
    num_threads: CPU threads (XNNPACK, and ops a delegate does not take).
    library: shared library for "external" (required) or to override the
        Edge TPU library name.
    options: string options passed to the delegate, e.g. {"device": "usb"}.
    """

    kind: str = "cpu"
    num_threads: int = 1
    library: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_section(cls, section) -> "DelegateConfig":
        """From the configuration file's ``[inference]`` section."""
        return cls(kind=section.delegate, num_threads=section.threads, library=section.delegate_library)

    def __post_init__(self) -> None:
        if self.kind not in DELEGATE_PLUGINS:
            raise DelegateConfigError(
                f"unknown delegate kind {self.kind!r} (known: {', '.join(sorted(DELEGATE_PLUGINS))})")
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int) or self.num_threads < 1:
            raise DelegateConfigError(f"num_threads must be a positive integer, got {self.num_threads!r}")
        if self.kind == "external" and not self.library:
            raise DelegateConfigError("delegate kind 'external' needs 'library' (path to the delegate .so)")
        if not isinstance(self.options, Mapping):
            raise DelegateConfigError(f"delegate options must be a mapping, got {type(self.options).__name__}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DelegateConfig:
        """Build from a parsed config section, rejecting unknown keys (typos would silently mean CPU)."""
        known = {"kind", "num_threads", "library", "options"}
        unknown = set(values) - known
        if unknown:
            raise DelegateConfigError(f"unknown delegate setting(s): {', '.join(sorted(unknown))}")
        return cls(**dict(values))


def cpu_backend_name(num_threads: int) -> str:
    return f"cpu-xnnpack/{num_threads} thread{'' if num_threads == 1 else 's'}"


@dataclass(frozen=True)
class BackendChoice:
    """The delegates to pass to the interpreter, the model file to run, and what to call it."""

    delegates: tuple[Any, ...]
    backend: str
    model_path: Path
    fallback_reason: str | None = None


class DelegatePlugin:
    """Base plugin: runs ``model_path`` on the CPU with no delegate."""

    kind: ClassVar[str] = "cpu"

    def __init__(self, config: DelegateConfig, load_delegate: LoadDelegate):
        self.config = config
        self.load_delegate = load_delegate

    def model_path(self, configured: Path) -> Path:
        """The file this backend runs (raise DelegateUnavailable if there is none)."""
        return configured

    def cpu_model_path(self, configured: Path) -> Path:
        """The file to run when falling back to the CPU."""
        return configured

    def load(self) -> list[Any]:
        """Delegates for ``experimental_delegates``; empty for plain CPU."""
        return []

    @property
    def backend(self) -> str:
        return cpu_backend_name(self.config.num_threads)


def _check_library_opens(library: str) -> None:
    """dlopen the delegate library first, so a missing one gives a clean DelegateUnavailable.

    When dlopen fails inside ai-edge-litert 2.3's ``load_delegate``, the
    half-built Delegate's ``__del__`` prints an "Exception ignored ...
    AttributeError" traceback to stderr, burying the one warning line.
    """
    try:
        ctypes.CDLL(library)
    except OSError as exc:
        raise DelegateUnavailable(str(exc)) from None


DELEGATE_PLUGINS: dict[str, type[DelegatePlugin]] = {}


def register_delegate_plugin(plugin: type[DelegatePlugin]) -> type[DelegatePlugin]:
    """Class decorator adding a plugin to the registry under ``plugin.kind``."""
    DELEGATE_PLUGINS[plugin.kind] = plugin
    return plugin


@register_delegate_plugin
class CpuPlugin(DelegatePlugin):
    """No delegate: LiteRT applies XNNPACK by default; threads via ``num_threads``."""

    kind = "cpu"


@register_delegate_plugin
class EdgeTpuPlugin(DelegatePlugin):
    """Coral Edge TPU. Needs a model compiled by edgetpu_compiler (``<stem>_edgetpu.tflite``)."""

    kind = "edgetpu"

    def model_path(self, configured: Path) -> Path:
        if configured.stem.endswith(EDGETPU_SUFFIX):
            return configured
        compiled = configured.with_name(f"{configured.stem}{EDGETPU_SUFFIX}{configured.suffix}")
        if not compiled.is_file():
            raise DelegateUnavailable(f"no Edge TPU compiled model {compiled.name} beside {configured.name}")
        return compiled

    def cpu_model_path(self, configured: Path) -> Path:
        if not configured.stem.endswith(EDGETPU_SUFFIX):
            return configured
        plain = configured.with_name(f"{configured.stem[:-len(EDGETPU_SUFFIX)]}{configured.suffix}")
        if not plain.is_file():
            raise ModelLoadError(
                f"{configured}: compiled for the Edge TPU, which is unavailable, and no CPU model {plain.name} beside it")
        return plain

    def load(self) -> list[Any]:
        library = self.config.library or EDGETPU_LIBRARIES.get(platform.system(), "libedgetpu.so.1")
        options = {str(k): str(v) for k, v in self.config.options.items()}
        _check_library_opens(library)
        return [self.load_delegate(library, options)]

    @property
    def backend(self) -> str:
        device = self.config.options.get("device")
        return f"edgetpu:{device}" if device else "edgetpu"


@register_delegate_plugin
class ExternalPlugin(DelegatePlugin):
    """Any TFLite external delegate library (tflite_plugin_create_delegate), e.g. a vendor NPU."""

    kind = "external"

    def load(self) -> list[Any]:
        options = {str(k): str(v) for k, v in self.config.options.items()}
        _check_library_opens(self.config.library)
        return [self.load_delegate(self.config.library, options)]

    @property
    def backend(self) -> str:
        return f"external:{self.config.library}"


def choose_backend(config: DelegateConfig, model_path: str | Path, load_delegate: LoadDelegate) -> BackendChoice:
    """Load the configured delegate, or fall back to the CPU with one warning line."""
    configured = Path(model_path)
    plugin = DELEGATE_PLUGINS[config.kind](config, load_delegate)
    try:
        path = plugin.model_path(configured)
        delegates = tuple(plugin.load())
    except Exception as exc:  # noqa: BLE001 - delegate libraries raise ValueError, OSError, RuntimeError...
        return cpu_fallback(config, configured, f"{plugin.backend} delegate unavailable ({exc})")
    return BackendChoice(delegates, plugin.backend, path)


def cpu_fallback(config: DelegateConfig, model_path: str | Path, reason: str) -> BackendChoice:
    """The CPU choice after the delegate failed; logs ``reason`` as one warning line.

    ``model_path`` is the configured path; the plugin maps it to the CPU model
    (for the Edge TPU, ``x.tflite`` beside ``x_edgetpu.tflite``).
    """
    backend = cpu_backend_name(config.num_threads)
    reason = " ".join(str(reason).split())
    log.warning("%s; falling back to %s", reason, backend)
    plugin = DELEGATE_PLUGINS[config.kind](config, _no_delegates)
    return BackendChoice((), backend, plugin.cpu_model_path(Path(model_path)), fallback_reason=reason)


def _no_delegates(*_args: Any, **_kwargs: Any) -> Any:
    raise DelegateUnavailable("no delegate loader")
