"""Hydra-paper figures (McGrath et al. 2023) from a `LayerSweepResult` or a `Measurement`.

F1/F3 `layer_de`, F2a/b `delta_by_layer`, F2c `ablate_vs_unembed`, F2d `unembed_ablate_agreement`,
F7 `compensation_vs_unembed`, F8 `compensation_split`, T4 `gap_split` (the gap between the
two importances split into DE^abl, CE and SR_LN), and `mlp_erasure` (late MLPs as erasers). Each returns a matplotlib Figure with its caption and settings attached
(see `nbtools.figures.save`).
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import torch

from ..errors import InvalidInputError, whole_number
from ..stats import fit_intervals, interval
from .style import COLORS, annotate, figure, styled

KIND_NAMES = {"attn": "attention", "mlp": "MLP"}


def _check(res, kind: str | None = None, scale: str | None = None) -> None:
    """InvalidInputError unless `res` is a layer sweep with measured prompts, ablations of
    `kind` and the norm scale `scale`."""
    from ..sweeps import LayerSweepResult

    if not isinstance(res, LayerSweepResult):
        raise InvalidInputError(f"this figure needs a LayerSweepResult (sweep_layers or "
                                f"load_result), not {type(res).__name__}")
    if kind is not None:
        if kind not in KIND_NAMES:
            raise InvalidInputError(f"unknown kind {kind!r}; choose from {', '.join(KIND_NAMES)}")
        if not res.layers_of(kind):
            raise InvalidInputError(f"the sweep has no {kind} layer ablations; it swept "
                                    f"{', '.join(res.ablations)}")
    if scale is not None and scale not in res.scales:
        raise InvalidInputError(
            f"the sweep did not measure scale {scale!r}; it has {', '.join(res.scales)}")
    if not res.done.any():
        raise InvalidInputError("the sweep has no measured prompts yet")


def _scale_text(scale: str) -> str:
    return {"clean": "ablated DEs at the clean norm scale s",
            "recomputed": "ablated DEs at each run's own norm scale s′"}[scale]


def _layer_colors(layers):
    cmap = mpl.colormaps["viridis"]
    n = max(1, max(layers))
    return cmap, mpl.colors.Normalize(0, n), [cmap(x / n) for x in layers]


def _colorbar(fig, ax, cmap, norm, label="ablated layer"):
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(sm, ax=ax, pad=0.02, fraction=0.05)
    bar.set_label(label)
    bar.ax.tick_params(labelsize=5)
    bar.ax.yaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    return bar


def _int_x(*axes, nbins: int = 8) -> None:
    """Integer layer ticks at steps of 1, 2, 5 or 10: at most `nbins` (readable at 30 layers)."""
    for ax in axes:
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(nbins=nbins, integer=True,
                                                          steps=[1, 2, 5, 10]))


def _np(x) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# --- F1 / F3 ------------------------------------------------------------------------------
@styled
def layer_de(source, prompt: int = 0, ablation: str | None = None, scale: str = "clean",
             mean_ablation=None):
    """F1/F3: per-layer DE on the top token, clean vs each resample vs their mean.

    source: a `Measurement` of one layer ablation (its sites are taken as resamples of one
    prompt, e.g. `lab.measure([prompt] * K, "attn3", method="resample", sources=[[s] for s
    in K_sources], positions="final", target="top")`; a single site draws just the
    ablated line) or a `LayerSweepResult` (prompt index, ablation label such as "attn3";
    per-source lines where the sweep kept examples). mean_ablation: optionally a
    `Measurement` of the same ablation with method="mean", drawn as a dashed line.
    """
    from ..results import Measurement

    lines = _measured_lines(source, scale) if isinstance(source, Measurement) else \
        _swept_lines(source, prompt, ablation, scale)
    ablated, clean, mean, each = lines["ablated"], lines["clean"], lines["mean"], lines["each"]
    settings, scale, title, who = lines["settings"], lines["scale"], lines["title"], lines["who"]
    fig, axes = figure(1, 2, height=1.9)
    layers = np.arange(len(clean["attn"]))
    for ax, kind in zip(axes, ("attn", "mlp"), strict=True):
        for k, layer in ablated:
            if k == kind:
                ax.axvspan(layer - 0.4, layer + 0.4, color=COLORS["grey"], alpha=0.25, lw=0)
        if each is not None:
            for i, row in enumerate(each[kind]):
                ax.plot(layers, row, color=COLORS["sky"], lw=0.5, alpha=0.6,
                        label="each resample" if i == 0 else None)
        ax.plot(layers, mean[kind], color=COLORS["blue"], lw=1.2, marker="o", ms=2,
                label="resample (mean)")
        if mean_ablation is not None:
            values = getattr(mean_ablation, f"{kind}_de_ablated").mean(0)
            ax.plot(layers, _np(values), color=COLORS["orange"], lw=1.0, ls="--", marker="^",
                    ms=2, label="mean ablation")
        ax.plot(layers, clean[kind], color=COLORS["black"], lw=1.2, marker="s", ms=2,
                label="clean")
        ax.axhline(0, color="#cccccc", lw=0.5, zorder=0)
        ax.set_title(f"{KIND_NAMES[kind]} layers")
        ax.set_xlabel("layer")
        _int_x(ax)
    axes[0].set_ylabel("direct effect on top token (logit)")
    axes[1].legend(loc="best")
    fig.suptitle(title, fontsize=7)
    annotate(fig, f"{settings.get('model', '?')} · resample at final position ({who}) · "
             f"{_scale_text(scale)} · shaded: ablated layer", settings)
    return fig


def _measured_lines(m, scale: str) -> dict:
    """F1's lines from a Measurement whose sites are resamples of one prompt."""
    from ..components import AttnLayer, Head

    each = {"attn": _np(m.attn_de_ablated), "mlp": _np(m.mlp_de_ablated)}
    settings = dict(m.settings)
    return dict(ablated=[("attn" if isinstance(c, AttnLayer | Head) else "mlp", c.layer)
                         for c in m.components],
                clean={"attn": _np(m.attn_de_clean.mean(0)), "mlp": _np(m.mlp_de_clean.mean(0))},
                mean={k: v.mean(0) for k, v in each.items()},
                each=None if each["attn"].shape[0] == 1 else each, settings=settings,
                scale=settings.get("scale", scale), title=f"{m.label} ablated",
                who=f"{m.n_sites} resample(s)")


