"""Result files: safetensors for arrays, a JSON header for settings; atomic, checked, locked.

One file holds a sweep's whole state (streaming accumulators, top-k buffers, per-token
records) plus its summary arrays, so a killed sweep resumes from it and a finished one
loads back without recomputation. The JSON lives in the safetensors metadata under the
key ``"nbtools"``; nothing is pickled. Writes go to a temporary file in the same folder
and are moved into place with ``os.replace``, so a reader (or a resumed run) only ever
sees a complete file. The header holds a SHA-256 of every array and of the rest of the
header, checked on every read. A sweep holds an exclusive lock
(``<file>.lock``, `locked`) from its resume decision to its final save, so a second
writer of the same file fails at once instead of overwriting the first one's results.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

try:
    import fcntl
except ImportError:  # not on Windows: result files are not locked there
    fcntl = None

from .. import files
from ..errors import InvalidInputError
from ..lab import package_versions

FORMAT_VERSION = 2  # 2: checksums of every array and of the header
META_KEY = "nbtools"
DIGEST_KEY = "header_sha256"  # in the header: SHA-256 of the rest of it (one metadata key
#                               keeps the bytes deterministic; safetensors orders keys at random)


class ResultFileError(InvalidInputError):
    """A result file is missing, unreadable, damaged (a checksum does not match), of the wrong
    kind, from different settings, or being written by another sweep."""


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
    """A cheap fingerprint of a model's weights (each parameter's first `n` values). A model
    whose weights are elsewhere (the meta device: a remote run) is named by its hub id and
    its parameters' names and shapes."""
    h = hashlib.sha256()
    for name, p in hf_model.named_parameters():
        h.update(name.encode())
        if p.device.type == "meta":
            h.update(f"{tuple(p.shape)}".encode())
            continue
        flat = p.detach().reshape(-1)[:n].float().cpu().contiguous()
        h.update(flat.numpy().tobytes())
    if next(hf_model.parameters()).device.type == "meta":
        h.update(str(getattr(hf_model.config, "_name_or_path", "")).encode())
    return h.hexdigest()[:16]


def write(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict) -> None:
    """Write tensors + JSON header atomically (temp file in the same folder, then os.replace).

    The header gains "checksums" (SHA-256 of every array) and "header_sha256" (of the rest).
    """
    data = {k: v.detach().cpu().contiguous() for k, v in sorted(tensors.items())}
    body = {**header, "checksums": {k: array_sha256(v) for k, v in data.items()}}
    text = json.dumps({**body, DIGEST_KEY: _header_sha256(body)}, sort_keys=True)
    files.write_bytes(path, st_save(data, metadata={META_KEY: text}))


def array_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (the per-array checksum of result files)."""
    flat = torch.empty(t.numel(), dtype=t.dtype)  # stride 1 even for size-1 views
    flat.copy_(t.detach().cpu().reshape(-1))
    h = hashlib.sha256(f"{t.dtype} {tuple(t.shape)}".encode())
    h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _header_sha256(header: dict) -> str:
    return hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()


def _metadata(path: Path, arrays: bool):
    """(metadata, tensors or None) of a safetensors file, or a ResultFileError."""
    if path.is_dir():
        raise ResultFileError(f"{path} is a folder, not a result file")
    if not path.is_file():
        raise ResultFileError(f"no result file at {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if arrays else None
    except Exception as err:  # safetensors raises its own error types
        raise ResultFileError(f"{path} is not a readable nbtools result file ({err})") from None
    return meta, tensors


def _header(path: Path, meta: dict) -> dict:
    """The checked JSON header: present, unchanged (its SHA-256), of a format this version reads."""
    if META_KEY not in meta:
        raise ResultFileError(f"{path} has no nbtools header; it was not written by nbtools")
    try:
        header = json.loads(meta[META_KEY])
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise ResultFileError(f"{path} is damaged: its header is not a JSON object")
    digest = header.pop(DIGEST_KEY, None)
    if digest is None:
        raise ResultFileError(
            f"{path} was written by an older nbtools (result format {header.get('format', 0)}, "
            f"without checksums); this version reads format {FORMAT_VERSION}: run the sweep again")
    if _header_sha256(header) != digest:
        raise ResultFileError(f"{path} is damaged: its header does not match its checksum")
    if header.get("format", 0) > FORMAT_VERSION:
        raise ResultFileError(f"{path} was written by a newer nbtools (format {header['format']})")
    return header


def read(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, header) of a result file, every checksum verified; `kind` is checked too."""
    path = Path(path)
    meta, tensors = _metadata(path, arrays=True)
    header = _header(path, meta)
    if kind is not None and header.get("kind") != kind:
        raise ResultFileError(f"{path} holds a {header.get('kind')!r} result, not a {kind!r}")
    sums = header.get("checksums", {})
    bad = sorted(k for k in set(sums) | set(tensors)
                 if k not in tensors or array_sha256(tensors[k]) != sums.get(k))
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ResultFileError(
            f"{path} is damaged: array(s) {shown} do not match the checksums written with "
            "them (the file changed after nbtools wrote it); run the sweep again")
    return tensors, header


