"""Sizes of a model: the one noun every layer of nbtools shares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """Sizes of a model, read from its modules and config (see `nbtools.models.adapters`)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
