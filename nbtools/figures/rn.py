"""Rushing & Nanda figures (self-repair of single heads) from `HeadSweepResult`s.

`self_repair_vs_depth` (Fig. 1, several models on one axis), `de_vs_delta_logit` (zones),
`noise` (per-token scatter), `ablation_comparison` (zero / mean / resample),
`scale_ratio_hist` (s/s′), `breakdown` (DE, DE^abl, heads, MLP, LN per head) and the
anti-erasure views `anti_erasure` (sparsity curves, top-5 share, clean-vs-ablated DE of top
neurons, recurrence). Every figure names its statistic and site selection.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from ..errors import InvalidInputError
from ..sweeps.heads import LABELS, STATISTICS
from .style import COLORS, COLUMN_WIDTH, CYCLE, PART_COLORS, annotate, describe, figure, styled

STAT_TEXT = {"mean": "mean", "median": "median", "ratio_of_means": "ratio of means",
             "mean_clipped_ratio": "mean of clipped ratios", "mean_ratio": "mean of ratios"}


def _np(x) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _ylabel(quantity: str, statistic: str) -> str:
    label = LABELS.get(quantity, quantity)
    if statistic in ("ratio_of_means", "mean_clipped_ratio", "mean_ratio"):
        return f"{label} / DE\n({STAT_TEXT[statistic]})"
    return f"{label} (logit, {STAT_TEXT[statistic]})"


def _caption(res, selection, statistic, extra: str = "") -> str:
    text = f"{describe(res.settings)} · {res.selection_text(selection)}; {STAT_TEXT[statistic]}"
    if selection == "condensed":
        text += " (selection conditions on a large clean DE)"
    return text + (f" · {extra}" if extra else "")


def _results(results) -> list:
    """One HeadSweepResult or a non-empty list of them, as a list (else InvalidInputError)."""
    from ..sweeps import HeadSweepResult

    results = list(results) if isinstance(results, list | tuple) else [results]
    if not results:
        raise InvalidInputError("no results given; pass a HeadSweepResult or a list of them")
    bad = [type(r).__name__ for r in results if not isinstance(r, HeadSweepResult)]
    if bad:
        raise InvalidInputError(f"this figure needs HeadSweepResults (sweep_heads or "
                                f"load_result), not {', '.join(bad)}")
    return results


# --- Fig. 1 ---------------------------------------------------------------------------------
BAND_LEVEL = 0.95
#: quantities whose sign reads as R&N's zones (below 0: breakage, above: self-repair)
SIGNED_REPAIR = ("self_repair", "self_repair_prime")


@styled
def self_repair_vs_depth(results, quantity: str = "self_repair", selection: str = "condensed",
                         statistic: str = "mean", B: int = 1000, seed: int = 0):
    """Fig. 1: a head's self-repair vs relative depth; one point per head, per-layer mean line
    with a 95 % bootstrap band.

    results: one HeadSweepResult or a list (several models on one axis, one colour each).
    The band resamples what each result holds (`layer_band`): the corpus rows of the
    condensed sites where those are stored (every statistic but the median), else the heads
    of each layer; the caption says which. B draws, seeded: the figure redraws identically.
    For self-repair the zones of R&N Fig. 1 are marked (below 0: early-layer breakage).
    """
    fig, ax = figure(height=2.4)
    results = _results(results)
    units = _depth_panel(ax, results, quantity, selection, statistic, B, seed)
    ax.axhline(0, color="#888888", lw=0.5, zorder=1)
    if quantity in SIGNED_REPAIR:
        _repair_zones(ax)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("relative depth of the head (layer / (n_layers − 1))")
    ax.set_ylabel(_ylabel(quantity, statistic))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=min(3, len(results)),
              handlelength=1.2, columnspacing=1.0, borderaxespad=0.2,
              title="model (layers × heads): layer mean, 95 % band", title_fontsize=5.5)
    base = results[0]
    band = "; ".join(f"{_UNIT_TEXT[u]}: {', '.join(models)}" for u, models in units.items())
    extra = "methods: " + ", ".join(sorted({r.settings["method"] for r in results}))
    annotate(fig, f"one point per head · line: mean over a layer's heads · band: "
             f"{BAND_LEVEL:.0%} bootstrap interval of that mean (B = {B}) over {band} · "
             f"{base.selection_text(selection)}; {STAT_TEXT[statistic]} · {extra}",
             _merged_settings(results))
    return fig


def _depth_panel(ax, results, quantity, selection, statistic, B, seed) -> dict:
    """Fig. 1's points, per-layer mean lines and bands of each result on `ax`; returns which
    bootstrap unit served which models ({unit: [model, ...]})."""
    units: dict[str, list] = {}
    for i, res in enumerate(results):
        values = _np(res.stat(quantity, selection, statistic))           # [L, H]
        L = values.shape[0]
        depth = np.arange(L) / max(1, L - 1)
        color = CYCLE[i % len(CYCLE)]
        ax.scatter(np.repeat(depth, values.shape[1]), values.reshape(-1), s=2.5, color=color,
                   alpha=0.35, lw=0, zorder=2)
        mean, lo, hi, unit = layer_band(res, quantity, selection, statistic, B=B, seed=seed)
        units.setdefault(unit, []).append(res.settings["model"])
        ax.fill_between(depth, _np(lo), _np(hi), color=color, alpha=0.22, lw=0, zorder=3,
                        gid=f"band{i}:{res.settings['model']}")
        ax.plot(depth, _np(mean), color=color, lw=1.2, zorder=4,
                label=f"{res.settings['model']} ({L}×{res.n_heads})")
    return units


@styled
def ln_share_vs_depth(results, selection: str = "condensed", B: int = 1000, seed: int = 0):
    """The final norm's share of the repair, SR_LN / DE, vs relative depth, both ways: the
    ratio of means (signed: a negative SR_LN shows) and the mean of clipped ratios (R&N's
    code; a negative ratio counts as 0). R&N's statistic is the second-to-last layer's (the
    dotted line per model). Bands as in `self_repair_vs_depth`; the ratio of means is left out
    where a layer's DE interval contains 0, and its axis keeps the central layers in view."""
    results = _results(results)
    fig, (top, bottom) = figure(2, 1, height=3.6, sharex=True)
    units = {}
    for ax, statistic in ((top, "ratio_of_means"), (bottom, "mean_clipped_ratio")):
        units = _depth_panel(ax, results, "sr_ln", selection, statistic, B, seed)
        ax.axhline(0, color="#888888", lw=0.5, zorder=1)
        ax.set_ylabel(_ylabel("sr_ln", statistic))
        for i, res in enumerate(results):
            ax.axvline((res.n_layers - 2) / max(1, res.n_layers - 1), color=CYCLE[i % len(CYCLE)],
                       lw=0.6, ls=":", zorder=1)
    values = np.concatenate([_np(r.stat("sr_ln", selection, "ratio_of_means")).reshape(-1)
                             for r in results])
    a, b = np.nanpercentile(values, [5, 95])
    pad = 0.2 * (b - a or 1)
    top.set_ylim(min(a - pad, -0.05), max(b + pad, 0.5))
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlim(-0.02, 1.02)
    bottom.set_xlabel("relative depth of the head (layer / (n_layers − 1))")
    top.set_title("signed: ratio of means", fontsize=6.5)
    bottom.set_title("R&N's code: mean of ratios clipped to [0, 1]", fontsize=6.5)
    top.legend(loc="lower center", bbox_to_anchor=(0.5, 1.12), ncols=min(3, len(results)),
               handlelength=1.2, columnspacing=1.0, borderaxespad=0.2, title_fontsize=5.5,
               title="model (layers × heads): layer mean, 95 % band; dotted: 2nd-to-last layer")
    band = "; ".join(f"{_UNIT_TEXT[u]}: {', '.join(models)}" for u, models in units.items())
    annotate(fig, f"one point per head · line: mean over a layer's heads · band: "
             f"{BAND_LEVEL:.0%} bootstrap interval (B = {B}) over {band} · "
             f"{results[0].selection_text(selection)} · top axis clipped to the central 90 % "
             "of heads", _merged_settings(results))
    return fig


