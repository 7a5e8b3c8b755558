"""Paper figures (matplotlib) from sweep results and measurements, with a shared style.

    from nbtools import figures
    fig = figures.self_repair_vs_depth([res_gpt2, res_pythia])     # R&N Fig. 1
    figures.save(fig, "fig1", res_gpt2.settings)                   # fig1.pdf/.svg/.png
    figures.render_all(results, "figs/")                           # every applicable figure

Hydra (layer sweeps): layer_de (F1/F3; also from a single Measurement), delta_by_layer
(F2a/b), ablate_vs_unembed (F2c), unembed_ablate_agreement (F2d), compensation_vs_unembed
(F7), compensation_split (F8), mlp_erasure. R&N (head sweeps): self_repair_vs_depth,
de_vs_delta_logit, noise, ablation_comparison, scale_ratio_hist, breakdown, anti_erasure.
Repair maps: repair_map (who repairs whom, a heatmap of mean ΔDE).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

from ..errors import InvalidInputError
from .hydra import (
    ablate_vs_unembed,
    compensation_split,
    compensation_vs_unembed,
    delta_by_layer,
    gap_split,
    largest_ablation,
    layer_de,
    mlp_erasure,
    unembed_ablate_agreement,
)
from .repair_map import repair_map
from .rn import (
    ablation_comparison,
    anti_erasure,
    breakdown,
    de_vs_delta_logit,
    ln_share_vs_depth,
    noise,
    noise_by_layer,
    scale_ratio_hist,
    self_repair_vs_depth,
)
from .style import COLUMN_WIDTH, FORMATS, STYLES, figure, paper_style, restyle, save

__all__ = [
    "COLUMN_WIDTH", "FORMATS", "ablate_vs_unembed", "ablation_comparison", "anti_erasure",
    "breakdown", "compensation_split", "compensation_vs_unembed", "de_vs_delta_logit",
    "delta_by_layer", "figure", "figure_jobs", "gap_split", "layer_de", "ln_share_vs_depth", "mlp_erasure", "noise", "noise_by_layer",
    "paper_style",
    "render_all", "repair_map", "restyle", "save", "scale_ratio_hist", "self_repair_vs_depth",
    "unembed_ablate_agreement",
]


def _head_figures(res, tag: str):
    yield f"{tag}rn_fig1_self_repair_vs_depth", lambda: self_repair_vs_depth(res)
    yield f"{tag}rn_fig1_ln_share_vs_depth", lambda: ln_share_vs_depth(res)
    yield f"{tag}rn_de_vs_delta_logit", lambda: de_vs_delta_logit(res)
    yield f"{tag}rn_breakdown", lambda: breakdown(res)
    yield f"{tag}rn_scale_ratio_hist", lambda: scale_ratio_hist(res)
    if res.state["tok/heads"].shape[0]:
        yield f"{tag}rn_noise_by_layer", lambda: noise_by_layer(res)
    for h in res.state["tok/heads"].tolist():
        yield f"{tag}rn_noise_L{h[0]}H{h[1]}", lambda h=h: noise(res, f"{h[0]}.{h[1]}")
    for h in res.state["ae/heads"].tolist():
        for sel in ("condensed", "all"):
            yield f"{tag}rn_anti_erasure_L{h[0]}H{h[1]}_{sel}", \
                lambda h=h, sel=sel: anti_erasure(res, f"{h[0]}.{h[1]}", sel)


def _layer_figures(res, tag: str):
    kinds = res.settings["kinds"]
    for kind in kinds:
        yield f"{tag}hydra_f1_layer_de_{kind}", lambda k=kind: layer_de(
            res, 0, largest_ablation(res, k), res.scales[0])
        yield f"{tag}hydra_f2ab_delta_by_layer_{kind}", lambda k=kind: delta_by_layer(res, k)
        yield f"{tag}hydra_f2c_ablate_vs_unembed_{kind}", lambda k=kind: ablate_vs_unembed(res, k)
        yield f"{tag}hydra_f2d_agreement_{kind}", lambda k=kind: unembed_ablate_agreement(res, k)
        for scale in res.scales:
            yield f"{tag}hydra_f7_compensation_{kind}_{scale}", \
                lambda k=kind, s=scale: compensation_vs_unembed(res, k, s)
            yield f"{tag}hydra_f8_compensation_split_{kind}_{scale}", \
                lambda k=kind, s=scale: compensation_split(res, k, s)
            yield f"{tag}hydra_t4_gap_split_{kind}_{scale}", \
                lambda k=kind, s=scale: gap_split(res, k, s)
    if "attn" in kinds:
        for scale in res.scales:
            yield f"{tag}hydra_mlp_erasure_{scale}", lambda s=scale: mlp_erasure(res, None, s)


def _map_figures(res, tag: str):
    for sel in res.selections:
        yield f"{tag}repair_map_{res.settings['protocol']}_{sel}", \
            lambda sel=sel: repair_map(res, sel)


def figure_jobs(results, tag: str = "") -> list[tuple[str, object]]:
    """(file stem, zero-argument function drawing it) for every figure the results support.

    With several results, stems start with the result's position (`0_`, `1_`, ...). Several
    head sweeps also get the multi-model Fig. 1 and, when their methods differ, the
    ablation-type comparison.
    """
    from ..sweeps import HeadSweepResult, LayerSweepResult, RepairMapResult, load_result

    results = list(results) if isinstance(results, list | tuple) else [results]
    if not results:
        raise InvalidInputError("no results given; pass sweep results or result-file paths")
    results = [load_result(r) if isinstance(r, str | os.PathLike) else r for r in results]
    jobs = []
    heads = [r for r in results if isinstance(r, HeadSweepResult)]
    for i, res in enumerate(results):
        prefix = tag + (f"{i}_" if len(results) > 1 else "")  # "0_…", "1_…": the i-th result
        if isinstance(res, HeadSweepResult):
            jobs.extend(_head_figures(res, prefix))
        elif isinstance(res, LayerSweepResult):
            jobs.extend(_layer_figures(res, prefix))
        elif isinstance(res, RepairMapResult):
            jobs.extend(_map_figures(res, prefix))
        else:
            raise InvalidInputError(
                f"cannot draw figures from a value of type {type(res).__name__}; give "
                "HeadSweepResult / LayerSweepResult / RepairMapResult objects or result-file paths")
    if len(heads) > 1:
        jobs.append((f"{tag}rn_fig1_models", lambda: self_repair_vs_depth(heads)))
        if len({r.settings["method"] for r in heads}) > 1:
            jobs.append((f"{tag}rn_ablation_comparison", lambda: ablation_comparison(heads)))
    return jobs


def render_all(results, out_dir, formats=FORMATS, tag: str = "", dpi: int = 300,
               style: str = "paper") -> list[Path]:
    """Write every figure that applies to the given result(s) into `out_dir`; returns paths.

    results: result objects or result-file paths (one or a list). style: "paper" (one
    column) or "talk" (larger text and lines, for slides; see `style.restyle`).
    """
    if style not in STYLES:  # before any figure is drawn
        raise InvalidInputError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise InvalidInputError(f"{out_dir} is a file; give a folder for the figures")
    written: list[Path] = []
    for name, make in figure_jobs(results, tag):
        fig = restyle(make(), style)
        try:
            written.extend(save(fig, Path(out_dir) / name, formats=formats, dpi=dpi))
        finally:
            plt.close(fig)
    return written
