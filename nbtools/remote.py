"""How a Lab's sessions reach the model: here, in nnsight's local simulation, or on NDIF.

    backend_for(lab.model, remote, on_status=..., timeout=...)   → the nnsight backend to use

remote: False (here: no backend), "local" (nnsight's `LocalSimulationBackend`: the request is
serialised as for NDIF, deserialised with local modules hidden and run here), True (NDIF at
`nnsight.CONFIG.API.HOST`, default https://api.ndif.us, or `NDIF_HOST`) or a host URL.

A remote run goes through nnsight's own `RemoteBackend` (its serialisation, compression,
websocket status stream, inline or downloaded results). nbtools adds a deadline (a request
that gets no answer ends in `RemoteRunError`, never a hang), reports each status to
`on_status(status, elapsed_s)` (the Explorer's "queued / running on NDIF"), and turns the
server's and the transport's failures into one error that says what to do: a missing API
key (before anything is sent), a model NDIF does not serve, a server error, a time-out.
A remote model's small constants (`effects.Weights`) are fetched once and kept on disk
(`constants_path`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file
from safetensors.torch import save as st_save

from . import files
from .errors import NbtoolsError

NDIF_HOST = "https://api.ndif.us"
DEFAULT_TIMEOUT_S = 600.0
CONSTANT_NAMES = ("gamma", "beta", "W_U_mean", "b_U_mean", "b_O", "b_out", "c_V", "c_V_W_O")


class RemoteRunError(NbtoolsError, RuntimeError):
    """A remote request could not be run: no API key, an unserved model, a server error, a
    lost connection or a time-out."""


def host_of(remote) -> str:
    """The NDIF host a `remote` setting names (True: nnsight's configured host)."""
    from nnsight import CONFIG

    return remote if isinstance(remote, str) and remote != "local" else CONFIG.API.HOST


def model_key(lm) -> str:
    """nnsight's key for the model (its hub id and revision); without network access the id
    is used as given instead of being canonicalised through the hub."""
    try:
        return lm.to_model_key()
    except Exception:  # offline, or a local folder standing in for a hub id
        from nnsight.modeling.mixins.remotable import to_import_path

        key = json.dumps({"repo_id": lm.repo_id, "revision": lm.revision})
        return f"{to_import_path(lm._remoteable_class())}:{key}"


class _Watch:
    """Stands in for nnsight's status display: passes every status on (and the last one
    again about once a second, so a waiting client can show the time elapsed), and ends the
    wait at the deadline (nnsight polls it about every 0.1 s while it waits)."""

    enabled = True  # makes nnsight poll refresh() while it waits on the websocket
    REPEAT_S = 1.0

    def __init__(self, timeout: float, on_status: Callable | None):
        self.start = time.monotonic()
        self.timeout = timeout
        self.on_status = on_status
        self.last: str | None = None
        self.reported = self.start

    def update(self, response) -> None:
        self.last = response.status.value
        self._report()

    def _report(self) -> None:
        self.reported = time.monotonic()
        if self.on_status is not None and self.last is not None:
            self.on_status(self.last, self.reported - self.start)

    def refresh(self) -> None:
        if time.monotonic() - self.reported >= self.REPEAT_S:
            self._report()
        if time.monotonic() - self.start > self.timeout:
            raise RemoteRunError(
                f"NDIF did not answer within {self.timeout:.0f} s (the request may still run "
                "there); try again later, or give a longer timeout")


def backend_for(lm, remote, *, on_status: Callable | None = None,
                timeout: float = DEFAULT_TIMEOUT_S):
    """The nnsight backend a session of `lm` runs through (None: here, no serialisation)."""
    if not remote:
        return None
    if remote == "local":
        from nnsight.intervention.backends.local import LocalSimulationBackend

        return LocalSimulationBackend(lm)
    from nnsight import CONFIG
    from nnsight.intervention.backends.remote import RemoteBackend

    host = host_of(remote)
    key = CONFIG.API.APIKEY or os.environ.get("NDIF_API_KEY") or ""
    if host.rstrip("/") == NDIF_HOST and not key:
        raise RemoteRunError(
            "running on NDIF needs an API key (free at https://login.ndif.us): set NDIF_API_KEY, "
            "or call nnsight.CONFIG.set_default_api_key('...') once")
    backend = RemoteBackend(model_key(lm), host=host, api_key=key or None)
    backend.display = _Watch(timeout, on_status)
    return backend


def explain(err: BaseException, remote) -> RemoteRunError:
    """A `RemoteRunError` for what a remote session raised (nnsight's RemoteError, a lost
    connection, a refused request)."""
    if isinstance(err, RemoteRunError):
        return err
    text = str(err)
    host = host_of(remote)
    if "not found" in text.lower() or "not served" in text.lower() or "404" in text:
        return RemoteRunError(
            f"{host} does not serve this model ({text}); see which models it runs with "
            "nnsight.ndif_status()")
    if isinstance(err, ConnectionError | OSError) or "connect" in text.lower():
        return RemoteRunError(f"cannot reach {host}: {text}")
    return RemoteRunError(f"the request failed on {host}: {text}")


def constants_path(lm) -> Path:
    """Where a remote model's small constants are kept once fetched:
    $NBTOOLS_CACHE/remote/<hash of nnsight's model key>.safetensors."""
    from .models.registry import cache_root

    digest = hashlib.sha256(model_key(lm).encode()).hexdigest()[:24]
    return cache_root().parent / "remote" / f"{digest}.safetensors"


def load_constants(lm) -> dict | None:
    """The cached constants of a remote model, or None (none yet, or unreadable)."""
    path = constants_path(lm)
    try:
        tensors = load_file(str(path))
    except (OSError, ValueError, RuntimeError):  # missing or damaged: fetch again
        return None
    return {k: tensors.get(k) for k in CONSTANT_NAMES}


def store_constants(lm, consts: dict) -> None:
    """Keep a remote model's constants for the next session (best effort: a read-only cache
    only means they are fetched again)."""
    from .errors import OutputError

    tensors = {k: v.contiguous() for k, v in consts.items() if v is not None}
    try:
        files.write_bytes(constants_path(lm), st_save(tensors))
    except OutputError:
        pass
