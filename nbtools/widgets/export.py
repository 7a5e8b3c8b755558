"""The Explorer's current view as a matplotlib figure (PNG / SVG / PDF) or as data (CSV / JSON).

`view_figure(view)` draws the same panel dicts the browser draws (built by `panels` from one
Measurement), so the exported figure and the live widget always agree.

    fig = explorer.figure()              # or view_figure(measurement_view(m, decode))
    fig.savefig("explorer.pdf")
"""

from __future__ import annotations

import io

import numpy as np

from . import panels

FORMATS = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf",
           "csv": "text/csv", "json": "application/json"}
DATA_FORMATS = ("csv", "json")
CSV_COLUMNS = ("component", "kind", "layer", "head", "de_clean", "de_ablated", "delta_de",
               "sr_alone", "ablated")
ABL = "#e4701e"
CLEAN = "#6b7280"
POS = "#3a9d5d"
NEG = "#d1495b"
TOTAL = "#4b5563"
MODE_LABELS = {"de": "clean direct effect (logits)", "delta": "ΔDE under the ablation (logits)",
               "sr": "self-repair when ablated alone (logits)"}


def _arr(x) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in x], dtype=float) \
        if x and isinstance(x[0], list) else np.array([np.nan if v is None else v for v in x],
                                                      dtype=float)


def _tok(t) -> str:
    return repr(t) if t is not None else "?"


def grid_scales(heads: np.ndarray, mlp: np.ndarray, excluded: np.ndarray) -> tuple[float, float]:
    """Colour limits (heads, MLP column), as the widget computes them: the heads' largest
    |value|; the MLP column on its own robust scale (`panels.robust_vmax`). `excluded` [L, H+1]
    marks cells left out (the ablated ones in the ΔDE view)."""
    hv = heads[~excluded[:, :-1] & np.isfinite(heads)]
    mv = mlp[~excluded[:, -1] & np.isfinite(mlp)]
    v_mlp = panels.robust_vmax(mv.tolist()) or 1.0
    v_heads = float(np.abs(hv).max()) if hv.size else 0.0
    return v_heads or v_mlp, v_mlp


def colormap(n: int = 256):
    """The widget's diverging colour map (`panels.diverging_rgb`) as a matplotlib colormap."""
    from matplotlib.colors import ListedColormap

    xs = np.linspace(-1, 1, n)
    return ListedColormap([[c / 255 for c in panels.diverging_rgb(x, 1.0)] for x in xs])


def _grid(ax, view, color_by: str, sweep: dict | None):
    g = view["grid"]
    if color_by == "sr" and sweep and sweep.get("key") == view.get("key"):
        heads, mlp = _arr(sweep["heads"]), _arr(sweep["mlp"])
    elif color_by == "delta" and not view.get("clean_only"):
        heads, mlp = _arr(g["delta"]), _arr(g["mlp_delta"])
    else:
        color_by = "de"
        heads, mlp = _arr(g["de"]), _arr(g["mlp_de"])
    n_layers, n_heads = heads.shape
    ablated = set(view.get("ablated_ui") or [])
    mask = np.zeros((n_layers, n_heads + 1), dtype=bool)
    for layer in range(n_layers):
        for head in range(n_heads):
            mask[layer, head] = f"L{layer}H{head}" in ablated or f"attn{layer}" in ablated
        mask[layer, n_heads] = f"mlp{layer}" in ablated
    excluded = mask & (color_by == "delta")
    v_heads, v_mlp = grid_scales(heads, mlp, excluded)
    image = np.ones((n_layers, n_heads + 2, 3))  # a white gap column before the MLP column
    for layer in range(n_layers):
        for col in range(n_heads + 1):
            v = heads[layer, col] if col < n_heads else mlp[layer]
            rgb = (225, 225, 225) if excluded[layer, col] else \
                panels.diverging_rgb(float(v), v_heads if col < n_heads else v_mlp)
            image[layer, col + (col == n_heads)] = [c / 255 for c in rgb]
    ax.imshow(image, aspect="equal")
    for (layer, col), hit in np.ndenumerate(mask):
        if hit:
            x = col + (col == n_heads)
            ax.add_patch(_rect(x, layer))
            ax.text(x, layer, "×", ha="center", va="center", color=ABL, fontsize=10,
                    fontweight="bold")
    ax.set_xticks(list(range(n_heads)) + [n_heads + 1],
                  [f"H{h}" for h in range(n_heads)] + ["MLP"], fontsize=7)
    ax.set_yticks(range(n_layers), [f"L{layer}" for layer in range(n_layers)],
                  fontsize=7 if n_layers <= 16 else 5.5)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    clipped = [f"MLP{i}" for i, v in enumerate(mlp)
               if np.isfinite(v) and abs(v) > v_mlp * 1.0001 and not excluded[i, n_heads]]
    note = f" · MLP column ±{v_mlp:.2f}" + (f" ({', '.join(clipped)} beyond)" if clipped else "")
    ax.set_title("heads × layers — " + MODE_LABELS[color_by] + note, fontsize=9, loc="left")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    sm = ScalarMappable(Normalize(-v_heads, v_heads), colormap())
    cb = ax.figure.colorbar(sm, ax=ax, orientation="horizontal", fraction=0.05, pad=0.08)
    cb.ax.tick_params(labelsize=7)
    cb.set_label("heads", fontsize=7)


