"""The Explorer's static PNG fallback, drawn in a helper process so it never delays a click.

A notebook saved without a running kernel shows this image where the live widget was.
Drawing it (matplotlib, 0.3–2 s) on the measuring thread made a click after a pause wait
behind it, so a long-lived child process (`SERVE`: `nbtools.widgets.export.serve`, niced) draws
it from the view dict. A click `pause()`s the child (SIGSTOP; where there is no SIGSTOP the
child is killed) and drops the pending job; the next idle period resumes the child, whose
now-stale answer is discarded, and draws the current view.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import weakref

#: The child's program (not `-m nbtools.widgets.export`: the package imports that module
#: first, and runpy then warns on the child's stderr).
SERVE = "from nbtools.widgets.export import serve; serve()"
_STOP = getattr(signal, "SIGSTOP", None)
_CONT = getattr(signal, "SIGCONT", None)
_CHILDREN: weakref.WeakSet = weakref.WeakSet()  # killed at exit: a stopped child never sees EOF
atexit.register(lambda: [p.kill() for p in list(_CHILDREN)])


class StaticRenderer:
    """Latest-wins PNG rendering in a child process, driven by one daemon thread.

    on_png(png_bytes) runs on that thread for the current job only; on_error(message) when
    the child reports a drawing error.
    """

    def __init__(self, on_png, on_error=None):
        self.on_png, self.on_error = on_png, on_error
        self._cond = threading.Condition()
        self._job: tuple[float, bytes, int] | None = None
        self._gen = 0
        self._proc: subprocess.Popen | None = None
        self._rendering = False
        self._paused = False
        self._ready = False  # the child has said b"R": it dies with us, so it may be stopped
        self._resume: threading.Timer | None = None
        self._closed = False
        self.rendered = 0
        self._delivered = 0  # the generation of the last drawing handed to on_png
        self._thread = threading.Thread(target=self._loop, name="nbtools-static", daemon=True)
        self._thread.start()

    def schedule(self, payload: dict, delay: float) -> None:
        """Draw `payload` ({"view", "color_by", "sweep", "tokens", "dpi"}) after `delay` s of
        no further schedule() or pause()."""
        line = json.dumps(payload, default=str).encode() + b"\n"
        with self._cond:
            if self._closed:
                return
            self._gen += 1
            self._job = (time.monotonic() + delay, line, self._gen)
            if self._paused:
                self._cancel_resume()
                self._resume = threading.Timer(delay, self._wake, args=(self._gen,))
                self._resume.daemon = True
                self._resume.start()
            self._cond.notify_all()

    def draw_now(self, payload: dict, timeout: float = 60.0) -> bool:
        """Draw `payload` at once (resuming a paused child) and wait until on_png has run;
        False on timeout. on_png runs on this object's thread, as for scheduled drawings
        (the notebook routes display updates from it to the Explorer's cell)."""
        self.schedule(payload, 0.0)
        end = time.monotonic() + timeout
        with self._cond:
            gen = self._gen
            while self._delivered < gen and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def pause(self) -> None:
        """A click: drop the pending drawing and freeze one in progress."""
        with self._cond:
            self._gen += 1
            self._job = None
            self._cancel_resume()
            if self._rendering and not self._paused and self._proc is not None and self._ready:
                if _STOP is None:
                    self._proc.kill()
                else:
                    self._proc.send_signal(_STOP)
                    self._paused = True
            self._cond.notify_all()

    def busy(self) -> bool:
        """A drawing is pending or in progress."""
        with self._cond:
            return self._job is not None or self._rendering

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._job = None
            self._cancel_resume()
            proc, self._proc = self._proc, None
            self._cond.notify_all()
        if proc is not None:
            proc.kill()
            proc.wait()

    # --- internals -------------------------------------------------------------------------
    def _cancel_resume(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None

    def _wake(self, gen: int) -> None:
        with self._cond:
            if gen == self._gen and self._paused and self._proc is not None:
                self._proc.send_signal(_CONT)
                self._paused = False

    def _child(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            env = dict(os.environ, NBTOOLS_PARENT_PID=str(os.getpid()))
            self._proc = subprocess.Popen([sys.executable, "-c", SERVE],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            _CHILDREN.add(self._proc)
            self._ready = False
        return self._proc

    def _take(self) -> tuple[bytes, int, subprocess.Popen] | None:
        """The next due job (under the lock); None once closed."""
        while not self._closed:
            if self._job is not None and self._job[0] <= time.monotonic():
                _, line, gen = self._job
                self._job = None
                self._rendering = True
                return line, gen, self._child()
            wait = None if self._job is None else max(0.0, self._job[0] - time.monotonic())
            self._cond.wait(wait)
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                job = self._take()
            if job is None:
                return
            line, gen, proc = job
            try:
                if not self._ready:  # a new child: wait (unlocked) until it can be paused
                    self._ready = proc.stdout.read(1) == b"R"
                proc.stdin.write(line)
                proc.stdin.flush()
                head = proc.stdout.read(9)
                data = proc.stdout.read(int.from_bytes(head[1:], "big")) if len(head) == 9 else b""
                status = head[:1]
            except (OSError, ValueError):  # the child was killed (close, or no SIGSTOP)
                status, data = b"", b""
            with self._cond:
                self._rendering = False
                current = gen == self._gen and not self._closed
                if status == b"P":
                    self.rendered += 1
                self._cond.notify_all()
            if not current:
                continue
            try:
                if status == b"P":
                    self.on_png(data)
                elif status == b"E" and self.on_error is not None:
                    self.on_error(data.decode(errors="replace"))
            finally:
                with self._cond:
                    self._delivered = max(self._delivered, gen)
                    self._cond.notify_all()


class StaticFallback:
    """The image of a widget's last view kept in the notebook output, below the live widget.

    `attach(handle)` when the widget is displayed (handle: IPython's `display(...,
    display_id=True)` of `bundle()`); then `schedule(view, extra)` after each view (drawn after
    `delay` idle seconds), `pause()` on each click, `draw_now(...)` to bring it up to date.
    `on_error(message)` gets drawing errors. Without `attach` every call does nothing.
    """

    LABEL = "nbtools Explorer"

    def __init__(self, delay: float, on_error=None):
        self.delay, self.on_error = float(delay), on_error
        self.handle = None
        self.renderer: StaticRenderer | None = None
        self.png: bytes | None = None
        self.seq = None  # the view seq the image shows
        self._alt = self.LABEL
        self._pending: tuple | None = None  # (seq, alt text) of the drawing asked for last

    def attach(self, handle) -> None:
        """Show the image in `handle` from now on (starts the drawing process once)."""
        self.handle = handle
        if self.renderer is None:
            self.renderer = StaticRenderer(self._on_png, self.on_error)

    def bundle(self) -> dict:
        """The display bundle: the image with its alt text, or a placeholder before it."""
        if self.png is None:
            html = (f'<div class="nbtools-static"><i>{self.LABEL}: the live view needs a '
                    "running kernel; run the cell.</i></div>")
            return {"text/plain": self.LABEL, "text/html": html}
        b64 = base64.b64encode(self.png).decode()
        alt = self._alt
        html = (f'<div class="nbtools-static"><img alt="{alt}" style="max-width:100%" '
                f'src="data:image/png;base64,{b64}"/></div>')
        return {"text/plain": alt, "text/html": html, "image/png": b64}

    def schedule(self, payload: dict, delay: float | None = None) -> None:
        """Draw `payload` ({"view", "color_by", "sweep", "tokens", "dpi"}) after `delay` s
        (default: this fallback's) without another click."""
        if self.renderer is not None and payload["view"]:
            self._ask(payload)
            self.renderer.schedule(payload, self.delay if delay is None else delay)

    def draw_now(self, payload: dict, timeout: float) -> bool:
        """Draw `payload` unless the image already shows its view; False on timeout."""
        if self.renderer is None or not payload["view"] or \
                self.seq == payload["view"].get("seq"):
            return True
        self._ask(payload)
        return self.renderer.draw_now(payload, timeout)

    def pause(self) -> None:
        if self.renderer is not None:
            self.renderer.pause()

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()

    def _ask(self, payload: dict) -> None:
        ablated = " + ".join(payload["view"].get("ablated_ui") or []) or "nothing"
        self._pending = (payload["view"].get("seq"),
                         f"{self.LABEL} (static image of the last view: ablated {ablated})")

    def _on_png(self, png: bytes) -> None:
        self.png, (self.seq, self._alt) = png, self._pending
        # sent with the kernel's latest parent message: JupyterLab routes display updates by
        # display_id alone; nbclient only reads messages of the cell it is running
        self.handle.update(self.bundle(), raw=True)
