"""Uncertainty for every summary: seeded bootstrap intervals over the sampling unit.

    lo, hi = interval(per_row_sums, per_row_counts)            # a mean over sites, rows resampled
    lo, hi = interval(num, den, ratio=True)                     # a ratio of means
    lo, hi = interval_of(values, statistic)                     # any statistic of [n, ...] units

The unit resampled is what was sampled independently: corpus rows for R&N's head sweep
(sites of one row share its context), prompts for the Hydra layer sweep. B = 1000 draws by
default, percentile 95 % intervals, a fixed seed so that a figure regenerates to the same
bars. A ratio whose denominator's own interval contains 0 has no interval worth drawing:
`ratio_interval` returns NaN bounds and a reason, and callers show "—" with it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

B_DEFAULT = 1000
LEVEL = 0.95


def draws(n_units: int, B: int = B_DEFAULT, seed: int = 0) -> torch.Tensor:
    """[B, n_units] resampling counts: how often each unit is drawn in each bootstrap draw
    (multinomial, n_units draws with replacement)."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, n_units, (B, n_units), generator=gen)
    counts = torch.zeros(B, n_units, dtype=torch.float64)
    counts.scatter_add_(1, picks, torch.ones_like(picks, dtype=torch.float64))
    return counts


def bounds(samples: torch.Tensor, level: float = LEVEL) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bounds over the first axis (NaN draws ignored)."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    return tuple(torch.nanquantile(samples.double(), q, dim=0))


def interval(sums: torch.Tensor, counts: torch.Tensor, *, B: int = B_DEFAULT, seed: int = 0,
             level: float = LEVEL) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval of Σ sums / Σ counts with units (the first axis) resampled.

    sums [n, ...] per unit (e.g. a quantity summed over a row's sites, per head); counts [n]
    or [n, ...] the sites each unit holds. Returns (low, high) shaped like one unit.
    """
    w = draws(sums.shape[0], B, seed)                          # [B, n]
    num = torch.tensordot(w, sums.double(), dims=([1], [0]))   # [B, ...]
    den = torch.tensordot(w, counts.double(), dims=([1], [0]))
    return bounds(num / den, level)


def ratio_interval(num: torch.Tensor, den: torch.Tensor, counts: torch.Tensor, *,
                   B: int = B_DEFAULT, seed: int = 0, level: float = LEVEL):
    """Interval of a ratio of means, mean(num) / mean(den), units resampled (num and den are
    per-unit sums [n, ...] over `counts` sites). Where the denominator's own interval contains
    0 the bounds are NaN: ((low, high), reason [...] bool — True where undefined)."""
    w = draws(num.shape[0], B, seed)
    n = torch.tensordot(w, counts.double(), dims=([1], [0]))
    top = torch.tensordot(w, num.double(), dims=([1], [0])) / n
    bottom = torch.tensordot(w, den.double(), dims=([1], [0])) / n
    d_lo, d_hi = bounds(bottom, level)
    undefined = (d_lo <= 0) & (d_hi >= 0)
    lo, hi = bounds(top / bottom, level)
    nan = torch.full_like(lo, float("nan"))
    return (torch.where(undefined, nan, lo), torch.where(undefined, nan, hi)), undefined


def interval_of(values: torch.Tensor, statistic: Callable[[torch.Tensor], torch.Tensor], *,
                B: int = B_DEFAULT, seed: int = 0, level: float = LEVEL):
    """Interval of any statistic of units values [n, ...] (e.g. a regression slope over
    prompts): `statistic` maps a resample [n, ...] to a tensor."""
    gen = torch.Generator().manual_seed(seed)
    n = values.shape[0]
    samples = torch.stack([statistic(values[torch.randint(0, n, (n,), generator=gen)])
                           for _ in range(B)])
    return bounds(samples, level)


def fit_intervals(x: torch.Tensor, y: torch.Tensor, *, B: int = B_DEFAULT, seed: int = 0,
                  level: float = LEVEL) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Intervals of the least-squares fit of y on x per column, units (rows) resampled: x, y
    [n, m] (NaN entries dropped). Returns {"slope", "r2", "r"} → (low, high), each [m]."""
    keep = (torch.isfinite(x) & torch.isfinite(y)).double()
    x, y = torch.nan_to_num(x.double()), torch.nan_to_num(y.double())
    w = draws(x.shape[0], B, seed)[:, :, None] * keep                  # [B, n, m]
    n = w.sum(1, keepdim=True)
    xc, yc = x - (w * x).sum(1, keepdim=True) / n, y - (w * y).sum(1, keepdim=True) / n
    sxx, syy, sxy = ((w * a * b).sum(1) for a, b in ((xc, xc), (yc, yc), (xc, yc)))
    r = sxy / (sxx * syy).sqrt()
    return {"slope": bounds(sxy / sxx, level), "r2": bounds(r * r, level), "r": bounds(r, level)}
