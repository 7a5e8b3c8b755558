"""Position-suffix reuse: ablated runs that recompute only the positions an ablation can change.

Causal attention never lets a position read a later one, so an ablation whose earliest
ablated position in prompt row b is p_b leaves every position < p_b exactly clean, and no
measured site after row b's last one, e_b, needs computing at all. An ablated run therefore
carries, per row, only the positions p_b..e_b ("the suffix", S slots, padded to the longest
row's), and its attention reads the clean run's keys and values of positions < p_b from a
key-value cache of P = max_b p_b slots (slots p_b..P-1 of row b are masked out). Positions
are per row (`position_ids`), so absolute and rotary position encodings are unchanged. The
measurement session cuts the edits to the slots and builds the cache (`nbtools.tracing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .batching import Batch


@dataclass
class Suffix:
    """The layout of the suffix rows of one prompt batch ([B] prompt rows; repeat per run).

    offset [B]       first computed position p_b (slot i of row b is position p_b + i)
    index [B, S]     the position of every slot (clamped into the prompt width)
    input_ids [B, S], position_ids [B, S]
    attention_mask [B, P + S]  cached positions < p_b, then the real tokens among the slots
    n_cached         P, the cache width (0: no cache, only the trailing positions are cut)
    """

    offset: torch.Tensor
    index: torch.Tensor
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    n_cached: int

    @property
    def width(self) -> int:
        return int(self.index.shape[1])


def plan_suffix(batch: Batch, pos_mask: torch.Tensor, rows: torch.Tensor,
                positions: torch.Tensor) -> Suffix | None:
    """The suffix layout for ablated positions pos_mask [B, T] and measured sites (rows,
    positions [N]); None when every position of the batch must be recomputed anyway."""
    B, T = batch.input_ids.shape
    offset = pos_mask.int().argmax(1)                     # first ablated position per row
    last = offset.clone()
    last.scatter_reduce_(0, rows, positions, reduce="amax")  # last measured site per row
    width = int((last - offset).max()) + 1
    n_cached = int(offset.max())
    if n_cached == 0 and width == T:
        return None
    pos = offset[:, None] + torch.arange(width)           # [B, S]
    index = pos.clamp(max=T - 1)
    real = pos < batch.lengths[:, None]
    cached = torch.arange(n_cached)[None, :] < offset[:, None]
    return Suffix(offset=offset, index=index, input_ids=batch.input_ids.gather(1, index),
                  position_ids=index, attention_mask=torch.cat([cached, real], 1).long(),
                  n_cached=n_cached)
