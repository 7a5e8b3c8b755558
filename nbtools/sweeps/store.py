"""Result files: safetensors for arrays, a JSON header for settings; atomic writes.

One file holds a sweep's whole state (streaming accumulators, top-k buffers, per-token
records) plus its summary arrays, so a killed sweep resumes from it and a finished one
loads back without recomputation. The JSON lives in the safetensors metadata under the
key ``"nbtools"``; nothing is pickled. Writes go to a temporary file in the same folder
and are moved into place with ``os.replace``, so a reader (or a resumed run) only ever
sees a complete file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from ..errors import InvalidInputError
from ..lab import package_versions

FORMAT_VERSION = 1
META_KEY = "nbtools"


class ResultFileError(InvalidInputError):
    """A result file is missing, unreadable, of the wrong kind, or from different settings."""


def versions() -> dict[str, str]:
    """Versions of the packages whose behaviour the numbers depend on."""
    return dict(package_versions())


def tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) of the tensors' bytes: a corpus / prompt-set fingerprint."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def model_digest(hf_model: torch.nn.Module, n: int = 65536) -> str:
    """A cheap fingerprint of a model's weights (each parameter's first `n` values)."""
    h = hashlib.sha256()
    for name, p in hf_model.named_parameters():
        flat = p.detach().reshape(-1)[:n].float().cpu().contiguous()
        h.update(name.encode())
        h.update(flat.numpy().tobytes())
    return h.hexdigest()[:16]


def write(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict) -> None:
    """Write tensors + JSON header atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v.detach().cpu().contiguous() for k, v in sorted(tensors.items())}
    blob = st_save(data, metadata={META_KEY: json.dumps(header, sort_keys=True)})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, header) of a result file; `kind` ("head_sweep" / "layer_sweep") is checked."""
    path = Path(path)
    if not path.is_file():
        raise ResultFileError(f"no result file at {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ResultFileError(f"{path} is not an nbtools result file ({err})") from None
    if META_KEY not in meta:
        raise ResultFileError(f"{path} has no nbtools header; it was not written by nbtools")
    header = json.loads(meta[META_KEY])
    if kind is not None and header.get("kind") != kind:
        raise ResultFileError(f"{path} holds a {header.get('kind')!r} result, not a {kind!r}")
    if header.get("format", 0) > FORMAT_VERSION:
        raise ResultFileError(f"{path} was written by a newer nbtools (format {header['format']})")
    return tensors, header


def peek_kind(path: str | os.PathLike) -> str:
    """The kind of result a file holds, without loading its arrays."""
    if not Path(path).is_file():
        raise ResultFileError(f"no result file at {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise ResultFileError(f"{path} is not an nbtools result file ({err})") from None
    if META_KEY not in meta:
        raise ResultFileError(f"{path} has no nbtools header; it was not written by nbtools")
    return json.loads(meta[META_KEY]).get("kind", "unknown")


def check_resumable(path: Path, kind: str, settings: dict) -> tuple[dict, dict] | None:
    """Load a partial (or finished) file written with the same settings, else raise / None.

    Returns (tensors, header) to resume from, or None if there is no file.
    """
    if not path.exists():
        return None
    tensors, header = read(path)
    if header.get("kind") != kind:
        raise ResultFileError(
            f"{path} holds a {header.get('kind')!r} result; choose another --out, or "
            "overwrite=True / --overwrite to replace it")
    old = header.get("settings", {})
    diff = sorted(k for k in set(old) | set(settings)
                  if _normalise(old.get(k)) != _normalise(settings.get(k)))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} → {settings.get(k)!r}" for k in diff[:4])
        raise ResultFileError(
            f"{path} was written by a sweep with different settings ({shown}); rerun with the "
            "same settings to resume, or overwrite=True / --overwrite to start again")
    return tensors, header


def _normalise(x):
    return json.loads(json.dumps(x, sort_keys=True))