def peek_kind(path: str | os.PathLike) -> str:
    """The kind of result a file holds, without loading its arrays."""
    path = Path(path)
    return _header(path, _metadata(path, arrays=False)[0]).get("kind", "unknown")


# --- one writer per result file -------------------------------------------------------------
@contextmanager
def locked(path: str | os.PathLike | None):
    """Hold the exclusive lock of result file `path` (``<path>.lock``, removed on release).

    Raises ResultFileError at once if another sweep (another process, or another thread of
    this one) holds it. None: nothing to lock. Where the OS has no `flock`, nothing is locked.
    """
    if path is None or fcntl is None:
        yield
        return
    path = Path(path)
    if path.is_dir():
        raise ResultFileError(f"out={str(path)!r} is a folder; give a result file name such as "
                              f"{str(path / 'sweep.safetensors')!r}")
    files.check_writable(path)  # a missing, read-only or full location fails here, at once
    lock_path = path.with_name(f"{path.name}.lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ResultFileError(
                f"another sweep{f' (process {holder})' if holder else ''} is writing {path} "
                f"(it holds {lock_path.name}); wait for it to finish, or choose another "
                "out= / --out") from None
        if _same_file(fd, lock_path):
            break
        os.close(fd)  # the previous holder removed that lock file on release: take a new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        try:
            os.unlink(lock_path)
        except FileNotFoundError:
            pass
        os.close(fd)


def _holder(fd: int, wait_s: float = 0.5) -> str:
    """The PID the lock's holder wrote into it; it writes it just after taking the lock, so a
    sweep refused in that instant waits briefly for it ("" if none comes)."""
    end = time.monotonic() + wait_s
    while True:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder or time.monotonic() > end:
            return holder
        time.sleep(0.01)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def saved_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A sweep's streaming state from a result file's tensors (the "state/…" arrays)."""
    return {k[len("state/"):]: v for k, v in tensors.items() if k.startswith("state/")}


def resume_state(out: Path | None, kind: str, settings: dict, overwrite: bool,
                 progress_key: str) -> tuple[dict[str, torch.Tensor], int]:
    """(saved sweep state, units done) to continue from when `out` holds a run with these
    settings; ({}, 0) for a fresh start (no file, no out, or overwrite)."""
    if out is None or overwrite:
        return {}, 0
    found = check_resumable(out, kind, settings)
    if found is None:
        return {}, 0
    tensors, header = found
    return saved_state(tensors), int(header["progress"][progress_key])


def check_resumable(path: Path, kind: str, settings: dict) -> tuple[dict, dict] | None:
    """Load a partial (or finished) file written with the same settings, else raise / None.

    Returns (tensors, header) to resume from, or None if there is no file.
    """
    if not path.exists():
        return None
    replace = "choose another out= / --out, or overwrite=True / --overwrite to replace it"
    try:
        tensors, header = read(path)
    except ResultFileError as err:
        raise ResultFileError(f"{err}; {replace}") from None
    if header.get("kind") != kind:
        raise ResultFileError(f"{path} holds a {header.get('kind')!r} result; {replace}")
    old = header.get("settings", {})
    diff = [k for k in set(old) | set(settings)
            if _normalise(old.get(k)) != _normalise(settings.get(k))]
    if diff:
        diff.sort(key=lambda k: (len(repr(old.get(k))) + len(repr(settings.get(k))), k))
        shown = "; ".join(f"{k}: {_brief(old.get(k))} → {_brief(settings.get(k))}"
                          for k in diff[:3])
        if len(diff) > 3:
            shown += f"; also {', '.join(sorted(diff[3:]))}"
        raise ResultFileError(
            f"{path} was written by a sweep with different settings ({shown}); rerun with the "
            "same settings to resume, or overwrite=True / --overwrite to start again")
    return tensors, header


def _brief(x, width: int = 40) -> str:
    """A short repr: long lists as their length and first items, long strings cut."""
    text = repr(x)
    if len(text) <= width:
        return text
    if isinstance(x, list | tuple):
        return f"[{len(x)} items: {', '.join(map(str, x[:2]))}, …]"
    return text[: width - 1] + "…"


def _normalise(x):
    return json.loads(json.dumps(x, sort_keys=True))