def _rect(col, row):
    from matplotlib.patches import Rectangle

    return Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=ABL, linewidth=2)


def _waterfall(ax, wf):
    steps = wf["steps"]
    run, xs, heights, bottoms, colors = 0.0, [], [], [], []
    for i, st in enumerate(steps):
        v = st["value"] or 0.0
        if st["total"]:
            bottoms.append(0.0)
            heights.append(v)
            colors.append(TOTAL)
        else:
            bottoms.append(run)
            heights.append(v)
            colors.append(POS if v >= 0 else NEG)
            run += v
        xs.append(i)
    ax.bar(xs, heights, bottom=bottoms, color=colors, width=0.62)
    for x, hgt, b in zip(xs, heights, bottoms, strict=True):
        y = b + hgt
        ax.annotate(f"{hgt:+.3f}", (x, y), xytext=(0, 3 if hgt >= 0 else -10),
                    textcoords="offset points", ha="center", fontsize=7)
    ax.axhline(0, color="#888", linewidth=0.8)
    ends = [b + hgt for b, hgt in zip(bottoms, heights, strict=True)] + bottoms + [0.0]
    span = (max(ends) - min(ends)) or 1.0
    ax.set_ylim(min(ends) - 0.14 * span, max(ends) + 0.14 * span)
    ax.set_xticks(xs, [st["label"].replace(" ", "\n", 1) for st in steps], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("self-repair waterfall (logits)", fontsize=9, loc="left")
    ax.spines[["top", "right"]].set_visible(False)


def _gauge(ax, gauge):
    """A semicircular gauge of s/s′ (as in the widget) with the scales and SR_LN below it."""
    from matplotlib.patches import Wedge

    r = gauge["ratio"]
    dev = abs(r - 1)
    half = next((k for k in (0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5) if k >= dev * 1.15), dev * 1.2)
    lo, hi = max(0.0, 1 - half), 1 + half

    def angle(v):  # degrees: lo → 180, hi → 0
        return 180 * (1 - (min(hi, max(lo, v)) - lo) / (hi - lo))

    ax.add_patch(Wedge((0, 0), 1, 90, 180, width=0.16, color="#f3c9ce"))
    ax.add_patch(Wedge((0, 0), 1, 0, 90, width=0.16, color="#c7e6d1"))
    for v in (lo, 1, hi):
        a = np.radians(angle(v))
        ax.plot([0.8 * np.cos(a), 1.04 * np.cos(a)], [0.8 * np.sin(a), 1.04 * np.sin(a)],
                color="#888", linewidth=1)
        ax.text(1.2 * np.cos(a), 1.16 * np.sin(a) - (0.08 if v != 1 else 0), f"×{v:.3g}",
                ha="center", va="center", fontsize=7, color="#666")
    a = np.radians(angle(r))
    ax.plot([0, 0.74 * np.cos(a)], [0, 0.74 * np.sin(a)], color="#222", linewidth=2.2,
            solid_capstyle="round")
    ax.plot([0], [0], "o", color="#222", markersize=5)
    ax.text(0, -0.22, f"s/s′ = ×{r:.4f}", ha="center", fontsize=10, fontweight="bold")
    ax.text(0, -0.48, f"clean s {gauge['s_clean']:.4f} · ablated s′ {gauge['s_ablated']:.4f}",
            ha="center", fontsize=7.5, color="#444")
    ax.text(0, -0.68, f"logit change from the norm alone: {gauge['sr_ln']:+.4f}", ha="center",
            fontsize=7.5, fontweight="bold")
    ax.set_xlim(-1.35, 1.35)
    ax.set_ylim(-0.8, 1.3)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title("final-norm rescaling", fontsize=9, loc="left")


def _layers(ax, layers, which: str):
    clean, abl = _arr(layers[f"{which}_clean"]), _arr(layers[f"{which}_ablated"])
    x = np.arange(len(clean))
    for layer in layers[f"marked_{which}"]:
        ax.axvspan(layer - 0.5, layer + 0.5, color=ABL, alpha=0.13, linewidth=0)
    ax.plot(x, clean, "--o", color=CLEAN, markersize=3, linewidth=1.2, label="clean")
    ax.plot(x, abl, "-o", color=ABL, markersize=3, linewidth=1.6, label="ablated")
    ax.axhline(0, color="#888", linewidth=0.8)
    values = [v for v in np.concatenate([clean, abl]) if np.isfinite(v)]
    lim = panels.robust_vmax(np.fmax(np.abs(clean), np.abs(abl)).tolist())  # one per layer
    if values and 0 < lim < max(abs(v) for v in values):  # one layer off scale, as on screen
        lo, hi = max(-lim, min(0.0, *values)), min(lim, max(0.0, *values))
        pad = 0.08 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
        for layer, v in enumerate(np.where(np.abs(abl) > np.abs(clean), abl, clean)):
            if np.isfinite(v) and abs(v) > lim:
                ax.annotate(f"{'▲' if v > 0 else '▼'} layer {layer}: {v:+.2f} (off scale)",
                            (layer, hi if v > 0 else lo), fontsize=7, color="#555",
                            ha="left" if layer < len(clean) / 2 else "right", va="top")
    ax.set_xticks(x)
    ax.tick_params(labelsize=7)
    name = "attention" if which == "attn" else "MLP"
    ax.set_title(f"DE per {name} layer ({layers['scale']} scale)", fontsize=9, loc="left")
    ax.set_xlabel("layer", fontsize=7)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)


