"""Streaming top-k selection with companion columns, deterministic and bounded in memory.

A buffer keeps, for G independent streams (e.g. heads), the k largest keys seen so far and
the values of other columns at the same entries. Ties keep the earlier entry (stable sort,
buffer before new entries), so the selection does not depend on how the stream was cut
into batches and a resumed run selects exactly what an uninterrupted one does.
"""

from __future__ import annotations

import torch


def merge_topk(buffer: dict[str, torch.Tensor] | None, new: dict[str, torch.Tensor], k: int,
               key: str) -> dict[str, torch.Tensor]:
    """Merge new entries into a top-k buffer; returns a new dict (inputs are not modified).

    buffer / new: columns [G, n, ...] sharing the first two axes; `key` names the column
    ranked (descending). The result has min(k, n_old + n_new) entries per stream, sorted by
    key (descending, earlier entry first on ties).
    """
    if buffer is None or buffer[key].shape[1] == 0:
        merged = new
    else:
        merged = {name: torch.cat([buffer[name], new[name]], dim=1) for name in new}
    order = torch.sort(merged[key], dim=1, descending=True, stable=True).indices[:, :k]
    out = {}
    for name, col in merged.items():
        idx = order.reshape(*order.shape, *([1] * (col.dim() - 2))).expand(
            *order.shape, *col.shape[2:])
        out[name] = col.gather(1, idx)
    return out


def top_count(n_sites: int, frac: float) -> int:
    """Number of entries kept for a fraction of n sites: int(frac · n), at least 1 (R&N)."""
    return max(1, int(frac * n_sites))
