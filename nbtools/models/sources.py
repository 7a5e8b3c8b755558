"""Where a model comes from: an embedded or registered name, a GGUF file, a local folder, a hub
id or a built transformers model → the transformers model and its tokenizer (`open_model`).
`nbtools.load` wraps the result in a Lab."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError, UnsupportedModelError
from . import registry
from .adapters import adapter_for, supported_model_types
from .gguf import gguf_file, load_gguf

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _dtype(dtype):
    """A torch floating-point dtype from a name or a dtype (None: as stored); UnsupportedModelError
    naming the choices otherwise (an integer or complex dtype cannot run a model)."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise UnsupportedModelError(f"dtype {dtype!r} cannot run a model; choose from "
                            f"{', '.join(DTYPES)} (or torch.float32 / float16 / bfloat16)")


def _check_device(device) -> None:
    """InvalidInputError unless `device` names a torch device this machine has."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidInputError(
            f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "meta":
        raise InvalidInputError(
            "device 'meta' holds no weights, so nothing can run here; for a model without "
            "weights on NDIF use nbtools.load(..., remote=True)")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise InvalidInputError(
                f"device {device!r}: this torch ({torch.__version__}) sees no CUDA GPU; use "
                "device='cpu', or install a CUDA build of torch on a machine with a GPU")
        if dev.index is not None and dev.index >= n:
            raise InvalidInputError(f"device {device!r}: this machine has cuda:0..cuda:{n - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"device {device!r}: MPS is not available here; use device='cpu'")


def _hub_unreachable() -> bool:
    """True when the model hub cannot be used: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set,
    or (without a proxy) a TCP connection to the hub host fails within 3 s. Deciding this
    once avoids transformers' retries (half a minute) before the same error."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
           for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # the proxy decides; let transformers try
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError:
        return True
    return False


def embedded_names() -> tuple[str, ...]:
    """Names of the models shipped inside nbtools (\"tiny\")."""
    try:
        from ..embedded import EMBEDDED_MODELS
    except ImportError:
        return ()
    return tuple(EMBEDDED_MODELS)


def _from_pretrained(source: str, dtype, revision, local: bool):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    offline = not local and _hub_unreachable()
    where = "local folder" if local else "hub id"
    kwargs = dict(revision=revision, local_files_only=local or offline or None)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        embedded = ", ".join(embedded_names()) or "none installed"
        why = ("the model hub is unreachable (offline) and the local cache has no copy"
               if offline else err)
        raise UnsupportedModelError(
            f"cannot load {source!r} as a {where}: {why}\n"
            f"Give an embedded model name ({embedded}), a registered model name "
            f"({', '.join(registry.REGISTRY)}), a GGUF file, a local model folder, a hub id "
            "(needs network access), or a transformers model object with tokenizer=") from None
    if config.model_type not in supported_model_types():
        raise UnsupportedModelError(
            f"{source!r} is a {config.model_type!r} model; supported architectures: "
            f"{', '.join(supported_model_types())}")
    with _no_progress_bar(local):  # a local folder loads in a second: no bar
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    return model, tokenizer


@contextlib.contextmanager
def _no_progress_bar(hide: bool):
    """Hide transformers' progress bars inside the block when `hide`, then restore them."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    if hide and shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hide and shown:
            hf_logging.enable_progress_bar()


@dataclass
class OpenedModel:
    """A transformers causal LM (on its device, in eval mode) with what `load` records."""

    hf_model: torch.nn.Module
    tokenizer: object
    name: str
    source: dict | None  # GGUF-derived weights: file, quantization type; else None


def open_model(model="tiny", *, tokenizer=None, device: str = "cpu", dtype=None,
               revision: str | None = None, name: str | None = None) -> OpenedModel:
    """The model `nbtools.load` is given, opened (see `nbtools.load` for the arguments).

    Checks the dtype, the device and the architecture before any weight is read where it can.
    """
    dtype = _dtype(dtype)
    _check_device(device)
    if dtype is None and isinstance(model, str) and str(device).startswith("cpu"):
        dtype = torch.float32
    source = None
    if isinstance(model, str):
        label = name or model
        if model.lower() in embedded_names():
            from ..embedded import load_embedded

            label = name or model.lower()
            hf_model, tok = load_embedded(model.lower(), device=device, dtype=dtype)
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
        if not hasattr(model, "config"):
            raise UnsupportedModelError(
                f"cannot load a {type(model).__name__}: it is not a transformers causal language "
                f"model (it has no .config); supported architectures: "
                f"{', '.join(supported_model_types())}")
        hf_model, label = model, name or getattr(model.config, "name_or_path", "") or type(model).__name__
        if tokenizer is None:
            raise UnsupportedModelError("a model object needs its tokenizer: load(model, tokenizer=tok)")
    else:
        raise UnsupportedModelError(
            f"cannot load {model!r}; give an embedded name, a folder, a hub id or a model object")
    adapter_for(hf_model)  # raises a clear error before anything is moved
    hf_model = hf_model.to(device=device, **({"dtype": dtype} if dtype else {})).eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return OpenedModel(hf_model, tokenizer, label, source)


def open_for_remote(model: str, *, tokenizer=None, revision: str | None = None):
    """An nnsight model of a hub id without its weights (the meta device), for remote runs:
    the config and the tokenizer are read (from the hub, or a local folder that holds them);
    the weights stay where the model runs."""
    from nnsight import TransformersModel
    from transformers import AutoConfig, AutoTokenizer

    if not isinstance(model, str) or model.lower() in embedded_names() or \
            model in registry.REGISTRY or gguf_file(model) is not None:
        raise UnsupportedModelError(
            f"a remote run needs a hub id the server serves (e.g. 'openai-community/gpt2'), "
            f"not {model!r}; embedded, registered, GGUF and in-memory models run here "
            "(remote=False, or remote='local' to simulate the remote path)")
    local = os.path.isdir(model)
    kwargs = {"revision": revision} if revision else {}
    try:
        config = AutoConfig.from_pretrained(model, local_files_only=local or None, **kwargs)
        tok = tokenizer or AutoTokenizer.from_pretrained(model, local_files_only=local or None,
                                                         **kwargs)
    except (OSError, ValueError) as err:
        raise UnsupportedModelError(f"cannot read the config and tokenizer of {model!r}: "
                                    f"{err}") from None
    if config.model_type not in supported_model_types():
        raise UnsupportedModelError(
            f"{model!r} is a {config.model_type!r} model; supported architectures: "
            f"{', '.join(supported_model_types())}")
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return TransformersModel(model, tokenizer=tok, task="text-generation", **kwargs)
