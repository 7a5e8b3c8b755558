"""R&N's noise figure by layer: boxes of every token's SR per layer and the over-correction
rate, equal to counting the per-token arrays by hand; a sweep without per-token heads is
refused with the option to set."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from conftest import make_lab, random_rows

from nbtools.errors import InvalidInputError
from nbtools.figures import noise_by_layer
from nbtools.sweeps import sweep_heads

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def swept():
    lab = make_lab("gpt2")
    rows = random_rows(6, 16)
    return lab, sweep_heads(lab, rows, heads=None, per_token=["0.1", "1.0", "1.1"],
                            batch_rows=2, progress=False)


def test_over_correction_rate_is_the_share_counted_by_hand(swept):
    _, res = swept
    fig = noise_by_layer(res, B=200)
    ax_box, ax_rate = fig.axes
    assert len(ax_box.lines) >= 2 * 5  # two boxes: median, whiskers, caps
    line = ax_rate.lines[0]
    xs, ys = line.get_xdata(), line.get_ydata()
    assert list(xs) == [0, 1]
    for layer, y in zip(xs, ys, strict=True):
        tok = [res.per_token(f"{layer}.{h}") for h in (0, 1)
               if (layer, h) in {(0, 1), (1, 0), (1, 1)}]
        removed = torch.cat([t["direct_effect"] - t["direct_effect_ablated"] for t in tok])
        sr = torch.cat([t["self_repair"] for t in tok])
        expected = float(((sr > removed) & (removed > 0)).sum() / (removed > 0).sum())
        assert y == pytest.approx(expected)
    assert "over-correction" in fig._nbtools["caption"] and np.isfinite(ys).all()


def test_without_per_token_heads_it_names_the_option():
    lab = make_lab("gpt2")
    res = sweep_heads(lab, random_rows(2, 8), heads="0.0", batch_rows=2, progress=False)
    with pytest.raises(InvalidInputError, match="per_token="):
        noise_by_layer(res)
