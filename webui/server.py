"""``allscope serve``: the web UI behind waitress, a production WSGI server that runs on a Pi."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def first_run_hint(host: str, port: int, data_dir: str) -> str:
    return (f"No account exists yet. Either open http://{host}:{port}/setup on this device to create the "
            f"administrator, or run:\n  allscope users create ADMIN_NAME --role admin --data-dir {data_dir}\n"
            f"(the password is read from stdin). Then create technician and pathologist accounts from Admin > Users.")


MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, as MALLOC_ARENA_MAX would (unless that is set); True when applied.

    glibc gives each thread that contends for the heap an arena of its own; with waitress's threads and the
    analysis worker, the freed buffers of full frames stay spread over up to 8 × cores arenas. Measured by
    ``allscope bench all``: resident memory after 5 analysed 2592×1944 frames 298 MB (peak 373 MB) without the
    cap, 161 MB (peak 263 MB) with 2 arenas.
    """
    return _mallopt("MALLOC_ARENA_MAX", -8, arenas)  # -8: M_ARENA_MAX (glibc malloc.h)


# Blocks at least this large are mapped and unmapped on their own (a 2592×1944 frame is 15 MB).
MMAP_THRESHOLD = 1 << 20


def map_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold, as MALLOC_MMAP_THRESHOLD_ would (unless that is set); True when applied.

    glibc raises the threshold to the size of every mapped block freed (up to 32 MB), so after the first frame
    its 15 MB copies come from the heap and their pages stay resident when freed; fixed at 1 MB they go back
    to the system at once. Measured by ``allscope bench all`` (memory section, issue 15): peak with four
    2592×1944 uploads arriving at once 302 MB without, 245 MB with; after 3 frames 216 → 198 MB.
    """
    return _mallopt("MALLOC_MMAP_THRESHOLD_", -3, threshold)  # -3: M_MMAP_THRESHOLD (glibc malloc.h)


def _mallopt(variable: str, parameter: int, value: int) -> bool:
    """glibc's ``mallopt(parameter, value)`` unless the operator set the environment ``variable`` that does the
    same; True when applied, False elsewhere (not Linux, not glibc: musl has neither knob)."""
    if os.environ.get(variable) or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").mallopt(parameter, value) == 1
    except (OSError, AttributeError):
        return False


def serve(data_dir: str | None, host: str | None = None, port: int | None = None, model: Path | None = None,
          threads: int = 8, config: str | None = None) -> int:
    """Precedence: these arguments (command-line flags) > the settings saved on the device > the configuration
    file > the environment > built-in defaults (``device/services/appliance.py`` computes it once)."""
    limit_malloc_arenas()  # before any thread of the app starts
    map_large_blocks()

    from device.config.schema import ConfigError, load_config
    from device.services import accounts
    from webui.app import create_app

    try:
        settings = load_config(config)  # --config, $ALLSCOPE_CONFIG, /etc/allscope/allscope.toml, or defaults
    except ConfigError as error:
        for line in error.problems:
            print(f"allscope: {line}", file=sys.stderr)
        return 2
    from device.store import atrest

    atrest.configure(settings.storage)  # durability and encryption at rest, before create_app opens the database
    host = host or settings.device.host
    port = port if port is not None else settings.device.port
    app = create_app(settings, data_dir=data_dir, model=model, start_workers=True)
    if settings.source:
        print(f"allscope: configuration from {settings.source}", flush=True)
    data_root = str(app.appliance.data.root)
    print(f"allscope web UI on http://{host}:{port}/  (data in {data_root})", flush=True)
    with app.app_context():
        if not accounts.any_user_exists():
            print(first_run_hint(host, port, data_root), flush=True)
    return run_waitress(app, host, port, threads=threads, ident="allscope", on_stop=app.appliance.stop)


def run_waitress(app, host: str, port: int, *, threads: int = 8, ident: str = "allscope", on_stop=None) -> int:
    """Serve ``app`` with waitress until SIGTERM or Ctrl-C; exit status 0, or 2 with one line if the port fails.

    Shared by the device's and the central's web UI. SIGTERM (systemd's stop) becomes KeyboardInterrupt, on which
    waitress stops cleanly; ``on_stop`` then runs (the device's analysis worker finishes or abandons its job).
    """
    import waitress

    def _terminate(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        waitress.serve(app, host=host, port=port, threads=threads, ident=ident,
                       clear_untrusted_proxy_headers=True, max_request_body_size=app.config["MAX_CONTENT_LENGTH"])
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(f"allscope: cannot serve on {host}:{port}: {error.strerror or error}", file=sys.stderr)
        return 2
    finally:
        if callable(on_stop):
            on_stop()
    return 0