def _neurons(ax, neurons):
    """Anti-erasure neurons (AE) and the largest negative movers, clean vs ablated DE."""
    rows = neurons["rows"][:8] + neurons.get("negative", [])
    if not rows:
        _empty(ax, "no anti-erasure neuron")
        return
    labels = [f"L{r['layer']}.{r['neuron']}" + (" AE" if r["anti_erasure"] else " (−)")
              for r in rows]
    y = np.arange(len(rows))[::-1]
    ax.barh(y + 0.2, [r["de_clean"] for r in rows], height=0.38, color=CLEAN, label="DE clean")
    ax.barh(y - 0.2, [r["de_ablated"] for r in rows], height=0.38, color=ABL, label="DE ablated")
    ax.set_yticks(y, labels, fontsize=7)
    ax.axvline(0, color="#888", linewidth=0.8)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    title = "anti-erasure neurons (DE < 0, ΔDE > 0)"
    if neurons.get("top_sum") is not None and neurons.get("sr_mlp") is not None:
        title += f"\ntogether {neurons['top_sum']:+.3f} of SR_MLP {neurons['sr_mlp']:+.3f}"
    ax.set_title(title, fontsize=9, loc="left")
    ax.spines[["top", "right"]].set_visible(False)


def _topk(ax, topk):
    clean, abl = topk["clean"][:6], topk["ablated"][:6]
    n = max(len(clean), len(abl))
    if not n:
        ax.set_axis_off()
        return
    y = np.arange(n)[::-1]
    ax.barh(y[: len(clean)], [-r["p"] for r in clean], color=CLEAN, height=0.6)
    ax.barh(y[: len(abl)], [r["p"] for r in abl], color=ABL, height=0.6)
    for yy, r in zip(y, clean, strict=False):
        ax.text(-r["p"], yy, f"{r['token']!r} {100 * r['p']:.2g}% ", ha="right", va="center",
                fontsize=7, fontweight="bold" if r["id"] == topk["target_id"] else "normal")
    for yy, r in zip(y, abl, strict=False):
        ax.text(r["p"], yy, f" {100 * r['p']:.2g}% {r['token']!r}", ha="left", va="center",
                fontsize=7, fontweight="bold" if r["id"] == topk["target_id"] else "normal")
    lim = max([r["p"] for r in clean + abl] + [1e-6]) * 2.6
    ax.set_xlim(-lim, lim)
    ax.axvline(0, color="#888", linewidth=0.8)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_title("top predictions: clean ◀ | ▶ ablated", fontsize=9, loc="left")
    ax.spines[["top", "right", "left", "bottom"]].set_visible(False)


