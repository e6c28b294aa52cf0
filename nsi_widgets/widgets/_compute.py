"""On-demand computations behind a card view's button, run in a background thread.

The browser sends ``{"type": "compute", "view": key, "layer", "unit"}``; the widget finds the
handler registered for the view (:func:`~nsi_widgets.widgets.views.register_compute`, or the
Explorer's ``compute=`` mapping), runs it on a worker thread (the kernel keeps answering the
Explorer meanwhile), forwards its progress, attaches the returned
:class:`~nsi_widgets.index.results.Attachment` to the index (so ``idx.save`` keeps it and the
exported page shows it) and lets the widget push the new payload.

Nothing here runs a model by itself: the handler calls the compute packages.
"""
from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class ComputeRequest:
    """What a compute handler gets.

    Attributes
    ----------
    index : NeuronIndex
    layer : str
    unit : int
    view : str
        The view's name.
    attachment_name : str
        Where the result is attached (``index.attachments[attachment_name]``).
    attachment : Attachment or None
        The current attachment of that name (extend it, e.g. with one more unit), or None.
    """

    index: Any
    layer: str
    unit: int
    view: str
    attachment_name: str
    attachment: Any = None
    _report: Callable[[float, str], None] = field(default=lambda fraction, text: None, repr=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def progress(self, fraction: float, text: str = "") -> None:
        """Report progress in ``[0, 1]`` with a short text (shown under the view's button)."""
        self._report(min(1.0, max(0.0, float(fraction))), str(text))

    @property
    def cancelled(self) -> bool:
        """True when the widget was closed: a long handler may stop early."""
        return self._cancelled.is_set()


class ComputeRunner:
    """One worker thread per widget; at most one job per (view, layer, unit) at a time."""

    #: least seconds between two progress messages of one job
    PROGRESS_INTERVAL = 0.1

    def __init__(self, on_progress: Callable[[dict], None], on_done: Callable[[ComputeRequest, Any], None]):
        self._on_progress = on_progress
        self._on_done = on_done
        self._executor: ThreadPoolExecutor | None = None
        self._running: dict[tuple, Future] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def running(self, key: tuple) -> bool:
        with self._lock:
            return key in self._running

    def submit(self, key: tuple, handler: Callable, request: ComputeRequest) -> bool:
        """Start a job; False if the same job is already running."""
        with self._lock:
            if key in self._running:
                return False
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nsi-compute")
            request._cancelled = self._stop
            request._report = self._reporter(key)
            self._running[key] = self._executor.submit(self._run, key, handler, request)
            return True

    def wait(self, timeout: float | None = None) -> None:
        """Wait for every running job (tests, scripts)."""
        with self._lock:
            futures = list(self._running.values())
        for future in futures:
            future.result(timeout)

    def shutdown(self) -> None:
        self._stop.set()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _reporter(self, key: tuple) -> Callable[[float, str], None]:
        last = [0.0]

        def report(fraction: float, text: str) -> None:
            now = time.monotonic()
            if fraction < 1.0 and now - last[0] < self.PROGRESS_INTERVAL:
                return
            last[0] = now
            self._on_progress({"view": key[0], "layer": key[1], "unit": key[2], "fraction": fraction,
                               "text": text, "state": "running"})
        return report

    def _run(self, key: tuple, handler: Callable, request: ComputeRequest) -> None:
        try:
            self._on_progress({"view": key[0], "layer": key[1], "unit": key[2], "fraction": 0.0,
                               "text": "started", "state": "running"})
            result = handler(request)
            self._on_done(request, result)
        except Exception as exc:  # reported to the view; the kernel log keeps the traceback
            traceback.print_exc()
            self._on_progress({"view": key[0], "layer": key[1], "unit": key[2], "fraction": 0.0,
                               "text": f"{type(exc).__name__}: {exc}", "state": "error"})
        finally:
            with self._lock:
                self._running.pop(key, None)
