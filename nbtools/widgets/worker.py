"""A single worker thread with latest-wins slots: the only thread that touches the model.

Each job has a *kind* ("measure", "sweep", ...). Submitting a job replaces any pending job
of the same kind, so a burst of clicks leaves one pending measurement — the newest — and
never queues stale work. Lower priority numbers run first; a job may be delayed (run only
after `delay` seconds without being replaced; the Explorer submits everything at once and
leaves idle-time drawing to its static-fallback renderer).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass
class _Job:
    kind: str
    fn: Callable[[], object]
    priority: int
    due: float


class LatestWins:
    """Run submitted callables one at a time on one daemon thread, newest per kind wins.

    >>> w = LatestWins()
    >>> w.submit("measure", lambda: print("hi"))
    >>> w.wait()
    hi
    True

    on_change(): called (on the worker thread or the submitting one) whenever the set of
    pending/running kinds changes — use it to drive a busy indicator.
    on_error(kind, exc, text): called when a job raises (the job's exception never kills the
    thread). init(): run once on the worker thread before any job (e.g. thread settings).
    """

    def __init__(self, name: str = "nbtools-worker", on_change=None, on_error=None,
                 init: Callable[[], object] | None = None):
        self._cond = threading.Condition()
        self._pending: dict[str, _Job] = {}
        self._running: str | None = None
        self._closed = False
        self.on_change = on_change
        self.on_error = on_error
        self.completed: dict[str, int] = {}
        self._init = init
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # --- public ---------------------------------------------------------------------
    def submit(self, kind: str, fn: Callable[[], object], priority: int = 0,
               delay: float = 0.0) -> None:
        """Queue `fn` as the job of `kind`, replacing a pending one of the same kind."""
        with self._cond:
            if self._closed:
                raise RuntimeError("this worker is closed")
            self._pending[kind] = _Job(kind, fn, priority, time.monotonic() + delay)
            self._cond.notify_all()
        self._changed()

    def cancel(self, kind: str) -> None:
        """Drop the pending job of `kind` (a running one finishes)."""
        with self._cond:
            removed = self._pending.pop(kind, None)
            self._cond.notify_all()
        if removed is not None:
            self._changed()

    def active(self, kinds: Iterable[str] | None = None) -> set[str]:
        """Kinds pending or running (restricted to `kinds` if given)."""
        with self._cond:
            out = set(self._pending)
            if self._running is not None:
                out.add(self._running)
        return out if kinds is None else out & set(kinds)

    def wait(self, timeout: float | None = None, kinds: Iterable[str] | None = None) -> bool:
        """Block until no job of `kinds` (default: any) is pending or running; False on timeout."""
        kinds = None if kinds is None else set(kinds)
        end = None if timeout is None else time.monotonic() + timeout

        def busy():
            names = set(self._pending) | ({self._running} if self._running else set())
            return bool(names if kinds is None else names & kinds)

        with self._cond:
            while busy():
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the running job; pending jobs are dropped."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- internals ------------------------------------------------------------------
    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a broken indicator must not stop the worker
                traceback.print_exc()

    def _next(self) -> _Job | None:
        """The next due job (under the lock), or None after close."""
        while not self._closed:
            now = time.monotonic()
            due = [j for j in self._pending.values() if j.due <= now]
            if due:
                job = min(due, key=lambda j: (j.priority, j.due))
                del self._pending[job.kind]
                self._running = job.kind
                return job
            wake = min((j.due for j in self._pending.values()), default=None)
            self._cond.wait(None if wake is None else max(0.0, wake - now))
        return None

    def _loop(self) -> None:
        if self._init is not None:
            try:
                self._init()
            except Exception:
                traceback.print_exc()
        while True:
            with self._cond:
                job = self._next()
            if job is None:
                return
            self._changed()
            try:
                job.fn()
            except Exception as exc:
                if self.on_error is not None:
                    try:
                        self.on_error(job.kind, exc, traceback.format_exc())
                    except Exception:
                        traceback.print_exc()
                else:
                    traceback.print_exc()
            finally:
                with self._cond:
                    self._running = None
                    self.completed[job.kind] = self.completed.get(job.kind, 0) + 1
                self._changed()  # e.g. clear a busy flag before waiters wake up
                with self._cond:
                    self._cond.notify_all()
