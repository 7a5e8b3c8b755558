"""The attention session: one layer's attention weights (see `nbtools.tracing`)."""

from __future__ import annotations

import contextlib

import nnsight
import torch

from .lock import TRACE_LOCK


@contextlib.contextmanager
def eager_attention(hf_model):
    """Run a local `hf_model` with eager attention (the implementation that returns its
    weights; SDPA and flash kernels return none), restoring the original afterwards."""
    original = hf_model.config._attn_implementation
    set_impl = getattr(hf_model, "set_attn_implementation", None)

    def use(impl):
        if set_impl is not None:
            set_impl(impl)
        else:
            hf_model.config._attn_implementation = impl

    if original == "eager":
        yield
        return
    use("eager")
    try:
        yield
    finally:
        use(original)


def attention_session(lm, job: dict, backend) -> torch.Tensor:
    """The clean run's attention weights of one layer [rows, n_heads, pos, pos] (query, key).

    job: paths, input_ids, attention_mask, layer, prefix (the clean output of the layer before,
    [rows, pos, d_model], or None: every earlier layer runs).
    """
    with TRACE_LOCK, torch.no_grad(), lm.session(backend=backend):
        paths, layer, prefix = job["paths"], job["layer"], job["prefix"]

        def module(path, layer=None):
            node = lm
            for part in (path if layer is None else path.format(layer)).split("."):
                node = node[int(part)] if part.isdigit() else getattr(node, part)
            return node
        with lm.trace({"input_ids": job["input_ids"], "attention_mask": job["attention_mask"]}, logits_to_keep=1, use_cache=False) as tracer:
            if prefix is not None:
                layers = module(paths["layers"])
                for earlier in range(layer):
                    layers[earlier].skip(prefix)
            weights = nnsight.save(module(paths["attention"], layer).output[1])
            tracer.stop()
    return weights