_UNIT_TEXT = {"rows": "corpus rows (condensed sites kept, their rows resampled)",
              "heads": "the layer's heads"}


def _repair_zones(ax) -> None:
    """R&N Fig. 1's reading: a faint green above 0 (self-repair), red below (breakage)."""
    ax.autoscale(False)  # the zones follow the data's range, not the other way round
    y0, y1 = ax.get_ylim()
    ax.axhspan(y0, 0, color=COLORS["red"], alpha=0.06, lw=0, zorder=0)
    ax.axhspan(0, y1, color=COLORS["green"], alpha=0.05, lw=0, zorder=0)
    ax.text(0.99, 0.97, "self-repair (SR > 0)", transform=ax.transAxes, ha="right", va="top",
            color=COLORS["green"], fontsize=6, fontweight="bold")
    ax.text(0.01, 0.03, "early-layer breakage (SR < 0)", transform=ax.transAxes, ha="left",
            va="bottom", color=COLORS["red"], fontsize=6, fontweight="bold")


def layer_band(res, quantity: str = "self_repair", selection: str = "condensed",
               statistic: str = "mean", *, B: int = 1000, seed: int = 0,
               level: float = BAND_LEVEL):
    """Per layer, the mean over its swept heads of a head statistic and a bootstrap interval
    of that mean: (mean [L], low [L], high [L], unit) as float64 tensors and a word.

    unit "rows": the condensed selection stores each head's sites with their corpus row, so
    the rows are resampled (`nbtools.stats.draws`; R&N's sampling unit — sites of one row
    share a context) and every head's statistic is recomputed on its sites in the drawn rows,
    the selection itself held fixed. unit "heads": otherwise (the "all" selection keeps only
    per-head sums; the median has no per-row form) the heads of each layer are the units
    (`nbtools.stats.interval`). NaN where a layer has no swept head (or, for heads, only one).
    """
    from .. import stats

    values = res.stat(quantity, selection, statistic).double()            # [L, H]
    finite = torch.isfinite(values)
    counts = finite.sum(1)
    mean = torch.where(finite, values, 0).sum(1) / counts.clamp(min=1)
    mean[counts == 0] = float("nan")
    if selection == "condensed" and statistic != "median":
        lo, hi = res.interval(quantity, statistic, per="layer", B=B, seed=seed, level=level)
        return mean, lo, hi, "rows"
    lo = torch.full_like(mean, float("nan"))
    hi = lo.clone()
    for layer in range(values.shape[0]):
        v = values[layer][finite[layer]]
        if v.numel() > 1:
            lo[layer], hi[layer] = stats.interval(v, torch.ones_like(v), B=B, seed=seed,
                                                  level=level)
    return mean, lo, hi, "heads"


