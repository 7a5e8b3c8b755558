"""The static-fallback drawing process never outlives the kernel that started it."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from nbtools.widgets.fallback import SERVE

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from nbtools.widgets.fallback import StaticRenderer

    r = StaticRenderer(on_png=lambda png: None)
    with r._cond:
        proc = r._child()
    r._ready = proc.stdout.read(1) == b"R"
    print(proc.pid, flush=True)
    proc.send_signal(signal.SIGSTOP)      # as a click does while a drawing is in progress
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)  # the kernel dies: no close(), no atexit
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_paused_drawing_process_dies_with_its_kernel():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=dict(os.environ), timeout=120)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the stopped fallback process outlived its parent"


def _server() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SERVE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    assert proc.stdout.read(1) == b"R"
    return proc


def test_the_drawing_process_ignores_ctrl_c_and_ends_quietly_with_its_parent():
    """A kernel's interrupt or shutdown sends SIGINT to its whole process group: the child
    keeps serving, and when its stdin closes it ends with nothing on stderr (it used to
    print a KeyboardInterrupt traceback into the notebook run's output)."""
    import signal

    proc = _server()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None, "Ctrl-C ended the drawing process"
    proc.stdin.write(b'{"view": {}}\n')  # a bad request: an error answer, not a crash
    proc.stdin.flush()
    assert proc.stdout.read(1) == b"E"
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert proc.stderr.read() == b""


def test_the_drawing_process_ends_quietly_on_a_broken_pipe():
    proc = _server()
    proc.stdout.close()  # the parent is gone: its answer has nowhere to go
    proc.stdin.write(b'{"view": {}}\n')
    proc.stdin.flush()
    assert proc.wait(30) == 0
    assert proc.stderr.read() == b""