def _empty(ax, text):
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color="#888",
            transform=ax.transAxes)


def view_figure(view: dict, color_by: str = "de", sweep: dict | None = None, tokens=None,
                dpi: int = 100):
    """A matplotlib Figure of an Explorer view dict (see `panels.measurement_view`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.5, 7.6), dpi=dpi, layout="constrained")
    gs = fig.add_gridspec(2, 4, height_ratios=[1.1, 1])
    st = view.get("settings", {})
    t = view["logit"]
    ablated = " + ".join(view.get("ablated_ui") or []) or "nothing (clean run)"
    prompt = "".join(tokens) if tokens else view.get("state", {}).get("prompt", "")
    line1 = (f"{st.get('model', '')} — ablate {ablated} · method {st.get('method')} "
             f"({st.get('sources')}) · positions {st.get('positions')} · scale {st.get('scale')}")
    line2 = (f"prompt {prompt!r} · position {view.get('position')} · target {_tok(t['token'])}: "
             f"logit {t['clean']:+.3f} → {t['ablated']:+.3f} (ΔL {t['delta']:+.3f})")
    if t.get("p_clean") is not None:
        line2 += f", p {100 * t['p_clean']:.2f}% → {100 * t['p_ablated']:.2f}%"
    hl = view.get("headline")
    if hl and not view.get("clean_only"):
        share = "–" if hl["sr_share"] is None else f"{100 * hl['sr_share']:.0f}%"
        line2 += (f"\nSR {hl['sr']:+.3f} · DE {hl['de']:+.3f} · SR/DE {share} · "
                  f"SR′ = ΔL + DE {hl['sr_prime']:+.3f}")
    fig.suptitle(line1 + "\n" + line2, fontsize=9, x=0.01, ha="left")
    _grid(fig.add_subplot(gs[0, 0:2]), view, color_by, sweep)
    if view.get("clean_only"):
        _empty(fig.add_subplot(gs[0, 2]), "nothing ablated")
        _empty(fig.add_subplot(gs[0, 3]), "")
        _empty(fig.add_subplot(gs[1, 2]), "")
    else:
        _waterfall(fig.add_subplot(gs[0, 2]), view["waterfall"])
        _gauge(fig.add_subplot(gs[0, 3]), view["gauge"])
        _neurons(fig.add_subplot(gs[1, 2]), view["neurons"])
    sub = gs[1, 0:2].subgridspec(1, 2)
    _layers(fig.add_subplot(sub[0, 0]), view["layers"], "attn")
    _layers(fig.add_subplot(sub[0, 1]), view["layers"], "mlp")
    _topk(fig.add_subplot(gs[1, 3]), view["topk"])
    return fig


def component_rows(view: dict, sweep: dict | None = None) -> list[dict]:
    """One row per head and per MLP layer of a view: clean / ablated DE, ΔDE, the self-repair
    when ablated alone (from a finished sweep of the same key, else None) and whether it is
    ablated now. The Explorer's sortable table and the CSV export read these rows."""
    g = view["grid"]
    ablated = set(view.get("ablated_ui") or [])
    sw = sweep if sweep and sweep.get("key") == view.get("key") else None
    rows = []
    for layer, de_row in enumerate(g["de"]):
        for head, de in enumerate(de_row):
            name = f"L{layer}H{head}"
            rows.append({"component": name, "kind": "head", "layer": layer, "head": head,
                         "de_clean": de, "de_ablated": g["de_ablated"][layer][head],
                         "delta_de": g["delta"][layer][head],
                         "sr_alone": sw["heads"][layer][head] if sw else None,
                         "ablated": name in ablated or f"attn{layer}" in ablated})
        rows.append({"component": f"mlp{layer}", "kind": "mlp", "layer": layer, "head": None,
                     "de_clean": g["mlp_de"][layer], "de_ablated": g["mlp_de_ablated"][layer],
                     "delta_de": g["mlp_delta"][layer],
                     "sr_alone": sw["mlp"][layer] if sw else None,
                     "ablated": f"mlp{layer}" in ablated})
    return rows


