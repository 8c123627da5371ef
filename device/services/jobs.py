"""AnalysisWorker: one background thread that analyses stored captures, one at a time.

    worker = AnalysisWorker(data_dir, model_path).start()
    worker.enqueue(capture.id)      # after the capture row is committed
    worker.stage(capture.id)        # "queued", "analysing: finding cells", "classifying 12 cells", or None
                                    # once finished (then the capture row's status says done / failed)
    worker.stop()

The model is loaded once, on the first job (start-up stays fast and a bad
model file fails jobs with one line instead of the server). For each capture
the cell crops are written first, then the cells and the capture's result in
one transaction: a crash leaves at most orphan crop files, never rows
without files or half a result. Captures left queued or analysing by a crash
are re-queued on start and re-run from scratch. A failing job marks its
capture failed with one line and the thread goes on.

Model loading and a frame's analysis run under a deadline (``watchdog_seconds``,
see device/services/watchdog.py): when a delegate hangs, the watchdog fails the capture
with one line, discards the classifier and starts a fresh job thread, which
reloads the model for the next capture; after ``CPU_AFTER_HANGS`` (job_health.py) hangs in a row
on an accelerator the worker reloads on the CPU instead. The backend in use, its
measured latency (median per cell over the last frames) and the restarts are
properties the status page reads.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from device.core.analysis import Analyzer, FrameResult
from device.errors import AllscopeError, ImageLoadError
from device.services.job_health import WorkerHealth
from device.services.job_store import (  # noqa: F401  (crop_box, encode_png: one import for callers)
    crop_box,
    encode_png,
    interrupted_captures,
    load_stored,
    mark_failed,
    store_crops,
    store_pictures,
    write_result,
)
from device.services.watchdog import Ticket, Watchdog
from device.store.datadir import DataDir
from device.store.records import Capture, Cell, db_proxy, utcnow

log = logging.getLogger(__name__)

SYSTEM_USER = "allscope"  # the audit trail's name for changes made by the device itself
DEFAULT_WATCHDOG_SECONDS = 30.0  # a 2592x1944 frame takes ~1-3 s on a Pi 4: 30 s only trips on a hang


class _ReportingAnalyzer(Analyzer):
    """An Analyzer that says when classification starts and of how many cells (for the progress line)."""

    on_stage = staticmethod(lambda _stage: None)

    def on_classifying(self, count: int) -> None:
        self.on_stage(f"classifying {count} cells")


class JobAbandoned(Exception):
    """The worker is stopping: the job is left for the next start, nothing written."""


class _Superseded(Exception):
    """The watchdog gave up on this job and its thread: the thread ends without writing anything."""


class AnalysisWorker:
    def __init__(self, data: DataDir | str | Path, model_path: str | Path, delegate=None, decision=None,
                 username: str = SYSTEM_USER, watchdog_seconds: float | None = DEFAULT_WATCHDOG_SECONDS,
                 loader: Callable[[Path, Any], Any] | None = None):
        """``loader(model_path, DelegateConfig)`` returns a classifier (default ``CellClassifier.load``);
        ``watchdog_seconds`` None or 0 turns the watchdog off."""
        self.data = data if isinstance(data, DataDir) else DataDir.resolve(data)
        self.model_path = Path(model_path)
        self.delegate = delegate
        self.decision = decision
        self.username = username
        self._loader = loader
        self._analyzer: _ReportingAnalyzer | None = None
        self._queue: queue.Queue[int] = queue.Queue()
        self._stages: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._recovered = threading.Event()
        self._health = WorkerHealth(configured_kind=getattr(delegate, "kind", "cpu"))  # under self._lock
        self._model_problem: str | None = None  # why the model did not load (the status page shows it)
        self._watchdog = Watchdog(watchdog_seconds, self._on_hung, name="allscope-analysis-watchdog") \
            if watchdog_seconds else None
        self._thread = self._new_thread(0)

    def _new_thread(self, generation: int) -> threading.Thread:
        name = "allscope-analysis" + (f"-{generation}" if generation else "")
        return threading.Thread(target=self._run, args=(generation,), name=name, daemon=True)

    # --- control -----------------------------------------------------------------------------------------
    def start(self) -> "AnalysisWorker":
        if self._watchdog is not None:
            self._watchdog.start()
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish or abandon the job in flight (never half-written), then join."""
        self._stop.set()
        thread = self._thread
        if thread.is_alive():
            thread.join(timeout)
        if self._watchdog is not None:
            self._watchdog.stop()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def enqueue(self, capture_id: int) -> None:
        self._set_stage(capture_id, "queued")
        self._queue.put(int(capture_id))

    def stage(self, capture_id: int) -> str | None:
        with self._lock:
            return self._stages.get(int(capture_id))

    def idle(self) -> bool:
        return self._recovered.is_set() and self._queue.unfinished_tasks == 0

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """For tests and shutdown scripts: wait until every queued job has run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.05)
        return self.idle()

    def _set_stage(self, capture_id: int, stage: str) -> None:
        with self._lock:
            self._stages[int(capture_id)] = stage

    def _forget(self, capture_id: int) -> None:
        with self._lock:
            self._stages.pop(int(capture_id), None)

    # --- status (read by the admin status page) ------------------------------------------------------------
    @property
    def backend(self) -> str | None:
        """What the loaded classifier runs on, e.g. "cpu-xnnpack/1 thread"; None before the first job."""
        with self._lock:
            analyzer = self._analyzer
        return analyzer.classifier.backend if analyzer is not None else None

    @property
    def fallback_reason(self) -> str | None:
        """Why the configured delegate is not the one running (None when it is, or nothing is loaded)."""
        with self._lock:
            analyzer, reason = self._analyzer, self._health.cpu_reason
        return reason or (getattr(analyzer.classifier, "fallback_reason", None) if analyzer is not None else None)

    @property
    def queue_length(self) -> int:
        """Captures waiting for analysis (the one in flight not counted)."""
        return self._queue.qsize()

    @property
    def loaded_model(self):
        """The ModelInfo of the classifier in memory (None before the first job, or after a model change)."""
        with self._lock:
            analyzer = self._analyzer
        return analyzer.classifier.info if analyzer is not None else None

    @property
    def latency_ms(self) -> float | None:
        """Median inference time per cell over the last ``LATENCY_WINDOW`` frames with cells."""
        with self._lock:
            return self._health.latency_ms()

    @property
    def latency_samples(self) -> int:
        with self._lock:
            return len(self._health.latencies)

    @property
    def model_problem(self) -> str | None:
        """Why the last attempt to load the model failed, as one line (None: loaded, or not tried yet)."""
        with self._lock:
            return self._model_problem

    @property
    def watchdog_seconds(self) -> float | None:
        return self._watchdog.seconds if self._watchdog is not None else None

    @property
    def watchdog_restarts(self) -> int:
        with self._lock:
            return self._health.restarts

    @property
    def watchdog_problem(self) -> str | None:
        """The last watchdog intervention as one line (None if there was none since the start)."""
        with self._lock:
            return self._health.watchdog_problem

    # --- thread ------------------------------------------------------------------------------------------
    def _run(self, generation: int = 0) -> None:
        if generation == 0:
            try:
                self._requeue_interrupted()
            except Exception:  # noqa: BLE001 - the worker must come up even if recovery cannot read the database
                log.exception("could not re-queue interrupted captures")
            self._recovered.set()
        while not self._stop.is_set():
            try:
                capture_id = self._queue.get(timeout=0.25)
            except queue.Empty:
                continue
            superseded = False
            try:
                self._with_connection(self._process, capture_id)
            except _Superseded:
                superseded = True  # the watchdog failed the job, counted it done and started our successor
                log.warning("capture %s: the abandoned analysis thread returned; its result is discarded",
                            capture_id)
            except JobAbandoned:
                log.info("capture %s: analysis abandoned on shutdown; it is re-run on the next start", capture_id)
            except Exception as error:  # noqa: BLE001 - never let one capture kill the worker
                if not isinstance(error, AllscopeError):
                    log.exception("capture %s: analysis failed", capture_id)
                    error = AllscopeError(f"analysis failed unexpectedly ({type(error).__name__}); see the device log")
                self._fail_safely(capture_id, error)
            finally:
                if not superseded:
                    self._queue.task_done()
            if superseded:
                return

    @staticmethod
    def _with_connection(function, *args):
        """Each job on its own connection, closed afterwards (peewee connections are per thread)."""
        db_proxy.connect(reuse_if_open=True)
        try:
            return function(*args)
        finally:
            if not db_proxy.is_closed():
                db_proxy.close()

    def _requeue_interrupted(self) -> None:
        for capture_id in self._with_connection(interrupted_captures):
            self.enqueue(capture_id)

    # --- one job -----------------------------------------------------------------------------------------
    def _process(self, capture_id: int) -> None:
        capture = Capture.get_or_none(Capture.id == capture_id)
        if capture is None or capture.status in ("done", "failed"):
            self._forget(capture_id)
            return
        with db_proxy.atomic():
            # A crash during an earlier run can only have left crop files (rows are written in one
            # transaction), but an 'analysing' capture is cleared anyway before it is run again.
            Cell.delete().where(Cell.capture == capture_id).execute()
            Capture.update(status="analysing", error="", version=Capture.version + 1) \
                .where(Capture.id == capture_id).execute()
        self._set_stage(capture_id, "analysing: loading the model" if self._analyzer is None
                        else "analysing: finding cells")
        try:
            rgb = load_stored(self.data, capture.image_path)
        except ImageLoadError as error:
            raise AllscopeError(f"stored image unreadable: {error.reason}") from None
        ticket = None
        try:
            with self._deadline(capture_id) as ticket:
                analyzer = self._load_analyzer()
                self._set_stage(capture_id, "analysing: finding cells")
                analyzer.on_stage = lambda stage: self._set_stage(capture_id, stage)
                try:
                    result = analyzer.analyze_frame(rgb, capture.image_path)
                finally:
                    analyzer.on_stage = _ReportingAnalyzer.on_stage
        finally:
            if ticket is not None and ticket.expired:
                raise _Superseded()  # whatever the stuck call did or raised, nothing of it is written
        self._record_inference(result)
        self._set_stage(capture_id, "saving results")
        started = time.perf_counter()
        crop_paths, kept = store_pictures(self.data, capture, rgb, result.cells)
        timings = dict(result.timings_ms, crops=round((time.perf_counter() - started) * 1000.0, 1))
        if self._stop.is_set():
            raise JobAbandoned()
        write_result(capture_id, result, crop_paths, timings, analyzer.classifier.info.short_id, self.username,
                     {"model_identity": analyzer.classifier.info.identity(),  # which model ran, and with
                      "decision": analyzer.decision.as_dict()},               # which threshold (issue 11)
                     kept)
        self._forget(capture_id)  # final states are read from the capture row

    def _fail_safely(self, capture_id: int, error: BaseException) -> None:
        message = " ".join(str(error).split())[:300] or "analysis failed"
        self._forget(capture_id)
        try:
            self._with_connection(mark_failed, capture_id, message, self.username)
        except Exception:  # noqa: BLE001
            log.exception("capture %s: could not record the failure", capture_id)

    # --- watchdog ----------------------------------------------------------------------------------------
    def _deadline(self, capture_id: int):
        if self._watchdog is None:
            return contextlib.nullcontext(Ticket(capture_id, 0.0))
        return self._watchdog.deadline(capture_id)

    def _record_inference(self, result: FrameResult) -> None:
        with self._lock:
            self._health.finished(len(result.cells), result.timings_ms.get("classify"))

    def _on_hung(self, ticket: Ticket) -> None:
        """Called by the watchdog thread: fail the capture, drop the classifier, start a fresh job thread."""
        capture_id = int(ticket.what)
        with self._lock:
            analyzer, self._analyzer = self._analyzer, None
            backend = analyzer.classifier.backend if analyzer is not None else "model loading"
            had_reason = self._health.cpu_reason
            message = self._health.hung(capture_id, backend, ticket.seconds, utcnow())
            if self._health.cpu_reason and not had_reason:
                log.warning("analysis worker: %s", self._health.cpu_reason)
        self._fail_safely(capture_id, AllscopeError(message))
        self._queue.task_done()  # the stuck thread never reaches its own task_done
        if not self._stop.is_set():
            with self._lock:
                self._thread = self._new_thread(self._health.restarts)
                thread = self._thread
            thread.start()

    def set_decision(self, decision) -> None:
        """New decision settings (an admin change; None: the model's own), used from the next job on."""
        with self._lock:
            self.decision = decision

    def set_model(self, model_path: str | Path) -> None:
        """Another model file, loaded by the next job (the job in flight finishes with the old one)."""
        with self._lock:
            self.model_path = Path(model_path)
            self._analyzer = None
            self._model_problem = None

    def _load_analyzer(self) -> _ReportingAnalyzer:
        """The loaded analyzer (loading it on first use), with the decision settings in force for this job."""
        with self._lock:
            analyzer, model_path, decision = self._analyzer, self.model_path, self.decision
        if analyzer is None:
            from device.inference.classifier import CellClassifier
            from device.inference.delegates import DelegateConfig

            delegate = self.delegate or DelegateConfig()
            if self._health.cpu_reason is not None:
                delegate = DelegateConfig(kind="cpu", num_threads=delegate.num_threads)
            try:
                classifier = (self._loader or CellClassifier.load)(model_path, delegate)
            except AllscopeError as error:
                with self._lock:
                    self._model_problem = " ".join(str(error).split())[:300]
                raise
            with self._lock:
                self._model_problem = None
            analyzer = _ReportingAnalyzer(classifier)
            analyzer.model_decision = analyzer.decision  # from the model card: the default
            log.info("analysis worker: model %s (sha256 %s) on %s", model_path.name,
                     classifier.info.short_id, classifier.backend)
            with self._lock:
                if self.model_path == model_path:
                    self._analyzer = analyzer
        analyzer.decision = decision or analyzer.model_decision
        return analyzer