def _swept_lines(res, prompt: int, ablation: str | None, scale: str) -> dict:
    """F1's lines for one prompt and ablation of a layer sweep (per source where kept)."""
    _check(res, scale=scale)
    ablation = ablation or largest_ablation(res)
    if ablation not in res.ablations:
        raise InvalidInputError(
            f"{ablation!r} was not swept; choose from {', '.join(res.ablations)}")
    prompt = whole_number(prompt, "prompt")
    if not 0 <= prompt < len(res.prompts) or not res.done[prompt]:
        raise InvalidInputError(
            f"prompt {prompt} is not in the sweep; it measured prompts 0.."
            f"{int(res.done.sum()) - 1}")
    a = res.ablations.index(ablation)
    kind = "attn" if ablation.startswith("attn") else "mlp"
    each = None
    key = f"examples/{scale}/attn_de_ablated"
    if key in res.state and prompt < res.state[key].shape[0] and \
            torch.isfinite(res.state[key][prompt]).all():
        each = {k: _np(res.state[f"examples/{scale}/{k}_de_ablated"][prompt, :, a])
                for k in ("attn", "mlp")}
    token = res.target_tokens[prompt] if res.target_tokens else None
    return dict(ablated=[(kind, int(ablation[len(kind):]))],
                clean={k: _np(res.state[f"{k}_de_clean"][prompt]) for k in ("attn", "mlp")},
                mean={k: _np(res.state[f"{scale}/{k}_de_ablated"][prompt, a])
                      for k in ("attn", "mlp")},
                each=each, settings=dict(res.settings), scale=scale,
                title=f"{ablation} ablated · prompt {prompt}" + (f" → {token!r}" if token else ""),
                who=f"{res.settings['n_sources']} resamples")


def largest_ablation(res, kind: str | None = None) -> str:
    """The ablation label (e.g. "attn17") of `kind` (default: attention if swept) whose
    layer has the largest mean Δablate over the prompts: F1's default, where it shows most."""
    kinds = res.settings["kinds"]
    kind = kind or ("attn" if "attn" in kinds else kinds[0])
    layers = res.layers_of(kind)
    mean = res.get("delta_ablate", kind=kind).double().mean(0)
    return f"{kind}{layers[int(torch.nan_to_num(mean, nan=-np.inf).argmax())]}"


