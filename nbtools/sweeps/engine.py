"""One sweep engine: resume, the writer lock, checkpoints, progress, Ctrl-C / SIGTERM and the
final write, for every sweep (`sweep_heads`, `sweep_layers`, `repair_map`).

A sweep module describes its science as a `Sweep` (settings, an empty state, the units of
work and a step that folds one unit into the state, its result type) and hands it to
`run_sweep`:

    result = run_sweep(lab, MySweep(...), out=..., overwrite=..., checkpoint_every=...,
                       progress=..., remote=...)

Adding a sweep means writing a step function and a result class (`SweepResult`: labelled
arrays, one file format: the state under "state/…", the summaries, a JSON header with the
settings and `progress` = {<done key>, <total key>, complete}).
"""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch

from ..errors import InvalidInputError, whole_number
from . import store
from .common import Checkpointer, iter_pending, progress_bar
from .remote import remote_execution


class SweepTerminated(KeyboardInterrupt):
    """The sweep was stopped by SIGTERM (a batch scheduler, `kill`): handled as Ctrl-C is
    (a checkpoint is written, rerunning the same call resumes)."""


class SweepResult:
    """What every sweep's result shares: its file format, progress and loading.

    Subclasses are dataclasses with `state`, `stats`, `settings` and `progress`, and set
    KIND (the file's kind), DONE_KEY / TOTAL_KEY (the progress entries) and STAT_PREFIXES
    (which arrays of a file are summaries).
    """

    KIND: ClassVar[str]
    DONE_KEY: ClassVar[str]
    TOTAL_KEY: ClassVar[str]
    STAT_PREFIXES: ClassVar[tuple[str, ...]]

    @property
    def complete(self) -> bool:
        return bool(self.progress.get("complete", False))

    @property
    def n_done(self) -> int:
        """Items finished (rows, prompts)."""
        return int(self.progress.get(self.DONE_KEY, 0))

    @property
    def n_total(self) -> int:
        """Items the sweep measures."""
        return int(self.progress.get(self.TOTAL_KEY, 0))

    def arrays(self) -> dict[str, torch.Tensor]:
        """Every array of the file: the state (under "state/") and the summaries."""
        return {**{f"state/{k}": v for k, v in self.state.items()}, **self.stats}

    def header(self) -> dict:
        return {"kind": self.KIND, "format": store.FORMAT_VERSION, "settings": self.settings,
                "progress": self.progress}

    def write(self, path) -> None:
        """Write the result file atomically (the caller holds its lock)."""
        store.write(Path(path), self.arrays(), self.header())

    def save(self, path) -> None:
        """Write the result file (atomically; fails if a sweep is writing it)."""
        with store.locked(path):
            self.write(path)

    @classmethod
    def load(cls, path):
        """Load a result file (a finished sweep, or a partial one: see `complete`)."""
        tensors, header = store.read(path, cls.KIND)
        return cls.from_file(tensors, header)

    @classmethod
    def from_file(cls, tensors: dict, header: dict):
        stats = {k: v for k, v in tensors.items() if k.startswith(cls.STAT_PREFIXES)}
        return cls(state=store.saved_state(tensors), stats=stats, settings=header["settings"],
                   progress=header["progress"])

    @classmethod
    def progress_of(cls, done: int, total: int, complete: bool) -> dict:
        return {cls.DONE_KEY: done, cls.TOTAL_KEY: total, "complete": complete}


class Sweep:
    """A sweep's science, for `run_sweep`. Subclasses set `result_type`, `settings`,
    `bounds` (the units: [start, end) item ranges), `total`, `label`, `unit` and write
    `empty_state` and `step`; `prepare` (a first pass) and `finish` (work after the units)
    are optional."""

    result_type: type[SweepResult]
    settings: dict
    bounds: list[tuple[int, int]]
    total: int
    label: str
    unit: str

    def empty_state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def step(self, lab, state: dict, start: int, end: int) -> dict:
        """The state with items [start, end) measured and folded in (a new dict)."""
        raise NotImplementedError

    def prepare(self, lab, state: dict) -> dict | None:
        """A pass before the units (e.g. a selection); None when there is nothing to do."""
        return None

    def finish(self, lab, state: dict) -> Iterator[dict]:
        """Work after the units, one new state per piece (checkpointed as they come)."""
        return iter(())

    def result(self, state: dict, done: int, complete: bool) -> SweepResult:
        raise NotImplementedError


def provenance(lab) -> dict:
    """Where the numbers come from, recorded by every sweep: the model's name, a fingerprint
    of its weights, its family and dtype, and (for GGUF-derived weights) the source file
    and quantization."""
    return dict(model=lab.name, model_digest=store.model_digest(lab.hf_model),
                family=lab.adapter.family, dtype=str(lab.dtype).replace("torch.", ""),
                **({"source": lab.source} if lab.source else {}))


def check_run_options(checkpoint_every, seed) -> int:
    """Validate what every sweep takes (before any forward pass); returns the seed."""
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int | float) \
            or not checkpoint_every >= 0:
        raise InvalidInputError(
            f"checkpoint_every must be a number of seconds ≥ 0 (0: after every batch), "
            f"not {checkpoint_every!r}")
    return whole_number(seed, "seed")


def run_sweep(lab, sweep: Sweep, *, out=None, overwrite: bool = False,
              checkpoint_every: float = 30.0, progress: bool = True, remote=False):
    """Run `sweep` on `lab` (on `lab.on(remote)` for a remote run) and return its result.

    out: the result file, locked for the whole run (a second writer fails at once); one from
    the same settings is resumed (a finished one returned as is), one from other settings
    refused unless overwrite. A checkpoint is written every `checkpoint_every` seconds and on
    any interruption (Ctrl-C, SIGTERM, an error); the final file once, at the end.
    """
    out = Path(out) if out is not None else None
    with store.locked(out):
        kind, key = sweep.result_type.KIND, sweep.result_type.DONE_KEY
        state, done = store.resume_state(out, kind, sweep.settings, overwrite, key)
        state = state or sweep.empty_state()

        def save(complete: bool) -> SweepResult:
            res = sweep.result(state, done, complete)
            if out is not None:
                res.write(out)
            return res

        bar = progress_bar(progress, sweep.total, done, sweep.label, sweep.unit)
        checkpoint = Checkpointer(checkpoint_every)
        try:
            with remote_execution(lab, remote) as runner, sigterm_as_interrupt(), \
                    warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="ablating .* changed nothing")
                prepared = sweep.prepare(runner, state)
                if prepared is not None:
                    state = prepared
                    save(complete=False)
                for start, end in iter_pending(sweep.bounds, done):
                    state = sweep.step(runner, state, start, end)
                    done = end
                    bar.update(end - start)
                    if checkpoint.due():
                        save(complete=False)
                for later in sweep.finish(runner, state):
                    state = later
                    if checkpoint.due():
                        save(complete=False)
        except BaseException:
            save(complete=False)
            raise
        finally:
            bar.close()
        return save(complete=True)


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises `SweepTerminated` (a KeyboardInterrupt) in the main thread while the
    block runs; the previous handler comes back after. Elsewhere (another thread) nothing
    changes: signals reach only the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise SweepTerminated("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
