"""Writing files safely: every file nbtools writes appears whole, or not at all.

    with atomic_path("runs/heads.safetensors") as tmp:   # a temporary file beside the target
        save_somehow(tmp)                                 # moved into place when the block ends
    write_bytes(path, data); write_text(path, text)
    with atomic_folder_files("runs/model") as tmp:    # for writers that fill a folder
        model.save_pretrained(tmp)                    # each file moved into runs/model
    check_writable(path)    # before any work: the folder exists (or is made) and takes files

A failure to write raises one `OutputError` naming the path and the cause (a missing or
read-only folder, a full disk, a file-size limit); the temporary file is removed whatever
happened, so nothing partial is left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cause(err: OSError) -> str:
    return err.strerror or type(err).__name__


def _make_folder(path: Path) -> None:
    """The folder that will hold `path`, created if missing; OutputError if it cannot be."""
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name inside it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write {path}: {path.parent} exists and is not a folder") \
            from None
    except OSError as err:
        raise OutputError(f"cannot write {path}: cannot create the folder {path.parent} "
                          f"({_cause(err)})") from None


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path in `path`'s folder; on a clean exit it is synced and renamed to `path`
    (with the usual permissions), on any error removed. `suffix` ends the temporary name (some
    writers insist on one, e.g. ".npy")."""
    path = Path(path)
    _make_folder(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp",
                                    dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {_cause(err)}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {_cause(err)}") from None
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def atomic_folder_files(folder: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder inside `folder` (made if missing) for a writer that writes several
    files; on a clean exit each file is synced and renamed into `folder` (with the usual
    permissions, replacing a file of the same name), on any error the temporary folder is
    removed. Each file appears whole; the files are not replaced all at once."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    except OSError as err:
        raise OutputError(f"cannot write into {folder}: {_cause(err)}") from None
    try:
        yield staging
        for tmp in sorted(staging.iterdir()):
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, folder / tmp.name)
    except OSError as err:
        raise OutputError(f"cannot write into {folder}: {_cause(err)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_path`)."""
    write_bytes(path, text.encode("utf-8"))


def check_writable(path: str | os.PathLike) -> Path:
    """`path` as a Path once its folder exists (made if missing) and takes a new file; else
    OutputError naming the cause. Call it before a long run, not after."""
    path = Path(path)
    _make_folder(path)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {_cause(err)}") from None
    os.close(fd)
    os.unlink(probe)
    return path
