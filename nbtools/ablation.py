"""How to ablate: replacement values (zero / mean / resample) and the per-layer edits of a run.

`Replacement` says, for every resample source k, prompt row b and position t, what a
component's activation is replaced with. `build_edits` turns a group of ablations (each a
set of components) into the masks and values of one batched run whose rows are ordered
(ablation, source, prompt row).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .batching import Batch
from .components import AttnLayer, Head, MLPLayer, Neurons
from .errors import InvalidInputError, whole_number
from .models.adapters import Shape
from .tracing import Activations, LayerEdit

METHODS = ("zero", "mean", "resample")


@dataclass
class Replacement:
    """Replacement activations for K sources. Values are [K, B, T, ...] or broadcastable.

    method: "zero" | "mean" | "resample"; description: what the values are (recorded on results).
    For resample: `pool` holds the clean activations of the source prompts, `index` [K, B]
    the pool row each (source, prompt row) uses, `src_pos` [K, B, T] the source position.
    For mean: `means` holds one vector per component (lists indexed by layer).
    """

    method: str
    n_sources: int
    description: str
    shape: Shape
    zero_heads: torch.Tensor | None = None   # [L, H, d_head]: c_V when folded, else None (= 0)
    means: Activations | None = None
    pool: Activations | None = None
    index: torch.Tensor | None = None
    src_pos: torch.Tensor | None = None

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.index[:, :, None], self.src_pos]

    def heads(self, layer: int) -> torch.Tensor:
        if self.method == "resample":
            return self._gather(self.pool.z[layer])
        if self.method == "mean":
            return self.means.z[layer]
        if self.zero_heads is not None:
            return self.zero_heads[layer]
        return torch.zeros(self.shape.n_heads, self.shape.d_head)

    def mlp(self, layer: int) -> torch.Tensor:
        if self.method == "resample":
            return self._gather(self.pool.mlp_out[layer])
        if self.method == "mean":
            return self.means.mlp_out[layer]
        return torch.zeros(self.shape.d_model)

    def neurons(self, layer: int) -> torch.Tensor:
        if self.method == "resample":
            return self._gather(self.pool.neurons[layer])
        if self.method == "mean":
            return self.means.neurons[layer]
        return torch.zeros(self.shape.d_mlp)


def token_means(acts: Activations, mask: torch.Tensor) -> Activations:
    """Mean of every saved activation over the non-padding tokens (mask [B, T])."""
    keep = mask.bool()

    def mean(x):
        return x[keep].float().mean(0)

    return Activations(first_layer=0, z=[mean(z) for z in acts.z],
                       mlp_out=[mean(m) for m in acts.mlp_out],
                       neurons=[mean(n) for n in acts.neurons])


def resample_index(sources, batch: Batch, n_sources: int | None, seed: int):
    """Resolve `sources` to (pool prompts or None for the batch itself, index [K, B], description).

    "shift": row b takes row b+1 (wrapping; R&N). "others": each row takes `n_sources` other
    rows of the batch, drawn with `seed` (Hydra: 15). A list of prompts: every row uses each
    of them. A list of B lists: row b uses its own list (all of the same length K).
    """
    B = batch.size
    if n_sources is not None:
        n_sources = whole_number(n_sources, "n_sources")
        if sources != "others":
            raise InvalidInputError(
                f"n_sources={n_sources} applies only to sources='others' (that many other "
                "prompts per prompt); with other sources leave it out")
        if n_sources < 1:
            raise InvalidInputError(
                f"n_sources must be at least 1 (other prompts per prompt; default 15), "
                f"got {n_sources}")
    if sources is None:
        raise InvalidInputError(
            "method='resample' needs sources: 'shift', 'others', a list of prompts, "
            "or one list of prompts per row")
    if sources == "shift":
        if B < 2:
            raise InvalidInputError("sources='shift' needs at least two prompts in the batch")
        return None, ((torch.arange(B) + 1) % B)[None], "batch rows shifted by one (row i ← row i+1)"
    if sources == "others":
        k = 15 if n_sources is None else n_sources
        if k > B - 1:
            raise InvalidInputError(
                f"sources='others' with n_sources={k} needs at least {k + 1} prompts; got {B}")
        gen = torch.Generator().manual_seed(seed)
        index = torch.empty(k, B, dtype=torch.long)
        for b in range(B):
            others = torch.cat([torch.arange(b), torch.arange(b + 1, B)])
            index[:, b] = others[torch.randperm(B - 1, generator=gen)[:k]]
        return None, index, f"{k} other prompts of the batch per prompt (seed {seed})"
    if isinstance(sources, str):
        raise InvalidInputError(
            f"unknown sources {sources!r}; use 'shift', 'others', a list of prompts, "
            "or one list of prompts per row")
    sources = list(sources)
    if not sources:
        raise InvalidInputError("sources is an empty list")
    if all(isinstance(s, list | tuple) for s in sources) and not all(
            isinstance(x, int) for s in sources for x in s):
        if len(sources) != B:
            raise InvalidInputError(
                f"per-row sources: got {len(sources)} lists for {B} prompts")
        k = len(sources[0])
        if k == 0 or any(len(s) != k for s in sources):
            raise InvalidInputError("per-row sources must all have the same, non-zero length")
        flat = [s for row in sources for s in row]
        index = torch.arange(B * k).reshape(B, k).T.contiguous()
        return flat, index, f"{k} given source prompts per prompt"
    return sources, torch.arange(len(sources))[:, None].expand(-1, B).contiguous(), \
        f"{len(sources)} given source prompt(s), shared by every prompt"


def source_positions(batch: Batch, pool_lengths: torch.Tensor, index: torch.Tensor,
                     pos_mask: torch.Tensor, positions) -> torch.Tensor:
    """Source position [K, B, T] for every ablated (source, row, position); checks lengths.

    Position-matched: the same index, except positions="final" maps a prompt's final token
    to the source's final token. A source never supplies a padding position.
    """
    K, B = index.shape
    T = batch.input_ids.shape[1]
    src_len = pool_lengths[index]                                  # [K, B]
    if positions == "final":
        return (src_len - 1)[:, :, None].expand(K, B, T).contiguous()
    t = torch.arange(T).expand(K, B, T)
    needed = torch.where(pos_mask[None], t, torch.full_like(t, -1)).amax(-1)  # [K, B]
    short = (needed >= src_len).nonzero()
    if short.numel():
        k, b = (int(x) for x in short[0])
        raise InvalidInputError(
            f"resample source {int(index[k, b])} has {int(src_len[k, b])} tokens, but prompt {b} "
            f"is ablated at position {int(needed[k, b])}; position-matched sources must be "
            "at least as long as the ablated positions")
    return torch.minimum(t, (src_len - 1)[:, :, None]).contiguous()


def build_edits(ablations: list[tuple], shape: Shape, pos_mask: torch.Tensor,
                repl: Replacement) -> dict[int, LayerEdit]:
    """Per-layer edits for runs whose rows are (ablation a, source k, prompt row b), a-major."""
    A, K = len(ablations), repl.n_sources
    B, T = pos_mask.shape
    rows = A * K * B

    def rows_mask(comp_mask):  # [A, X] → [rows, T, X]
        m = comp_mask[:, None, None, None, :] & pos_mask[None, None, :, :, None]
        return m.expand(A, K, B, T, comp_mask.shape[1]).reshape(rows, T, -1)

    def rows_value(value, trailing):  # [K, B, T, *trailing] → [rows, T, *trailing]
        if value.dim() == len(trailing):
            return value
        return value[None].expand(A, *value.shape).reshape(rows, T, *trailing)

    edits: dict[int, LayerEdit] = {}
    layers = sorted({c.layer for abl in ablations for c in abl})
    for layer in layers:
        heads = torch.zeros(A, shape.n_heads, dtype=torch.bool)
        neurons = torch.zeros(A, shape.d_mlp, dtype=torch.bool)
        mlp = torch.zeros(A, 1, dtype=torch.bool)
        for a, abl in enumerate(ablations):
            for c in abl:
                if c.layer != layer:
                    continue
                if isinstance(c, Head):
                    heads[a, c.head] = True
                elif isinstance(c, AttnLayer):
                    heads[a] = True
                elif isinstance(c, MLPLayer):
                    mlp[a] = True
                elif isinstance(c, Neurons):
                    neurons[a, list(c.neurons)] = True
        edit = LayerEdit()
        if heads.any():
            edit.head_mask = rows_mask(heads)
            edit.head_value = rows_value(repl.heads(layer), (shape.n_heads, shape.d_head))
        if neurons.any():
            edit.neuron_mask = rows_mask(neurons)
            edit.neuron_value = rows_value(repl.neurons(layer), (shape.d_mlp,))
        if mlp.any():
            edit.mlp_mask = rows_mask(mlp)[..., 0]
            edit.mlp_value = rows_value(repl.mlp(layer), (shape.d_model,))
        edits[layer] = edit
    return edits
