"""Shared look of the paper figures, and `save` (PDF / SVG / PNG with settings as metadata).

Figures are single-column width (3.25 in, ICML/NeurIPS column), small serif-free fonts,
colour-blind-safe colours. Every figure carries a caption line naming the model, the
ablation, the statistic and the site selection; `save` writes that caption and the
result's settings into each file's metadata.
"""

from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from ..errors import InvalidInputError

COLUMN_WIDTH = 3.25   # inches
FORMATS = ("pdf", "svg", "png")
DPI = 300

#: Okabe–Ito palette (colour-blind safe).
COLORS = {"blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "red": "#D55E00",
          "purple": "#CC79A7", "sky": "#56B4E9", "yellow": "#F0E442", "black": "#000000",
          "grey": "#999999"}
CYCLE = [COLORS[c] for c in ("blue", "orange", "green", "red", "purple", "sky", "yellow")]
PART_COLORS = {"direct_effect": COLORS["purple"], "direct_effect_ablated": "#7B3294",
               "sr_heads": COLORS["red"], "sr_mlp": COLORS["blue"], "sr_ln": COLORS["orange"],
               "self_repair": COLORS["green"], "delta_logit": COLORS["black"]}

RC = {
    "font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "xtick.labelsize": 6,
    "ytick.labelsize": 6, "legend.fontsize": 6, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.6,
    "lines.linewidth": 1.0, "lines.markersize": 3, "xtick.major.width": 0.6,
    "ytick.major.width": 0.6, "xtick.major.size": 2.5, "ytick.major.size": 2.5,
    "axes.prop_cycle": matplotlib.cycler(color=CYCLE), "figure.dpi": 150,
    "savefig.dpi": DPI, "savefig.bbox": None,
    "pdf.fonttype": 42, "svg.fonttype": "path", "svg.hashsalt": "nbtools",
    "axes.titlepad": 3, "axes.labelpad": 2,
}


@contextlib.contextmanager
def paper_style():
    """Temporarily apply the shared rcParams."""
    with plt.rc_context(RC):
        yield


def styled(func):
    """Decorator: run a figure function entirely inside `paper_style` (fonts, legends, ...)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with paper_style():
            return func(*args, **kwargs)

    return wrapper


def figure(nrows: int = 1, ncols: int = 1, height: float = 2.2, width: float = COLUMN_WIDTH,
           **kwargs):
    """A new (fig, axes) at single-column width in the paper style (layout: constrained)."""
    with paper_style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), layout="constrained",
                                 **kwargs)
    return fig, axes


def annotate(fig, caption: str, settings: dict | None = None) -> None:
    """Attach the caption (drawn under the axes, small) and the settings to a figure."""
    with paper_style():
        fig.supxlabel(caption, fontsize=5.5, color="#444444", wrap=True)
    fig._nbtools = {"caption": caption, "settings": settings or {}}


#: Figure styles: "paper" (one column, 6–7 pt) and "talk" (slides: a wide canvas, 2× the
#: width and 1.5× the height, every text 1.7× and every line 1.5×).
STYLES = ("paper", "talk")
TALK = {"width": 2.0, "height": 1.5, "text": 1.7, "lines": 1.5}


def restyle(fig, style: str = "paper"):
    """The figure in `style` (in place; "paper" leaves it as drawn). Returns the figure."""
    if style not in STYLES:
        raise InvalidInputError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    if style == "talk":
        fig.canvas.draw()  # creates the tick labels, so that they are scaled too
        w, h = fig.get_size_inches()
        fig.set_size_inches(w * TALK["width"], h * TALK["height"])
        for text in fig.findobj(matplotlib.text.Text):
            text.set_fontsize(text.get_fontsize() * TALK["text"])
        for line in fig.findobj(matplotlib.lines.Line2D):
            line.set_linewidth(line.get_linewidth() * TALK["lines"])
    return fig


def describe(settings: dict) -> str:
    """"model · method" for captions."""
    parts = [str(settings.get("model", "?"))]
    if settings.get("method"):
        parts.append(f"{settings['method']} ablation")
    return " · ".join(parts)


def save(fig, path, settings: dict | None = None, formats=None, dpi: int = DPI) -> list[Path]:
    """Save a figure as PDF, SVG and/or PNG with its caption and settings in the metadata.

    path: a file name; its suffix picks the format, or with no suffix (or `formats` given)
    every format in `formats` (default all three) is written next to it. settings default
    to those attached by the figure function; dpi applies to PNG. The page is exactly the
    figure's size (single column wide). Returns the written paths.
    """
    path = Path(path)
    attached = getattr(fig, "_nbtools", {})
    settings = settings if settings is not None else attached.get("settings", {})
    caption = attached.get("caption", "")
    suffix = path.suffix[1:].lower()
    if suffix not in FORMATS and suffix in fig.canvas.get_supported_filetypes():
        raise InvalidInputError(
            f"unsupported figure format {suffix!r} (from the file name {path.name}); choose "
            f"from {', '.join(FORMATS)}, or give a name without a suffix to write all three")
    if formats is None:
        formats = (suffix,) if suffix in FORMATS else FORMATS
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InvalidInputError(
            f"unsupported figure format(s) {bad}; choose from {', '.join(FORMATS)}")
    stem = path.with_suffix("") if path.suffix[1:].lower() in FORMATS else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    blob = json.dumps(_jsonable(settings), sort_keys=True, ensure_ascii=False)
    written = []
    for fmt in formats:
        target = stem.with_name(f"{stem.name}.{fmt}")
        if fmt == "pdf":
            meta = {"Title": stem.name, "Subject": caption, "Keywords": blob,
                    "Creator": "nbtools", "CreationDate": None}
        elif fmt == "svg":
            meta = {"Title": stem.name, "Description": f"{caption}\n{blob}",
                    "Creator": "nbtools", "Date": None}
        else:
            meta = {"Title": stem.name, "Description": caption, "Software": "nbtools",
                    "nbtools:settings": blob}
        with paper_style():
            fig.savefig(target, format=fmt, metadata=meta, dpi=dpi)
        written.append(target)
    return written


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if k not in ("prompts", "attributes")}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, str | int | float | bool) or x is None:
        return x
    return str(x)