def _merged_settings(results) -> dict:
    if len(results) == 1:
        return results[0].settings
    return {"models": [r.settings for r in results]}


@styled
def de_vs_delta_logit(res, selection: str = "condensed", statistic: str = "mean"):
    """Per head, the total effect ΔL against what the ablation removed, in R&N's two readings.

    Left: against the clean DE, where y = −x is SR′ = ΔL + DE = 0 (above: SR′ > 0). Right:
    against the DE actually removed, DE − DE^abl (a resampled head still writes), where
    y = −x is SR = ΔL + (DE − DE^abl) = 0 exactly (above: self-repair, below: breakage).
    """
    dl = _np(res.stat("delta_logit", selection, statistic)).reshape(-1)
    de = _np(res.stat("direct_effect", selection, statistic)).reshape(-1)
    removed = de - _np(res.stat("direct_effect_ablated", selection, statistic)).reshape(-1)
    layers = np.repeat(np.arange(res.n_layers), res.n_heads)
    keep = np.isfinite(de) & np.isfinite(removed) & np.isfinite(dl)
    lo, hi = _limits(de[keep], removed[keep], dl[keep], [0.0])   # one square frame for both
    xs = np.array([lo, hi])
    fig, axes = figure(1, 2, height=2.0, sharey=True)
    for ax, x, name, term in ((axes[0], de, "clean DE", "SR′"),
                              (axes[1], removed, "DE removed, DE − DE$^{abl}$", "SR")):
        ax.fill_between(xs, -xs, hi, color=COLORS["green"], alpha=0.08, lw=0)
        ax.fill_between(xs, lo, -xs, color=COLORS["red"], alpha=0.08, lw=0)
        ax.plot(xs, -xs, color=COLORS["black"], lw=0.7, ls="--")
        sc = ax.scatter(x[keep], dl[keep], c=layers[keep], cmap="viridis", s=5, lw=0,
                        vmin=0, vmax=max(1, res.n_layers - 1))
        ax.text(0.97, 0.97, f"{term} > 0", transform=ax.transAxes, ha="right", va="top",
                color=COLORS["green"], fontsize=6)
        ax.text(0.03, 0.03, f"{term} < 0", transform=ax.transAxes, ha="left", va="bottom",
                color=COLORS["red"], fontsize=6)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"{name} ({STAT_TEXT[statistic]})")
        ax.set_title(f"dashed: y = −x, {term} = 0", fontsize=6.5)
    axes[0].set_ylabel(f"total effect ΔL ({STAT_TEXT[statistic]})")
    bar = fig.colorbar(sc, ax=axes, pad=0.02, fraction=0.05)
    bar.set_label("layer")
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    annotate(fig, _caption(res, selection, statistic, "one point per head; green: repaired "
                           "(above y = −x), red: broken"), res.settings)
    return fig


