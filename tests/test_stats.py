"""Bootstrap intervals: seeded, the right width on data of known spread, and a ratio whose
denominator may be zero shown as undefined."""

from __future__ import annotations

import torch

from nbtools import stats


def test_mean_interval_has_the_normal_width():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, generator=gen, dtype=torch.float64) * 2.0 + 1.0
    lo, hi = stats.interval(x, torch.ones(400))
    expected = 2 * 1.96 * 2.0 / 400 ** 0.5
    assert abs(float(hi - lo) / expected - 1) < 0.15
    assert lo < x.mean() < hi


def test_units_with_many_sites_are_resampled_whole():
    """Rows of different sizes: the interval is of Σ sums / Σ counts, rows drawn whole — equal
    to resampling the rows by hand with the same draws."""
    gen = torch.Generator().manual_seed(1)
    counts = torch.randint(1, 30, (50,), generator=gen).double()
    sums = torch.randn(50, 3, generator=gen, dtype=torch.float64) * counts[:, None]
    lo, hi = stats.interval(sums, counts[:, None].expand(-1, 3), B=200, seed=7)
    w = stats.draws(50, 200, 7)
    by_hand = torch.stack([(sums * k[:, None]).sum(0) / (counts * k).sum() for k in w])
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    ref_lo, ref_hi = torch.quantile(by_hand, q, dim=0)
    torch.testing.assert_close(lo, ref_lo)
    torch.testing.assert_close(hi, ref_hi)
    again = stats.interval(sums, counts[:, None].expand(-1, 3), B=200, seed=7)
    assert torch.equal(again[0], lo) and torch.equal(again[1], hi)  # seeded


def test_ratio_with_a_denominator_near_zero_is_undefined():
    gen = torch.Generator().manual_seed(2)
    den = torch.stack([torch.randn(100, generator=gen, dtype=torch.float64),            # ~ 0
                       torch.randn(100, generator=gen, dtype=torch.float64) + 5.0], 1)  # 5
    num = torch.randn(100, 2, generator=gen, dtype=torch.float64) + 1.0
    (lo, hi), undefined = stats.ratio_interval(num, den, torch.ones(100, 2))
    assert undefined.tolist() == [True, False]
    assert torch.isnan(lo[0]) and torch.isnan(hi[0])
    assert lo[1] < num[:, 1].mean() / den[:, 1].mean() < hi[1]


def test_interval_of_a_slope():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(300, generator=gen, dtype=torch.float64)
    y = 0.5 * x + 0.1 * torch.randn(300, generator=gen, dtype=torch.float64)

    def slope(xy):
        xm, ym = xy[:, 0] - xy[:, 0].mean(), xy[:, 1] - xy[:, 1].mean()
        return (xm * ym).sum() / (xm * xm).sum()

    lo, hi = stats.interval_of(torch.stack([x, y], 1), slope, B=300)
    assert lo < 0.5 < hi and float(hi - lo) < 0.05


def test_head_sweep_intervals_resample_rows_whole():
    """HeadSweepResult.interval on the committed SmolLM2 sweep: the same as resampling the
    corpus rows by hand with the same draws (per head and for a layer's mean over heads), it
    holds the point estimate, and a ratio whose DE interval holds 0 is NaN."""
    from pathlib import Path

    from nbtools.sweeps import load_result

    res = load_result(Path(__file__).resolve().parents[1] / "docs/results/smollm2_heads.safetensors")
    rows, v = res.state["top/row"], res.state["top/self_repair"].double()
    w = stats.draws(res.progress["rows_done"], 200, 3)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    i = 5 * 9 + 4                                             # L5H4: heads are layer-major
    assert tuple(res.state["heads"][i].tolist()) == (5, 4)
    by_hand = torch.stack([(k[rows[i]] * v[i]).sum() / k[rows[i]].sum() for k in w])
    lo, hi = res.interval("self_repair", B=200, seed=3)
    torch.testing.assert_close(torch.stack([lo[5, 4], hi[5, 4]]), torch.quantile(by_hand, q))
    layer = torch.stack([torch.stack([(k[rows[j]] * v[j]).sum() / k[rows[j]].sum()
                                      for j in range(27, 36)]).mean() for k in w])
    lo_l, hi_l = res.interval("self_repair", per="layer", B=200, seed=3)
    torch.testing.assert_close(torch.stack([lo_l[3], hi_l[3]]), torch.quantile(layer, q))
    mean = res.stat("self_repair", "condensed", "mean")
    inside = ((lo <= mean) & (mean <= hi)).double().mean()
    assert inside > 0.95 and bool(((lo_l <= mean.mean(1)) & (mean.mean(1) <= hi_l)).all())
    assert torch.equal(res.interval("self_repair", B=200, seed=3)[0], lo)  # seeded
    assert not torch.isnan(res.interval("sr_ln", "ratio_of_means", B=200)[0]).any()
    de = res.state["top/direct_effect"]
    de[i] = de[i] - de[i].mean()                 # L5H4's DE now averages 0: no ratio interval
    r_lo, r_hi = res.interval("sr_ln", "ratio_of_means", B=200)
    assert bool(torch.isnan(r_lo[5, 4]) & torch.isnan(r_hi[5, 4]))
    assert int(torch.isnan(r_lo).sum()) == 1


def test_layer_sweep_intervals_resample_prompts():
    """LayerSweepResult.interval / regression_interval on the committed SmolLM2 layer sweep:
    equal to refitting on prompts resampled by hand with the same draws, and holding the
    point estimates."""
    from pathlib import Path

    from nbtools.sweeps import load_result
    from nbtools.sweeps.layers import regression

    res = load_result(Path(__file__).resolve().parents[1] / "docs/results/smollm2_layers.safetensors")
    x = res.get("delta_unembed", kind="attn")[:, 24].double()
    y = res.get("compensation", "clean", "attn")[:, 24].double()
    w = stats.draws(x.shape[0], 100, 5)
    fits = torch.tensor([regression(x.repeat_interleave(k.long()), y.repeat_interleave(k.long()))
                         for k in w], dtype=torch.float64)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    iv = res.regression_interval("attn", "clean", B=100, seed=5)
    torch.testing.assert_close(torch.stack([iv["slope"][0][24], iv["slope"][1][24]]),
                               torch.quantile(fits[:, 0], q))
    torch.testing.assert_close(torch.stack([iv["r2"][0][24], iv["r2"][1][24]]),
                               torch.quantile(fits[:, 2], q))
    reg = res.regression("attn", "clean")
    lo, hi = res.regression_interval("attn", "clean")["slope"]
    assert bool(((lo <= reg["slope"]) & (reg["slope"] <= hi)).all())
    mean = res.get("delta_ablate", kind="mlp").mean(0)
    lo, hi = res.interval("delta_ablate", kind="mlp")
    assert bool(((lo <= mean) & (mean <= hi)).all()) and bool((hi - lo > 0).all())
