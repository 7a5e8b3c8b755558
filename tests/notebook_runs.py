"""Execute the walkthrough notebooks once per test session (shared by the notebook and docs tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 900


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


class NotebookRuns:
    """Executes each notebook at most once on `model` (what NBTOOLS_NOTEBOOK_MODEL picks for
    the walkthroughs; default: the embedded model); the executed copies land in `out_dir`,
    the wall time of each run in `seconds`."""

    def __init__(self, out_dir: Path, model: str = "tiny"):
        self.out_dir, self.model = out_dir, model
        self._done: dict[str, Path | BaseException] = {}
        self.seconds: dict[str, float] = {}

    def executed(self, name: str) -> Path:
        """Path of the executed copy of notebooks/<name>; re-raises the first run's error."""
        if name not in self._done:
            try:
                self._done[name] = self._execute(NOTEBOOKS / name)
            except BaseException as exc:  # keep the error for later callers (the docs test)
                self._done[name] = exc
        result = self._done[name]
        if isinstance(result, BaseException):
            raise result
        return result

    def _execute(self, path: Path) -> Path:
        nb = nbformat.read(path, as_version=4)
        # The kernel runs in notebooks/, as for a user who opened it there; one passive
        # OpenMP thread pool so that notebooks do not spin on shared cores.
        env = {**os.environ, "NBTOOLS_NOTEBOOK_MODEL": self.model, "OMP_WAIT_POLICY": "PASSIVE"}
        client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS)}})
        start = time.monotonic()
        client.execute(env=env)
        self.seconds[path.name] = time.monotonic() - start
        out = self.out_dir / path.name
        nbformat.write(nb, out)
        return out