@styled
def noise(res, head, max_points: int = 4000):
    """Per-token scatter for one head: DE removed (DE − DE^abl) vs self-repair SR.

    Lines: y = 0 (no repair), y = x (full repair; above it: over-correction).
    """
    tok = res.per_token(head)
    x = _np(tok["direct_effect"] - tok["direct_effect_ablated"])
    y = _np(tok["self_repair"])
    if x.size > max_points:
        pick = np.random.default_rng(0).choice(x.size, max_points, replace=False)
        x, y = x[pick], y[pick]
    fig, ax = figure(height=2.3)
    ax.scatter(x, y, s=2, color=COLORS["blue"], alpha=0.4, lw=0)
    lo, hi = _limits(x, y)
    xs = np.array([lo, hi])
    ax.plot(xs, xs, color=COLORS["red"], lw=0.7, ls="--", label="y = x (full repair)")
    ax.axhline(0, color=COLORS["black"], lw=0.5)
    ax.axvline(0, color="#cccccc", lw=0.5)
    ax.set_xlabel("direct effect removed, DE − DE$^{abl}$ (logit)")
    ax.set_ylabel("self-repair SR (logit)")
    ax.set_title(f"{_head_label(head)}: per-token self-repair")
    ax.legend(loc="upper left")
    annotate(fig, f"{describe(res.settings)} · every token ({len(tok['row'])} sites"
             f"{', ' + str(max_points) + ' shown' if len(tok['row']) > max_points else ''}) · "
             "no averaging", res.settings)
    return fig