# --- F2 -------------------------------------------------------------------------------------
@styled
def delta_by_layer(res, kind: str = "attn"):
    """F2a/b: Δunembed and Δablate per ablated layer; prompts in grey, mean in colour."""
    _check(res, kind)
    layers = res.layers_of(kind)
    du, da = _np(res.get("delta_unembed", kind=kind)), _np(res.get("delta_ablate", kind=kind))
    fig, axes = figure(1, 2, height=1.8, sharey=True)
    for ax, values, name, color in ((axes[0], du, "Δunembed", COLORS["blue"]),
                                    (axes[1], da, "Δablate", COLORS["red"])):
        for row in values:
            ax.plot(layers, row, color=COLORS["grey"], lw=0.3, alpha=0.35)
        lo, hi = res.interval(name.replace("Δ", "delta_"), kind=kind)
        ax.fill_between(layers, _np(lo), _np(hi), color=color, alpha=0.3, lw=0,
                        label="95 % interval")
        ax.plot(layers, values.mean(0), color=color, lw=1.4, marker="o", ms=2, label="mean")
        ax.axhline(0, color="#cccccc", lw=0.5, zorder=0)
        ax.set_title(f"{name} ({KIND_NAMES[kind]} layer)")
        ax.set_xlabel("ablated layer")
        _int_x(ax)
        ax.legend(loc="best")
    axes[0].set_ylabel("logit")
    annotate(fig, f"{res.settings['model']} · resample ({res.settings['n_sources']} sources), "
             f"final position · n = {int(res.done.sum())} prompts (grey), mean (colour) with "
             f"its 95 % bootstrap interval over prompts (band)", res.settings)
    return fig


@styled
def ablate_vs_unembed(res, kind: str = "attn", scale: str | None = None):
    """F2c: Δablate vs Δunembed per prompt and layer, coloured by layer.

    The diagonal y = x is Δablate = Δunembed. It is *not* "no downstream reaction": with
    nothing downstream reacting, Δablate = Δunembed − DE^abl (SPEC §4, T4), where DE^abl is
    the resampled layer's own DE in the ablated run — a reference that differs per point.
    Each layer's mean is drawn as a ringed dot, and beside it (×, joined by a thin line) its
    mean no-reaction reference Δunembed − DE^abl; the vertical distance between the two is
    the layer's mean downstream and final-norm repair CE + SR_LN. scale: the norm scale of
    DE^abl (default "clean" when the sweep has it).
    """
    _check(res, kind)
    if scale is None:
        scale = "clean" if "clean" in res.scales else res.scales[0]
    _check(res, kind, scale)
    layers = res.layers_of(kind)
    du, da = _np(res.get("delta_unembed", kind=kind)), _np(res.get("delta_ablate", kind=kind))
    de_abl = _np(res.gap_split(kind, scale)["de_ablated"])
    cmap, norm, _ = _layer_colors(layers)
    fig, ax = figure(height=2.4)
    for j, layer in enumerate(layers):
        ax.scatter(du[:, j], da[:, j], s=3, color=cmap(norm(layer)), alpha=0.35, lw=0)
    lim = _limits(du, da)
    ax.plot(lim, lim, color=COLORS["grey"], lw=0.7, ls="--", label="y = x: Δablate = Δunembed")
    mx, my, ref = du.mean(0), da.mean(0), (du - de_abl).mean(0)
    for j, layer in enumerate(layers):
        ax.plot([mx[j], mx[j]], [ref[j], my[j]], color=cmap(norm(layer)), lw=0.5, zorder=3)
    colors = [cmap(norm(layer)) for layer in layers]
    ax.scatter(mx, ref, s=16, marker="x", color=colors, lw=0.9, zorder=4,
               label="no reaction: Δunembed − DE$^{abl}$ (layer mean)")
    ax.scatter(mx, my, s=12, color=colors, edgecolors=COLORS["black"], linewidths=0.4,
               zorder=5, label="layer mean")
    ax.set_xlabel("Δunembed (importance by unembedding)")
    ax.set_ylabel("Δablate (importance by ablation)")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), borderaxespad=0.2, ncols=2,
              fontsize=5)
    _colorbar(fig, ax, cmap, norm)
    annotate(fig, f"{res.settings['model']} · {KIND_NAMES[kind]} layers, resample at final "
             f"position · {int(res.done.sum())} prompts (dots) · y = x is 'no reaction' only "
             f"where DE$^{{abl}}$ = 0; with no downstream reaction a point lies at Δunembed − "
             f"DE$^{{abl}}$ (×: layer means; × to ringed mean: CE + SR$_{{LN}}$) · "
             f"{_scale_text(scale)}",
             res.settings)
    return fig


