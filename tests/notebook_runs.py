"""Execute the walkthrough notebooks once per test session (shared by the notebook and docs tests)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 900


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


class NotebookRuns:
    """Executes each notebook at most once; the executed copies land in `out_dir`."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self._done: dict[str, Path | BaseException] = {}

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
        # OpenMP thread pool so that notebooks do not spin on shared cores. The embedded model
        # (fast, and what the walkthroughs' text describes) unless the caller picks another.
        env = {"NBTOOLS_NOTEBOOK_MODEL": "tiny", **os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS)}})
        client.execute(env=env)
        out = self.out_dir / path.name
        nbformat.write(nb, out)
        return out
