"""The nnsight trace bodies: one clean run, one batched ablated run, one attention read.

These are the only functions that open a tracing context. They read and write
activations and save the few tensors the algebra needs; all maths lives elsewhere.
Reads follow execution order inside each layer: z (attention output projection input),
neuron activations (MLP down projection input), MLP output, block output.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from dataclasses import dataclass, field

import torch


@dataclass
class Activations:
    """Saved activations of one run over `rows` batch rows, for layers `first_layer..`.

    z[l]         [rows, pos, n_heads, d_head]  input of the attention output projection
    mlp_out[l]   [rows, pos, d_model]          MLP output
    neurons[l]   [rows, pos, d_mlp]            MLP neuron activations (if requested)
    block_out[l] [rows, pos, d_model]          residual stream after block l (clean runs)
    embeddings   list of [rows, pos, d_model]  (clean runs)
    resid_final  [rows, pos, d_model]          input of the final norm
    keys[l], values[l] [rows, n_kv_heads, pos, d_head]  attention cache (clean runs)
    Lists are indexed by layer - first_layer. `offset` [prompt rows] (suffix runs, see
    `nbtools.suffix`): position t of prompt row b is stored at t - offset[b].
    """

    first_layer: int
    z: list[torch.Tensor] = field(default_factory=list)
    mlp_out: list[torch.Tensor] = field(default_factory=list)
    neurons: list[torch.Tensor] = field(default_factory=list)
    block_out: list[torch.Tensor] = field(default_factory=list)
    embeddings: list[torch.Tensor] = field(default_factory=list)
    resid_final: torch.Tensor | None = None
    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    offset: torch.Tensor | None = None


@dataclass
class LayerEdit:
    """Replacements for one layer of an ablated run (masks are bool, broadcast over rows)."""

    head_mask: torch.Tensor | None = None    # [rows, pos, n_heads]
    head_value: torch.Tensor | None = None   # [rows, pos, n_heads, d_head]
    neuron_mask: torch.Tensor | None = None  # [rows, pos, d_mlp]
    neuron_value: torch.Tensor | None = None  # [rows, pos, d_mlp]
    mlp_mask: torch.Tensor | None = None     # [rows, pos]
    mlp_value: torch.Tensor | None = None    # [rows, pos, d_model]


# nnsight keeps a traced model's intervention state on the model and runs a trace body in
# greenlets bound to the calling thread: two traces of one model at once on two threads (the
# Explorer's worker and a notebook cell) interleave and fail. Every trace here holds this
# lock (also through two Labs wrapping one model; a Lab has its own lock for its caches).
_TRACE_LOCK = threading.RLock()


def _inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids=None) -> dict:
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    return inputs


def _cache_kwarg(hf_model) -> str:
    """The forward argument that takes a key-value cache ("cache" from transformers 5.2x)."""
    params = inspect.signature(hf_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def run_clean(lm, adapter, input_ids, attention_mask, neurons: bool,
              kv: bool = False) -> Activations:
    """Trace the unmodified model and save every activation the measurements use, and with
    `kv` its key-value cache (what suffix runs attend to)."""
    s = adapter.shape
    acts = Activations(first_layer=0)
    with _TRACE_LOCK, torch.no_grad(), lm.trace(_inputs(input_ids, attention_mask),
                                                logits_to_keep=1, use_cache=kv):
        for module in adapter.embeddings(lm):
            acts.embeddings.append(module.output.save())
        layers = adapter.layers(lm)
        for layer in range(s.n_layers):
            acts.z.append(adapter.attn_out_proj(lm, layer).input.save())
            if neurons:
                acts.neurons.append(adapter.mlp_down_proj(lm, layer).input.save())
            acts.mlp_out.append(adapter.mlp(lm, layer).output.save())
            acts.block_out.append(layers[layer].output.save())
        acts.resid_final = adapter.final_norm(lm).input.save()
        output = lm.output.save() if kv else None
    if kv:
        cache = getattr(output, "cache", None) or output.past_key_values
        acts.keys = [layer.keys for layer in cache.layers]
        acts.values = [layer.values for layer in cache.layers]
    acts.z = [z.reshape(*z.shape[:2], s.n_heads, s.d_head) for z in acts.z]
    # position embeddings come out as [1, pos, d_model]: give every embedding the batch axis
    acts.embeddings = [e.expand(input_ids.shape[0], -1, -1) for e in acts.embeddings]
    return acts


def run_ablated(lm, adapter, input_ids, attention_mask, edits: dict[int, LayerEdit],
                prefix: list[torch.Tensor] | None, neurons: bool, position_ids=None,
                cache=None) -> Activations:
    """Trace the model with `edits` applied and save activations from the first edited layer on.

    `prefix`, if given, holds the clean block outputs of every layer before the first
    edited one ([rows, pos, d_model] each): those layers are skipped and their cached
    outputs used instead (an ablation cannot change anything upstream of itself).
    `position_ids` [rows, pos] and `cache` (a transformers cache of earlier positions, which
    `attention_mask` then covers too) run a position suffix (see `nbtools.suffix`).
    """
    s = adapter.shape
    start = min(edits)
    acts = Activations(first_layer=start)
    extra = {"use_cache": False} if cache is None else {_cache_kwarg(lm._module): cache,
                                                          "use_cache": True}
    with _TRACE_LOCK, torch.no_grad(), lm.trace(_inputs(input_ids, attention_mask, position_ids),
                                                logits_to_keep=1, **extra) as tracer:
        layers = adapter.layers(lm)
        if prefix is not None:
            for layer in range(start):
                layers[layer].skip(prefix[layer])
        for layer in range(start, s.n_layers):
            edit = edits.get(layer)
            proj = adapter.attn_out_proj(lm, layer)
            z = proj.input
            if edit is not None and edit.head_mask is not None:
                z4 = z.reshape(*z.shape[:2], s.n_heads, s.d_head)
                z4 = torch.where(edit.head_mask[..., None], edit.head_value.to(z.dtype), z4)
                proj.input = z4.reshape(z.shape)
                z = proj.input
            acts.z.append(z.save())
            if edit is not None and edit.neuron_mask is not None:
                down = adapter.mlp_down_proj(lm, layer)
                down.input = torch.where(edit.neuron_mask, edit.neuron_value.to(z.dtype), down.input)
            if neurons:
                acts.neurons.append(adapter.mlp_down_proj(lm, layer).input.save())
            mlp = adapter.mlp(lm, layer)
            if edit is not None and edit.mlp_mask is not None:
                mlp.output = torch.where(edit.mlp_mask[..., None], edit.mlp_value.to(z.dtype),
                                         mlp.output)
            acts.mlp_out.append(mlp.output.save())
        acts.resid_final = adapter.final_norm(lm).input.save()
        tracer.stop()  # the final norm and the unembedding are computed in the algebra
    acts.z = [z.reshape(*z.shape[:2], s.n_heads, s.d_head) for z in acts.z]
    return acts


@contextlib.contextmanager
def _eager_attention(hf_model):
    """Run `hf_model` with eager attention (the implementation that returns its weights; SDPA
    and flash kernels return none), restoring the original implementation afterwards."""
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


def run_attention(lm, adapter, input_ids, attention_mask, layer: int,
                  prefix: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The clean run's attention weights of `layer` [rows, n_heads, pos, pos] (query, key).

    `prefix`, if given, holds the clean block outputs of the layers before `layer` ([rows,
    pos, d_model] each): those layers are skipped, so the trace computes one layer.
    """
    with _TRACE_LOCK, _eager_attention(lm._module), torch.no_grad():
        with lm.trace(_inputs(input_ids, attention_mask), logits_to_keep=1,
                      use_cache=False) as tracer:
            if prefix is not None:
                layers = adapter.layers(lm)
                for earlier in range(layer):
                    layers[earlier].skip(prefix[earlier])
            weights = adapter.attention(lm, layer).output[1].save()
            tracer.stop()  # nothing downstream of this layer is needed
    return weights