@styled
def noise_by_layer(res, B: int = 1000, seed: int = 0):
    """R&N's "self-repair is noisy", per layer: the distribution of every token's SR over the
    per-token heads of each layer (boxes: quartiles, whiskers 5–95 %), and the over-correction
    rate — the share of tokens whose DE was removed (DE − DE^abl > 0) that were repaired by
    more than it (SR > DE − DE^abl) — with a 95 % bootstrap interval, corpus rows resampled.
    """
    from .. import stats

    heads = res.state["tok/heads"].long()                                   # [A, 2]
    if not heads.shape[0]:
        raise InvalidInputError("this sweep recorded no per-token heads; run it with "
                                "per_token=... (e.g. per_token='all')")
    sr = res.state["tok/self_repair"].double()                               # [A, n]
    removed = (res.state["tok/direct_effect"] - res.state["tok/direct_effect_ablated"]).double()
    rows = res.state["tok/row"].long()                                       # [n]
    layers = sorted(set(heads[:, 0].tolist()))
    n_rows = int(res.progress.get("rows_done") or int(rows.max()) + 1)
    over_sum = torch.zeros(n_rows, len(layers), dtype=torch.float64)
    eligible = torch.zeros_like(over_sum)
    boxes = []
    for j, layer in enumerate(layers):
        pick = heads[:, 0] == layer
        boxes.append(_np(sr[pick]).reshape(-1))
        e = removed[pick] > 0
        over_sum[:, j].index_add_(0, rows.expand_as(e)[e], (sr[pick] > removed[pick])[e].double())
        eligible[:, j].index_add_(0, rows.expand_as(e)[e], torch.ones(int(e.sum()),
                                                                      dtype=torch.float64))
    rate = _np(over_sum.sum(0) / eligible.sum(0))
    lo, hi = (_np(b) for b in stats.interval(over_sum, eligible, B=B, seed=seed))
    fig, (ax, ax_rate) = figure(2, 1, height=2.8, sharex=True, height_ratios=[1.6, 1])
    ax.boxplot(boxes, positions=layers, whis=(5, 95), showfliers=False, widths=0.6,
               manage_ticks=False,
               medianprops=dict(color=COLORS["red"], lw=0.8), boxprops=dict(lw=0.5),
               whiskerprops=dict(lw=0.5), capprops=dict(lw=0.5))
    ax.axhline(0, color="#bbbbbb", lw=0.5, zorder=0)
    ax.set_ylabel("per-token SR (logit)")
    ax.set_title("per-token self-repair, by layer")
    ax_rate.errorbar(layers, rate, yerr=np.clip([rate - lo, hi - rate], 0, None),
                     color=COLORS["purple"], marker="o", ms=2, ls="none", elinewidth=0.6,
                     capsize=1)
    ax_rate.set_ylim(0, max(0.05, float(np.nanmax(hi)) * 1.15))
    ax_rate.set_ylabel("over-correction")
    ax_rate.set_xlabel("layer of the ablated head")
    ax_rate.set_xlim(min(layers) - 0.6, max(layers) + 0.6)
    ax_rate.xaxis.set_major_locator(MaxNLocator(integer=True))
    n = sr.shape[1]
    annotate(fig, f"{describe(res.settings)} · {heads.shape[0]} per-token heads, {n} tokens "
             f"each ({n_rows} rows) · over-correction: share of tokens with DE − DE$^{{abl}}$ "
             f"> 0 and SR above it; bars: 95 % bootstrap intervals over rows", res.settings)
    return fig


@styled
def ablation_comparison(results, quantity: str = "self_repair", selection: str = "condensed",
                        statistic: str = "mean"):
    """Zero vs mean vs resample ablation: per-layer mean of a quantity over heads."""
    results = _results(results)
    fig, ax = figure(height=2.0)
    styles = {"zero": (COLORS["red"], "o"), "mean": (COLORS["orange"], "s"),
              "resample": (COLORS["blue"], "^")}
    for res in results:
        values = _np(res.stat(quantity, selection, statistic))
        color, marker = styles.get(res.settings["method"], (COLORS["grey"], "x"))
        with np.errstate(all="ignore"):
            layer_mean = np.nanmean(values, axis=1)
        layers = np.arange(values.shape[0])
        ax.plot(layers, layer_mean, color=color, marker=marker, ms=3,
                label=f"{res.settings['method']} ({res.settings['model']})")
        ax.scatter(np.repeat(layers, values.shape[1]) + 0.08 * (marker == "s"),
                   values.reshape(-1), s=2, color=color, alpha=0.3, lw=0)
    ax.axhline(0, color="#bbbbbb", lw=0.5)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_ylabel(quantity, statistic))
    ax.legend(loc="best", title="ablation (line: layer mean)", title_fontsize=5.5)
    annotate(fig, f"{results[0].selection_text(selection)}; {STAT_TEXT[statistic]} per head "
             "(dots), mean over heads (line)", _merged_settings(results))
    return fig


