"""How to ablate: where resample sources come from, and what each ablation replaces.

`resample_index` and `source_positions` say, for every resample source k, prompt row b and
position t, which source row and position replaces a component's activation; `edit_masks`
says which components each ablation of a group replaces. The values themselves (zeros, the
value constant, token means, the sources' activations) are formed in the measurement session,
where the activations are (`nbtools.tracing.measure_session`).
"""

from __future__ import annotations

import torch

from .batching import Batch
from .components import AttnLayer, Head, MLPLayer, Neurons
from .errors import InvalidInputError, whole_number
from .shapes import Shape

METHODS = ("zero", "mean", "resample")


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


def edit_masks(ablations: list[tuple], shape: Shape) -> dict[int, dict[str, torch.Tensor]]:
    """What each ablation of a group replaces, per layer: {layer: {"heads": [A, n_heads],
    "mlp": [A], "neurons": [A, d_mlp]}} (bool; a kind appears only where something is ablated).

    A measurement session turns these into the masks and values of runs whose rows are
    ordered (ablation a, source k, prompt row b), a-major.
    """
    A = len(ablations)
    masks: dict[int, dict[str, torch.Tensor]] = {}
    for layer in sorted({c.layer for abl in ablations for c in abl}):
        heads = torch.zeros(A, shape.n_heads, dtype=torch.bool)
        neurons = torch.zeros(A, shape.d_mlp, dtype=torch.bool)
        mlp = torch.zeros(A, dtype=torch.bool)
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
        parts = {"heads": heads, "neurons": neurons, "mlp": mlp}
        masks[layer] = {k: v for k, v in parts.items() if v.any()}
    return masks