@styled
def unembed_ablate_agreement(res, kind: str = "attn"):
    """F2d: per ablated layer, correlation of Δunembed with Δablate and share Δunembed > Δablate."""
    _check(res, kind)
    layers = res.layers_of(kind)
    idx = [res.index(kind, layer) for layer in layers]
    corr = _np(res.stats["stat/corr_unembed_ablate"][idx])
    share = _np(res.stats["stat/share_unembed_gt_ablate"][idx])
    du, da = res.get("delta_unembed", kind=kind), res.get("delta_ablate", kind=kind)
    r_lo, r_hi = (_np(b) for b in fit_intervals(du, da)["r"])
    above = (du > da).double()
    s_lo, s_hi = (_np(b) for b in interval(above, torch.ones_like(above)))
    fig, axes = figure(2, 1, height=2.4, sharex=True)
    axes[0].errorbar(layers, corr, yerr=np.clip([corr - r_lo, r_hi - corr], 0, None),
                     color=COLORS["blue"],
                     marker="o", ms=2, lw=0.8, elinewidth=0.6, capsize=1)
    axes[0].set_ylabel("Pearson r")
    axes[0].set_title("correlation of Δunembed and Δablate")
    axes[0].set_ylim(-1.05, 1.05)
    axes[1].bar(layers, share, color=COLORS["orange"], width=0.7,
                yerr=np.clip([share - s_lo, s_hi - share], 0, None),
                error_kw=dict(lw=0.6, capsize=1))
    axes[1].axhline(0.5, color=COLORS["black"], lw=0.6, ls="--")
    axes[1].set_ylim(0, 1)
    axes[1].set_ylabel("share of prompts")
    axes[1].set_title("Δunembed > Δablate")
    axes[1].set_xlabel(f"ablated {KIND_NAMES[kind]} layer")
    _int_x(axes[1])
    annotate(fig, f"{res.settings['model']} · across n = {int(res.done.sum())} prompts per "
             "layer · bars: 95 % bootstrap intervals over prompts", res.settings)
    return fig


# --- F7 / F8 --------------------------------------------------------------------------------
@styled
def compensation_vs_unembed(res, kind: str = "attn", scale: str = "clean"):
    """F7: compensatory effect CE vs Δunembed per ablated layer, regression lines; R² and slope."""
    _check(res, kind, scale)
    layers = res.layers_of(kind)
    du = _np(res.get("delta_unembed", kind=kind))
    ce = _np(res.get("compensation", scale, kind=kind))
    reg = res.regression(kind, scale)
    fits = res.regression_interval(kind, scale)
    cmap, norm, _ = _layer_colors(layers)
    fig, (ax, ax_slope, ax_r2) = figure(3, 1, height=3.9, height_ratios=[1.7, 1, 1])
    for j, layer in enumerate(layers):
        color = cmap(norm(layer))
        ax.scatter(du[:, j], ce[:, j], s=4, color=color, alpha=0.6, lw=0)
        slope, icpt = float(reg["slope"][j]), float(reg["intercept"][j])
        if np.isfinite(slope):
            xs = np.array([np.nanmin(du[:, j]), np.nanmax(du[:, j])])
            ax.plot(xs, slope * xs + icpt, color=color, lw=0.7)
    lim = _limits(du, ce)
    ax.plot(lim, lim, color=COLORS["black"], lw=0.7, ls="--", label="full repair: CE = Δunembed")
    ax.set_xlabel("Δunembed")
    ax.set_ylabel("compensatory effect CE")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), borderaxespad=0.2)
    _colorbar(fig, ax, cmap, norm)  # beside the scatter, outside the axes
    clipped = []
    for axis, name, color, ref in ((ax_slope, "slope", COLORS["red"], 1.0),
                                   (ax_r2, "r2", COLORS["green"], None)):
        clipped += _interval_panel(axis, layers, _np(reg[name]), *(_np(b) for b in fits[name]),
                                   color, "slope" if name == "slope" else "R²",
                                   robust=name == "slope")
        axis.axhline(0, color="#cccccc", lw=0.5, zorder=0)
        if ref is not None:
            axis.axhline(ref, color="#cccccc", lw=0.5, ls="--", zorder=0)
        _int_x(axis)
    ax_r2.set_ylim(0, 1)
    ax_r2.set_xlabel(f"ablated {KIND_NAMES[kind]} layer")
    ax_slope.sharex(ax_r2)
    note = (f" · slope axis clipped to the central layers' range (▲/▼: layers "
            f"{', '.join(map(str, clipped))} beyond)" if clipped else "")
    annotate(fig, f"{res.settings['model']} · {KIND_NAMES[kind]} layers · least squares per "
             f"layer across n = {int(res.done.sum())} prompts (lines), slope and R² with 95 % "
             f"bootstrap intervals over prompts{note} · {_scale_text(scale)}", res.settings)
    return fig