@styled
def scale_ratio_hist(res, heads=None, selection: str = "condensed", bins: int = 40):
    """Histogram of the final-norm scale ratio s/s′ over the selected sites of some heads."""
    heads = heads or res.heads
    if selection == "condensed":
        values = np.concatenate([_np(res.condensed(h)["scale_ratio"]) for h in heads])
        what = f"{res.selection_text('condensed')} of {len(heads)} head(s)"
    else:
        values = np.concatenate([_np(res.per_token(h)["scale_ratio"]) for h in heads])
        what = f"every token of {len(heads)} per-token head(s)"
    fig, ax = figure(height=1.8)
    ax.hist(values, bins=bins, color=COLORS["orange"], alpha=0.85)
    ax.axvline(1, color=COLORS["black"], lw=0.7, ls="--")
    ax.axvline(float(np.mean(values)), color=COLORS["red"], lw=0.8,
               label=f"mean {np.mean(values):.3f}")
    ax.set_xlabel("s / s′ (clean / ablated final-norm scale)")
    ax.set_ylabel("sites")
    ax.legend(loc="best")
    annotate(fig, f"{describe(res.settings)} · {what} · s/s′ > 1: surviving logits scaled up",
             res.settings)
    return fig


@styled
def breakdown(res, heads=None, n: int = 6, selection: str = "condensed",
              statistic: str = "mean"):
    """Per-head bars: DE, DE^abl and the self-repair parts (heads, MLP, LN).

    heads: which heads (default: the n with the largest condensed mean DE).
    """
    if heads is None:
        de = res.stat("direct_effect", "condensed", "mean").nan_to_num(float("-inf"))
        flat = de.reshape(-1).argsort(descending=True)[:n].tolist()
        heads = [f"{i // res.n_heads}.{i % res.n_heads}" for i in flat]
    parts = ("direct_effect", "direct_effect_ablated", "sr_heads", "sr_mlp", "sr_ln")
    fig, ax = figure(height=2.0)
    w = 0.8 / len(parts)
    xs = np.arange(len(heads))
    for j, q in enumerate(parts):
        grid = res.stat(q, selection, statistic)
        vals = [float(grid[_parse(h)]) for h in heads]
        ax.bar(xs + (j - (len(parts) - 1) / 2) * w, vals, width=w, color=PART_COLORS[q],
               label=LABELS[q])
    ax.axhline(0, color="#bbbbbb", lw=0.5)
    ax.set_xticks(xs, [_head_label(h) for h in heads], rotation=0)
    ax.set_ylabel(_ylabel("self_repair", statistic).replace("SR", "value"))
    fig.legend(loc="outside upper center", ncols=len(parts), handlelength=1.0,
               columnspacing=0.8)
    annotate(fig, _caption(res, selection, statistic, "SR = SR_heads + SR_MLP + SR_LN"),
             res.settings)
    return fig


