"""Running sweeps through nnsight's remote backends (NDIF), or its local simulation.

``remote=True`` ships every trace to NDIF; ``remote="local"`` (nnsight ≥ 0.8) serialises
each trace exactly as for NDIF, deserialises it with local modules hidden and runs it here
— a serverless dry run that fails where a real remote run would. Until the engine's trace
functions take a ``remote=`` argument themselves, `remote_execution` routes a Lab's traces
by binding ``remote=`` onto its nnsight model's ``trace`` for the duration of a block.

Chunking under NDIF's job-time limit: every `Lab.measure_many` call runs one clean trace
per new batch plus ``ceil(rows / max_rows)`` ablated traces, and each trace is one remote
job. Keep each job short by choosing ``batch_rows`` (prompts per batch) and
``forward_rows`` (rows per traced forward); a sweep is a sequence of such jobs and writes a
resumable checkpoint after every batch, so a job that times out costs one batch, and
rerunning the same command continues.
"""

from __future__ import annotations

import contextlib
import functools

from ..errors import InvalidInputError

REMOTE_CHOICES = (False, True, "local")


def check_remote(remote) -> bool | str:
    """Validate a `remote` argument: False, True (NDIF), "local" or an NDIF host URL."""
    if remote in REMOTE_CHOICES:
        return remote
    if isinstance(remote, str) and remote.startswith(("http://", "https://")):
        return remote
    raise InvalidInputError(
        f"remote={remote!r}: use False, True (NDIF), 'local' (nnsight's local simulation of "
        "the remote path) or an NDIF host URL")


@contextlib.contextmanager
def remote_execution(lab, remote):
    """Within the block, every trace the Lab opens runs with nnsight's ``remote=remote``.

    A no-op for ``remote=False``. The Lab's clean-run cache is cleared on entry and exit so
    cached local activations are never mixed into a remote measurement (or vice versa).
    """
    remote = check_remote(remote)
    if not remote:
        yield lab
        return
    lm = lab.model
    bound = functools.partial(type(lm).trace, lm, remote=remote)
    lab._clean_cache.clear()
    object.__setattr__(lm, "trace", bound)
    try:
        yield lab
    finally:
        with contextlib.suppress(AttributeError):
            object.__delattr__(lm, "trace")
        lab._clean_cache.clear()
