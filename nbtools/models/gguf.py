"""GGUF files (llama.cpp's format): find one, read its architecture and quantization, and
dequantize it into a plain `transformers` model.

Needs the optional packages `gguf` and `accelerate` (``pip install "nbtools[gguf]"``).
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import torch

from ..errors import UnsupportedModelError

EXTRA = 'pip install "nbtools[gguf]"'
# GGUF architecture name → transformers model type, for the families nbtools has adapters for
# and transformers can read from GGUF (it reads no GPT-NeoX GGUF).
ARCHITECTURES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "gpt2": "gpt2",
                 "gemma3": "gemma3_text"}


def gguf_file(source: str | Path) -> Path | None:
    """The GGUF file `source` names: the file itself, or the one .gguf in a folder that has no
    config.json. None when `source` is neither; UnsupportedModelError for several."""
    path = Path(source)
    if path.suffix.lower() == ".gguf":
        if path.is_dir():
            raise UnsupportedModelError(f"{source} is a folder, not a GGUF file")
        if not path.is_file():
            raise UnsupportedModelError(f"no such GGUF file: {source}")
        return path
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    if len(found) > 1:
        raise UnsupportedModelError(
            f"{source} holds several GGUF files; give one of them: "
            f"{', '.join(p.name for p in found)}")
    return found[0] if found else None


def _require_extra() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise UnsupportedModelError(
            f"loading a GGUF file needs the package(s) {', '.join(missing)}: {EXTRA}")


def describe(path: str | Path) -> dict:
    """The file's name, GGUF architecture and quantization type (e.g. "Q4_1"), read from its
    header: general.file_type, else the most common type among its tensors."""
    _require_extra()
    import gguf

    path = Path(path)
    reader = _checked_reader(path)
    field = reader.fields.get("general.architecture")
    arch = str(field.contents()) if field is not None else "unknown"
    field = reader.fields.get("general.file_type")
    quant = None
    if field is not None:
        try:
            quant = gguf.LlamaFileType(int(field.contents())).name.removeprefix(
                "MOSTLY_").removeprefix("ALL_")
        except ValueError:
            quant = None
    if quant is None:
        counts = Counter(t.tensor_type.name for t in reader.tensors)
        quant = counts.most_common(1)[0][0] if counts else "unknown"
    return {"file": path.name, "architecture": arch, "quantization": quant}


class GGUFFileError(UnsupportedModelError):
    """A GGUF file is damaged: not GGUF, truncated, or its tensors do not fit in the file."""


def _checked_reader(path: Path):
    """The file's GGUFReader, once its header parsed and every tensor's data lies inside the
    file (checked from the header alone: nothing is dequantized or allocated before)."""
    import gguf

    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise GGUFFileError(f"{path} is not a readable GGUF file: it does not start with 'GGUF'")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # the reader fails in many ways on a cut or garbled header
        raise GGUFFileError(f"{path} is damaged: its GGUF header cannot be read "
                            f"({type(err).__name__}: {err}); the file is {size} bytes") from None
    if not reader.tensors:
        raise GGUFFileError(f"{path} holds no tensors (a header without weights)")
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size or int(t.data.nbytes) != int(t.n_bytes):
            raise GGUFFileError(
                f"{path} is damaged: tensor {t.name!r} needs bytes up to {end} but the file "
                f"has {size} (truncated, or a mis-shaped tensor)")
    return reader


def load_gguf(path: str | Path, dtype: torch.dtype | None = None):
    """Dequantize a GGUF file into a plain `transformers` causal LM (default float32) and its
    tokenizer. Returns (model, tokenizer, info) with info from `describe` plus the dtype.
    The architecture is checked before anything is dequantized."""
    info = describe(path)
    if info["architecture"] not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"{info['file']} is a {info['architecture']!r} GGUF; nbtools reads GGUF files of "
            f"the architectures {', '.join(ARCHITECTURES)}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    dtype = dtype or torch.float32
    folder, name = str(path.parent), path.name
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # transformers marks a GGUF-loaded model as quantized (it cannot be saved or cast); the
    # weights are already dequantized, so move them into a plain model of the same config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(quantized.state_dict())
    del quantized
    return model.eval(), tokenizer, {**info, "dtype": str(dtype).replace("torch.", "")}