# --- anti-erasure -------------------------------------------------------------------------
@styled
def anti_erasure(res, head, selection: str = "condensed", n_neurons: int = 15):
    """Anti-erasure views for one head: sparsity curves, top-5 share, top-neuron DE scatter,
    and how often each neuron is in the top 10."""
    ae = res.anti_erasure(head, selection)
    fig, axes = figure(2, 2, height=3.4, width=1.5 * COLUMN_WIDTH)
    ax = axes[0, 0]
    curves = _np(ae["curves"])
    ranks = np.arange(1, curves.shape[0] + 1)
    for j, x in enumerate(ae["thresholds"]):
        ax.plot(ranks, curves[:, j], marker="o", ms=1.5, color=CYCLE[j % len(CYCLE)],
                label=f"> {x:g}% of DE")
    ax.set_xlabel("N-th neuron by ΔDE")
    ax.set_ylabel("fraction of tokens")
    ax.set_ylim(-0.02, 1.02)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=5, ncol=3, columnspacing=0.8,
              handlelength=1.2, borderaxespad=0.2, title="sparsity: N-th neuron's ΔDE",
              title_fontsize=5.5)  # above the axes, off the curves

    ax = axes[0, 1]
    names = ["ratio of\nmeans", "mean of\nclipped ratios"]
    vals = [ae["top5_share_ratio_of_means"], ae["top5_share_mean_clipped_ratio"]]
    ax.bar(names, vals, color=[COLORS["blue"], COLORS["sky"]], width=0.6)
    ax.set_ylabel("share of SR$_{MLP}$")
    ax.set_title("top-5 neurons' share")
    finite = [v for v in vals if np.isfinite(v)]
    ax.set_ylim(min(0.0, *finite, 0.0) * 1.2, max(1.0, *finite, 0.0) * 1.15)
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=5.5)
    if any(v > 1 for v in finite):  # the top 5 give more than all: the rest push back
        ax.axhline(1, color=COLORS["black"], lw=0.5, ls=":")
        ax.set_title("top-5 neurons' share\n(> 1: the other neurons' ΔDE is negative)",
                     fontsize=6)

    ax = axes[1, 0]
    if selection == "condensed":
        clean = _np(ae["top_de_clean"][:, :5]).reshape(-1)
        abl = clean + _np(ae["top_delta"][:, :5]).reshape(-1)
        title = "top-5 neurons per token"
    else:
        order = np.argsort(-_np(ae["recurrence"]))[:n_neurons]
        clean, abl = _np(ae["neuron_de_clean"])[order], _np(ae["neuron_de_ablated"])[order]
        title = "most recurrent (mean)"
    anti = (clean < 0) & (abl > clean)  # an eraser that erases less once the head is ablated
    ax.scatter(clean[~anti], abl[~anti], s=4, color=COLORS["grey"], alpha=0.6, lw=0,
               label="other")
    ax.scatter(clean[anti], abl[anti], s=5, color=COLORS["orange"], alpha=0.8, lw=0,
               label=f"anti-erasure ({int(anti.sum())}/{anti.size})")
    ax.legend(loc="upper left", fontsize=5, handletextpad=0.2)
    lo, hi = _limits(clean, abl)
    ax.plot([lo, hi], [lo, hi], color=COLORS["black"], lw=0.6, ls="--")
    ax.axvline(0, color="#cccccc", lw=0.5)
    ax.axhline(0, color="#cccccc", lw=0.5)
    ax.set_xlabel("neuron DE, clean")
    ax.set_ylabel("neuron DE, ablated")
    ax.set_title(title)

    ax = axes[1, 1]
    rec = _np(ae["recurrence"])
    order = np.argsort(-rec, kind="stable")[:n_neurons]
    order = order[rec[order] > 0]
    ax.bar(np.arange(len(order)), rec[order], color=COLORS["green"], width=0.7)
    ax.set_xticks(np.arange(len(order)), [str(i) for i in order], rotation=90, fontsize=5)
    ax.set_xlabel(f"neuron (layer {ae['layer']})")
    ax.set_ylabel("share of tokens")
    ax.set_title("recurrence in the top 10")
    fig.suptitle(f"{_head_label(head)} → layer-{ae['layer']} MLP neurons", fontsize=7)
    annotate(fig, f"{describe(res.settings)} · {ae['selection']} ({ae['n_sites']} sites); "
             "ΔDE = DE$^{abl}$ − DE per neuron; curves over tokens with DE > 0", res.settings)
    return fig


# --- helpers --------------------------------------------------------------------------------
def _parse(head) -> tuple[int, int]:
    from ..components import parse_component

    h = parse_component(head)
    return h.layer, h.head


def _head_label(head) -> str:
    layer, h = _parse(head)
    return f"L{layer}H{h}"


def _limits(*arrays) -> tuple[float, float]:
    vals = np.concatenate([np.asarray(a, dtype=float).reshape(-1) for a in arrays])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return -1.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    pad = 0.05 * (hi - lo or 1)
    return lo - pad, hi + pad


__all__ = ["STATISTICS", "ablation_comparison", "anti_erasure", "breakdown", "de_vs_delta_logit",
           "layer_band", "ln_share_vs_depth", "noise", "noise_by_layer", "scale_ratio_hist",
           "self_repair_vs_depth"]
