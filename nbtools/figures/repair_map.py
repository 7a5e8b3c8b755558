"""The repair-map figure: who repairs whom, as a heatmap of mean ΔDE from a `RepairMapResult`.

Rows (ablated components) and columns (repairing heads, MLP layers, then the final norm
"LN") are in layer order with thin lines at layer boundaries; colours are diverging and
centred at 0 (red: the column's DE rose, i.e. it repaired; blue: it fell); grey cells are
the ablated component itself. A ring marks each row's strongest repairer among heads and
MLP layers; its label and value are written at the right (for large maps, only on the rows
with the most repair, so the text stays legible).
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np

from ..errors import InvalidInputError
from .rn import _np
from .style import COLUMN_WIDTH, annotate, describe, figure, styled

CMAP = "RdBu_r"
NAN_COLOR = "#d0d0d0"


def _layer_ticks(layers: list[int], n_layers: int):
    """Tick positions (middle of each layer's block), labels and block boundaries."""
    layers = np.asarray(layers)
    ticks, labels, bounds = [], [], []
    for layer in sorted(set(layers.tolist())):
        idx = np.flatnonzero(layers == layer)
        ticks.append((idx[0] + idx[-1]) / 2)
        labels.append("LN" if layer == n_layers else str(layer))
        if idx[0] > 0:
            bounds.append(idx[0] - 0.5)
    step = max(1, int(np.ceil(len(ticks) / 16)))  # at most ~16 tick labels per axis
    shown = [lab if i % step == 0 or lab == "LN" else "" for i, lab in enumerate(labels)]
    return ticks, shown, bounds


def _spread(ys: list[float], gap: float, top: float) -> list[float]:
    """Positions ≥ `gap` apart, each as close to its wish as possible (ys sorted)."""
    out: list[float] = []
    for y in ys:
        out.append(max(y, out[-1] + gap) if out else y)
    overflow = out[-1] - top if out else 0
    if overflow > 0:  # shift the tail back up, keeping the gaps
        for i in range(len(out) - 1, -1, -1):
            limit = top - (len(out) - 1 - i) * gap
            out[i] = min(out[i], limit)
            if i and out[i] - out[i - 1] >= gap:
                break
    return out


def _colour_limit(grid: np.ndarray, vmax: float | None) -> tuple[float, str]:
    """The colour limit (default: the 99th percentile of |ΔDE|) and the caption's words for
    what it clips."""
    finite = np.abs(grid[np.isfinite(grid)])
    if vmax is None:
        vmax = float(np.percentile(finite, 99)) if finite.size and finite.max() > 0 else 1.0
    beyond = int((finite > vmax).sum())
    return vmax, (f"colours clipped at ±{vmax:.3g} (99th percentile of |ΔDE|; {beyond} of "
                  f"{finite.size} cells beyond, up to {finite.max():.3g})" if beyond else
                  f"colour limit ±{vmax:.3g}")


@styled
def repair_map(res, selection: str | None = None, n_labels: int | None = None,
               vmax: float | None = None, view: str | None = None):
    """Heatmap of a repair map: rows = ablated components, columns = repairers (+ LN).

    selection: "condensed" / "all" (default: the map's first). view: "full" (every head) or
    "layers" (`RepairMapResult.layer_map`: heads summed per layer, columns grouped into
    attention, MLP, LN); default "layers" for a map over 64 rows or 80 columns, else
    "full". n_labels (full view): how many rows get their strongest repairer written out
    (default: every row up to 64 rows, else the 24 rows with the largest such repair). vmax:
    colour limit (default: the 99th percentile of |ΔDE|, stated in the caption).
    """
    grid = _np(res.map(selection))
    S, C = grid.shape
    big = S > 64 or C > 80
    view = view or ("layers" if big else "full")
    if view not in ("full", "layers"):
        raise InvalidInputError(f"unknown view {view!r}; choose from full, layers")
    if view == "layers":
        return _layer_view(res, selection, vmax)
    width = 2 * COLUMN_WIDTH + 0.25 if big else COLUMN_WIDTH
    height = min(9.0, 1.2 + S * (0.027 if big else 0.07))
    fig, ax = figure(width=width, height=height)
    vmax, limit_text = _colour_limit(grid, vmax)
    finite = np.abs(grid[np.isfinite(grid)])
    cmap = mpl.colormaps[CMAP].with_extremes(bad=NAN_COLOR)
    image = ax.imshow(grid, cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    n_layers = int(res.settings["n_layers"])
    for axis, layers in (("y", res.row_layers()), ("x", res.column_layers())):
        ticks, labels, bounds = _layer_ticks(layers, n_layers)
        if axis == "y":
            ax.set_yticks(ticks, labels)
            for b in bounds:
                ax.axhline(b, color="#555555", lw=0.3)
        else:
            ax.set_xticks(ticks, labels)
            for b in bounds:
                ax.axvline(b, color="#555555", lw=0.3 if b < C - 1.5 else 0.8)
    ax.tick_params(length=1.5, pad=1)
    ax.set_xlabel("repairer\n(layer: heads, then MLP; LN: final norm)")
    ax.set_ylabel("ablated component (layer)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)

    comp = np.where(np.isfinite(grid[:, :-1]), grid[:, :-1], -np.inf)   # heads and MLPs
    best = comp.argmax(1)
    best_val = comp[np.arange(S), best]
    has = best_val > 1e-3 * vmax  # upstream cells are 0 up to float rounding
    ax.scatter(best[has], np.flatnonzero(has), s=4 if not big else 1.5, facecolors="none",
               edgecolors="black", linewidths=0.4 if not big else 0.3)
    if n_labels is None:
        n_labels = S if S <= 64 else 24
    order = np.argsort(-np.where(has, best_val, -np.inf), kind="stable")[:n_labels]
    fontsize = 4.5 if not big else 4.0
    chosen = sorted(r for r in order.tolist() if has[r])
    # spread the labels so neighbours never overlap; a leader line points to each row
    gap = fontsize * 1.2 / (height * 72 * 0.8 / S)          # rows per label line
    ys = _spread([float(r) for r in chosen], gap, S - 1)
    columns, rows = res.columns, res.rows
    for r, y in zip(chosen, ys, strict=True):
        ax.annotate(f"{rows[r]}→{columns[best[r]]} {best_val[r]:+.3f}", xy=(1.0, r),
                    xytext=(1.03, y), xycoords=("axes fraction", "data"),
                    textcoords=("axes fraction", "data"), va="center", ha="left",
                    fontsize=fontsize, annotation_clip=False,
                    arrowprops=dict(arrowstyle="-", lw=0.25, color="#888888",
                                    shrinkA=0, shrinkB=0) if abs(y - r) > 0.3 else None)
    bar = fig.colorbar(image, ax=ax, location="top", shrink=0.6, aspect=40, pad=0.01,
                       extend="both" if finite.size and finite.max() > vmax else "neither")
    bar.set_label("mean ΔDE of the column's component (logit)", fontsize=5.5, labelpad=1)
    bar.ax.tick_params(labelsize=5, length=1.5, pad=1)
    labelled = "" if n_labels >= S else f" (text: the {n_labels} rows with the most)"
    annotate(fig, f"{describe(res.settings)} ({res.settings['protocol']}) · "
             f"{res.selection_text(selection)}; mean · ring: a row's strongest repairer "
             f"among heads and MLPs{labelled} · grey: the ablated component · {limit_text}",
             res.settings)
    # room at the right for the labels
    fig.get_layout_engine().set(rect=(0, 0, 0.80 if not big else 0.86, 1))
    return fig


def _layer_view(res, selection: str | None, vmax: float | None):
    """The layer-aggregated repair map (see `repair_map`, view="layers")."""
    agg = res.layer_map(selection)
    grid = _np(agg["map"])
    R, C = grid.shape
    L = (C - 1) // 2
    fig, ax = figure(width=2 * COLUMN_WIDTH, height=min(9.0, 1.6 + R * 0.13))
    vmax, limit_text = _colour_limit(grid, vmax)
    image = ax.imshow(grid, cmap=mpl.colormaps[CMAP].with_extremes(bad=NAN_COLOR),
                      vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(R), agg["rows"], fontsize=7 if R <= 40 else 5)
    step = 5 if L > 12 else 1
    ticks = [i for i in range(L) if i % step == 0]
    ax.set_xticks([*ticks, *(L + i for i in ticks), C - 1],
                  [*map(str, ticks), *map(str, ticks), "LN"], fontsize=7)
    for x in (L - 0.5, 2 * L - 0.5):
        ax.axvline(x, color="black", lw=1.0)
    for x, name in ((L / 2 - 0.5, "attention layers (heads summed)"),
                    (L + L / 2 - 0.5, "MLP layers"), (C - 1, "final\nnorm")):
        ax.annotate(name, xy=(x, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.tick_params(length=1.5, pad=1)
    ax.set_xlabel("repairer (layer)", fontsize=7)
    ax.set_ylabel("ablated", fontsize=7)
    bar = fig.colorbar(image, ax=ax, location="right", shrink=0.8, pad=0.01,
                       extend="both" if np.nanmax(np.abs(grid)) > vmax else "neither")
    bar.set_label("mean ΔDE (logit)", fontsize=7)
    bar.ax.tick_params(labelsize=7, length=1.5, pad=1)
    annotate(fig, f"{describe(res.settings)} ({res.settings['protocol']}) · "
             f"{res.selection_text(selection)}; mean over sites · heads summed per layer, rows "
             f"averaged over each layer's ablated heads (a row sums to its mean SR) · grey: the "
             f"ablated component · {limit_text} · the full map: view='full'", res.settings)
    return fig
