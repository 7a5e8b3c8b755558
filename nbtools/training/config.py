"""The settings that determine the trained model, and its learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained model (the defaults are the shipped recipe)."""

    max_tokens: int = 8_300_000
    seed: int = 0
    vocab_size: int = 8192
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 256
    n_positions: int = 256
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 300
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    heldout_fraction: float = 0.03
    save_dtype: str = "float16"
    subset_tokens: int = 40_000

    @property
    def total_steps(self) -> int:
        return max(1, self.max_tokens // self.tokens_per_step)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def effective_warmup(self) -> int:
        """Warm-up steps, capped at a tenth of the run so tiny runs still decay."""
        return max(1, min(self.warmup_steps, self.total_steps // 10))

    def lr_at(self, step: int) -> float:
        """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` at the last step."""
        warmup = self.effective_warmup
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.total_steps - 1 - warmup)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))