def _interval_panel(ax, layers, value, lo, hi, color, label, robust=False) -> list[int]:
    """Per-layer values with interval bars; robust: the y-limits cover the central 80 % of
    the bounds, and layers beyond are drawn at the edge as triangles. Returns those layers."""
    layers = np.asarray(layers)
    yerr = np.clip([value - lo, hi - value], 0, None)  # a percentile interval may miss it
    ax.errorbar(layers, value, yerr=yerr, color=color, marker="o", ms=2, ls="none",
                elinewidth=0.6, capsize=1)
    ax.set_ylabel(label)
    if not robust:
        return []
    a, b = np.nanpercentile(np.concatenate([lo, hi, value]), [10, 90])
    pad = 0.15 * (b - a or 1)
    a, b = min(a - pad, 0.0), max(b + pad, 1.0)  # 0 and 1 (full repair) stay in view
    ax.set_ylim(a, b)
    low, high = value < a, value > b
    ax.scatter(layers[low], np.full(low.sum(), a), marker="v", s=14, color=color, clip_on=False)
    ax.scatter(layers[high], np.full(high.sum(), b), marker="^", s=14, color=color,
               clip_on=False)
    return [int(x) for x in layers[low | high]]


@styled
def compensation_split(res, kind: str = "attn", scale: str = "clean"):
    """F8: mean ΔDE of downstream attention vs MLP layers (the parts of CE) per ablated layer."""
    _check(res, kind, scale)
    layers = np.array(res.layers_of(kind))
    attn, mlp = (_np(x).mean(0) for x in res.compensation_split(scale, kind))
    fig, ax = figure(height=1.9)
    w = 0.38
    ax.bar(layers - w / 2, attn, width=w, color=COLORS["blue"], label="downstream attention")
    ax.bar(layers + w / 2, mlp, width=w, color=COLORS["orange"], label="downstream MLP")
    ax.plot(layers, attn + mlp, color=COLORS["black"], marker="o", ms=2, lw=0.8, label="CE (sum)")
    ax.axhline(0, color="#cccccc", lw=0.5)
    ax.set_xlabel(f"ablated {KIND_NAMES[kind]} layer")
    _int_x(ax)
    ax.set_ylabel("mean ΔDE on top token")
    ax.legend(loc="best")
    annotate(fig, f"{res.settings['model']} · mean over {int(res.done.sum())} prompts · "
             f"{_scale_text(scale)}", res.settings)
    return fig


