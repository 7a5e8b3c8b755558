"""Running sweeps through nnsight's remote backends (NDIF), or its local simulation.

``remote=True`` ships every measurement to NDIF as one request; ``remote="local"`` (nnsight
≥ 0.8) serialises each request exactly as for NDIF, deserialises it with local modules hidden
and runs it here — a serverless dry run. A sweep runs on ``lab.on(remote)``: a Lab of the
same model with its own remote setting and caches, so nothing leaks to the Lab the caller
holds (an open Explorer keeps running locally).

Chunking under NDIF's job-time limit: every `Lab.measure_many` call is one request (the
clean run, the source run and ``ceil(rows / max_rows)`` ablated traces in one session). Keep
each request short by choosing ``batch_rows`` (prompts per batch) and ``forward_rows`` (rows
per traced forward); a sweep is a sequence of such requests and writes a resumable
checkpoint after every batch, so a request that times out costs one batch, and rerunning the
same command continues.
"""

from __future__ import annotations

import contextlib

from ..lab import check_remote

__all__ = ["check_remote", "remote_execution"]


@contextlib.contextmanager
def remote_execution(lab, remote):
    """The Lab to run a sweep's measurements on: ``lab.on(remote)`` (``lab`` itself for
    ``remote=False`` on a local Lab)."""
    yield lab.on(check_remote(remote)) if remote else lab