def view_data(view: dict, fmt: str, sweep: dict | None = None) -> bytes:
    """The view as CSV (one row per component, `CSV_COLUMNS`, the settings as # comments) or
    JSON (the whole view dict, with the sweep when it belongs to this view)."""
    import csv
    import json

    if fmt == "json":
        out = dict(view)
        if sweep and sweep.get("key") == view.get("key"):
            out["sweep"] = sweep
        return json.dumps(out, indent=1, default=str).encode()
    buf = io.StringIO()
    st, hl = view.get("settings", {}), view.get("headline") or {}
    for key in ("model", "method", "sources", "positions", "scale", "target"):
        buf.write(f"# {key}: {st.get(key)}\n")
    buf.write(f"# prompt: {view.get('state', {}).get('prompt', '')!r}; position "
              f"{view.get('position')}; target token {view['logit'].get('token')!r}\n")
    if hl and not view.get("clean_only"):
        buf.write(f"# ablated {' + '.join(view.get('ablated_ui') or [])}: SR {hl['sr']}, "
                  f"DE {hl['de']}, SR/DE {hl['sr_share']}, delta_logit {hl['delta_logit']}\n")
    writer = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(component_rows(view, sweep))
    return buf.getvalue().encode()


def figure_bytes(fig, fmt: str = "png", dpi: int | None = None) -> bytes:
    """Render a Figure to PNG / SVG / PDF bytes."""
    fmt = fmt.lower()
    if fmt not in FORMATS or fmt in DATA_FORMATS:
        raise ValueError(f"unknown figure format {fmt!r}; choose from png, svg, pdf")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()


def serve(stdin=None, stdout=None) -> None:
    """Draw PNGs for another process, at low CPU priority: read one JSON request a line
    ({"view", "color_by", "sweep", "tokens", "dpi"}), answer b"P" or b"E" (an error message),
    an 8-byte big-endian length, then the PNG (or the message). Runs until stdin closes.
    Writes b"R" first, once it is set to die with its parent (so it may be paused from then on).
    It ignores Ctrl-C (a kernel's interrupt or shutdown reaches its whole process group) and
    ends quietly when the parent goes away (stdin closed, or a broken pipe)."""
    import json
    import os
    import signal
    import sys

    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stdout.write(b"R")
        stdout.flush()
        if hasattr(os, "nice"):
            os.nice(10)
        for line in stdin:
            try:
                req = json.loads(line)
                fig = view_figure(req["view"], req.get("color_by", "de"), req.get("sweep"),
                                  req.get("tokens"), dpi=req.get("dpi", 72))
                status, data = b"P", figure_bytes(fig, "png")
            except Exception as exc:  # reported to the widget, never fatal to the server
                status, data = b"E", f"{type(exc).__name__}: {exc}".encode()
            stdout.write(status + len(data).to_bytes(8, "big") + data)
            stdout.flush()
    except (BrokenPipeError, ConnectionResetError):  # the parent is gone: nobody to tell
        os._exit(0)


def _die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this server when the process that started it dies
    (a kernel killed while a drawing is paused by SIGSTOP would otherwise leave it behind:
    a stopped process never reads the EOF of its closed stdin)."""
    import ctypes
    import os
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return
    prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    parent = os.environ.get("NBTOOLS_PARENT_PID")
    if parent and os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(0)

