"""The static-fallback drawing process never outlives the kernel that started it."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

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