@styled
def gap_split(res, kind: str = "attn", scale: str = "clean"):
    """T4: per ablated layer, the gap Δunembed − Δablate split exactly into DE^abl (the
    resampled output still writing the token: not repair), CE (downstream repair) and SR_LN
    (the final norm), stacked; the gap itself as a point; 95 % intervals over prompts."""
    _check(res, kind, scale)
    rows = res.gap_table(kind, scale)
    layers = np.array(res.layers_of(kind))
    parts = [("de_ablated", "DE$^{abl}$ (not repair)", COLORS["grey"]),
             ("compensation", "CE (downstream)", COLORS["blue"]),
             ("sr_ln", "SR$_{LN}$ (final norm)", COLORS["orange"])]
    fig, ax = figure(height=2.0)
    pos = np.zeros(len(rows))
    neg = np.zeros(len(rows))
    for key, label, color in parts:
        v = np.array([r[key][0] for r in rows])
        base = np.where(v >= 0, pos, neg)
        ax.bar(layers, v, bottom=base, width=0.8, color=color, label=label, lw=0)
        pos, neg = pos + np.clip(v, 0, None), neg + np.clip(v, None, 0)
    gap = np.array([r["gap"] for r in rows])
    ax.errorbar(layers, gap[:, 0], yerr=[gap[:, 0] - gap[:, 1], gap[:, 2] - gap[:, 0]],
                fmt="o", ms=2, lw=0.6, color=COLORS["black"], label="gap Δunembed − Δablate")
    ax.axhline(0, color="#cccccc", lw=0.5)
    ax.set_xlabel(f"ablated {KIND_NAMES[kind]} layer")
    _int_x(ax)
    ax.set_ylabel("mean over prompts (logits)")
    fig.legend(loc="outside upper center", ncols=2)
    annotate(fig, f"{res.settings['model']} · n = {rows[0]['n']} prompts · gap = DE$^{{abl}}$ + "
             f"CE + SR$_{{LN}}$ (exact) · {_scale_text(scale)} · bars: 95 % intervals",
             res.settings)
    return fig


@styled
def mlp_erasure(res, attn_layer: int | None = None, scale: str = "clean"):
    """Late MLPs as erasers: each MLP layer's DE, clean vs with one attention layer ablated.

    attn_layer: default the attention layer with the largest mean |Δunembed|.
    """
    _check(res, "attn", scale)
    attn_layers = res.layers_of("attn")
    if attn_layer is None:  # the attention layer with the largest mean |Δunembed|
        du = res.get("delta_unembed", kind="attn").mean(0)
        attn_layer = attn_layers[int(du.abs().argmax())]
    a = res.index("attn", attn_layer)
    clean_p = res.get("mlp_de_clean").double()                          # [P, L]
    delta_p = res.get("mlp_de_ablated", scale)[:, a].double() - clean_p  # the release
    ones = torch.ones_like(clean_p)
    bars = [(_np(x.mean(0)), *(_np(b) for b in interval(x, ones))) for x in (clean_p, delta_p)]
    layers = np.arange(clean_p.shape[1])
    fig, axes = figure(2, 1, height=2.6, sharex=True)
    # shade the MLPs downstream of the ablated attention layer (same block on: sequential;
    # the next block on: parallel, where MLP L reads the same input as attention L)
    first = attn_layer + (1 if res.settings.get("parallel") else 0)
    for ax, (mean, lo, hi), color, label in (
            (axes[0], bars[0], COLORS["black"], "clean DE (< 0: erases)"),
            (axes[1], bars[1], COLORS["red"], f"ΔDE, attn{attn_layer} ablated")):
        ax.axvspan(first - 0.5, len(layers) - 0.5, color=COLORS["sky"], alpha=0.25, lw=0,
                   label=f"downstream of attn{attn_layer}")
        ax.bar(layers, mean, width=0.7, color=color, label=label,
               yerr=np.clip([mean - lo, hi - mean], 0, None), error_kw=dict(lw=0.6, capsize=1))
        ax.axhline(0, color="#999999", lw=0.5)
        ax.set_ylabel("logit")
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), borderaxespad=0.2, ncols=2,
                  fontsize=5)
    axes[1].set_xlabel("MLP layer")
    _int_x(axes[1])
    annotate(fig, f"{res.settings['model']} · MLP layers' DE on the top token (top) and its "
             f"change when attn{attn_layer} is ablated (bottom; > 0 where erasure is released) · "
             f"mean over n = {int(res.done.sum())} prompts, bars: 95 % bootstrap intervals · "
             f"{_scale_text(scale)}", res.settings)
    return fig


def _limits(*arrays) -> list[float]:
    lo = min(float(np.nanmin(a)) for a in arrays)
    hi = max(float(np.nanmax(a)) for a in arrays)
    pad = 0.05 * (hi - lo or 1)
    return [lo - pad, hi + pad]
