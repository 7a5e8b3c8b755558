"""Small language models shipped inside the package, loadable fully offline.

>>> model, tokenizer = load_embedded("tiny")

Each model lives in a folder next to this file with its weights, config, tokenizer files
and a ``card.json`` recording how it was trained and the SHA-256 of every file that is
loaded; the hashes are checked before loading.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModelError",
    "embedded_dir",
    "load_embedded",
    "load_from_dir",
    "read_card",
    "verify_dir",
]

#: Names of the models shipped with the package.
EMBEDDED_MODELS = ("tiny",)

_PACKAGE_DIR = Path(__file__).resolve().parent
_REGENERATE = (
    "Reinstall nbtools, or regenerate the model with `nbtools train-tiny --out <dir>` and "
    "copy its files into {folder}."
)


class EmbeddedModelError(RuntimeError):
    """An embedded model folder is missing, incomplete or corrupted."""


def embedded_dir(name: str = "tiny") -> Path:
    """The folder of a shipped model."""
    if name not in EMBEDDED_MODELS:
        raise EmbeddedModelError(
            f"Unknown embedded model {name!r}; available: {', '.join(EMBEDDED_MODELS)}."
        )
    return _PACKAGE_DIR / name


def _error(folder: Path, problem: str) -> EmbeddedModelError:
    return EmbeddedModelError(f"{problem} {_REGENERATE.format(folder=folder)}")


def read_card(folder: str | os.PathLike) -> dict:
    """The parsed ``card.json`` of a model folder."""
    folder = Path(folder)
    path = folder / "card.json"
    if not path.is_file():
        raise _error(folder, f"Model card {path} is missing.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error(folder, f"Model card {path} is not valid JSON ({exc}).") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_dir(folder: str | os.PathLike) -> dict:
    """Check that every file listed in ``card.json`` exists and has its recorded SHA-256.

    Returns the card; raises :class:`EmbeddedModelError` naming the first bad file.
    """
    folder = Path(folder)
    card = read_card(folder)
    hashes = card.get("sha256")
    if not isinstance(hashes, dict) or "model.safetensors" not in hashes:
        raise _error(folder, f"{folder / 'card.json'} lists no SHA-256 for model.safetensors.")
    for name, expected in hashes.items():
        path = folder / name
        if not path.is_file():
            raise _error(folder, f"File {path} is missing.")
        actual = _sha256(path)
        if actual != expected:
            raise _error(
                folder,
                f"File {path} is corrupted: SHA-256 {actual} does not match {expected} "
                "recorded in card.json.",
            )
    return card


def load_from_dir(folder: str | os.PathLike, device="cpu", dtype=None, verify: bool = True):
    """Load ``(model, tokenizer)`` from a model folder offline, in eval mode.

    ``dtype`` defaults to float32; ``verify`` checks the files against ``card.json`` first.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    if not folder.is_dir():
        raise _error(folder, f"Model folder {folder} does not exist.")
    if verify:
        verify_dir(folder)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a small local load: no "Loading weights" bar
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype or torch.float32, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _error(folder, f"Cannot load the model in {folder}: {exc}") from exc
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return model.to(device).eval(), tokenizer


def load_embedded(name: str = "tiny", device="cpu", dtype=None):
    """Load a shipped model and its tokenizer offline: ``(hf_model, tokenizer)``, in eval mode.

    The files' SHA-256 are checked against ``card.json``; a missing or corrupted file
    raises :class:`EmbeddedModelError`.
    """
    return load_from_dir(embedded_dir(name), device=device, dtype=dtype)
