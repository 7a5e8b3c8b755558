"""Every paper figure renders from a small real sweep and saves non-empty PDF, SVG and PNG."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import make_lab  # noqa: E402
from PIL import Image  # noqa: E402

from nbtools import AttnLayer, figures  # noqa: E402
from nbtools.sweeps import sweep_heads, sweep_layers  # noqa: E402
from nbtools.sweeps.layers import hydra_sources  # noqa: E402


@pytest.fixture(scope="module")
def lab():
    return make_lab("gpt2")


@pytest.fixture(scope="module")
def sweeps(lab):
    rows = torch.randint(1, 512, (4, 10), generator=torch.Generator().manual_seed(5))
    heads = sweep_heads(lab, rows, batch_rows=2, per_token=["2.1"], anti_erasure=["2.0"],
                        n_top_neurons=12, top_frac=0.1, progress=False)
    zero = sweep_heads(lab, rows, method="zero", batch_rows=4, top_frac=0.1, progress=False)
    gen = torch.Generator().manual_seed(6)
    prompts = [" ".join(f"w{int(x)}" for x in torch.randint(1, 512, (6,), generator=gen))
               for _ in range(6)]
    layers = sweep_layers(lab, prompts, n_sources=3, batch_prompts=6, progress=False)
    return {"heads": heads, "zero": zero, "layers": layers, "prompts": prompts}


def _figures(sweeps, lab):
    h, z, lay = sweeps["heads"], sweeps["zero"], sweeps["layers"]
    m = hydra_sources(lab, sweeps["prompts"][0], AttnLayer(1), sweeps["prompts"][1:4])
    return {
        "f1_from_sweep": lambda: figures.layer_de(lay, 0, "attn2"),
        "f1_from_measurement": lambda: figures.layer_de(m, mean_ablation=lab.measure(
            sweeps["prompts"][0], "attn1", method="mean", reference=sweeps["prompts"],
            positions="final", target="top")),
        "f1_single_site": lambda: figures.layer_de(lab.measure(
            sweeps["prompts"][0], "mlp1", method="resample", sources=[sweeps["prompts"][2]],
            positions="final", target="top")),
        "f2ab": lambda: figures.delta_by_layer(lay, "attn"),
        "f2c": lambda: figures.ablate_vs_unembed(lay, "mlp"),
        "f2d": lambda: figures.unembed_ablate_agreement(lay, "attn"),
        "f7": lambda: figures.compensation_vs_unembed(lay, "attn", "recomputed"),
        "f8": lambda: figures.compensation_split(lay, "mlp", "clean"),
        "erasure": lambda: figures.mlp_erasure(lay),
        "fig1_models": lambda: figures.self_repair_vs_depth([h, z]),
        "de_vs_dl": lambda: figures.de_vs_delta_logit(h, "all"),
        "noise": lambda: figures.noise(h, "2.1"),
        "methods": lambda: figures.ablation_comparison([h, z], "sr_ln", "all",
                                                       "mean_clipped_ratio"),
        "scale_hist": lambda: figures.scale_ratio_hist(h),
        "breakdown": lambda: figures.breakdown(h, n=4),
        "anti_erasure": lambda: figures.anti_erasure(h, "2.0", "condensed"),
        "anti_erasure_all": lambda: figures.anti_erasure(h, "L2H0", "all"),
    }


def test_every_figure_saves_pdf_svg_png(lab, sweeps, tmp_path):
    for name, make in _figures(sweeps, lab).items():
        fig = make()
        try:
            paths = figures.save(fig, tmp_path / name, dpi=100)
        finally:
            plt.close(fig)
        assert [p.suffix for p in paths] == [".pdf", ".svg", ".png"], name
        for p in paths:
            assert p.stat().st_size > 2000, p
        png = Image.open(tmp_path / f"{name}.png")
        # exactly one 3.25 in column; the 2 × 2 anti-erasure panel is 1.5 columns wide
        assert png.width == (487 if name.startswith("anti_erasure") else 325), name
        meta = json.loads(png.text["nbtools:settings"])
        assert meta.get("model") == "gpt2" or "models" in meta, name
        assert png.text["Description"], name        # the caption


def test_figures_state_statistic_and_selection(sweeps):
    fig = figures.self_repair_vs_depth(sweeps["heads"], "sr_ln", "condensed",
                                       "mean_clipped_ratio")
    texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    plt.close(fig)
    assert any("mean of clipped ratios" in t for t in texts)
    assert any("top 10% tokens by clean DE" in t for t in texts)
    assert fig.axes[0].get_legend() is not None
    fig = figures.compensation_vs_unembed(sweeps["layers"], "attn", "recomputed")
    texts = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    plt.close(fig)
    assert "own norm scale" in texts and "full repair" in texts


def test_save_metadata_and_formats(sweeps, tmp_path):
    fig = figures.breakdown(sweeps["heads"], n=2)
    paths = figures.save(fig, tmp_path / "one.svg", {"model": "x", "seed": 3})
    plt.close(fig)
    assert [p.name for p in paths] == ["one.svg"]
    svg = paths[0].read_text()
    assert '&quot;seed&quot;: 3' in svg or '"seed": 3' in svg
    pdf = figures.save(fig, tmp_path / "one.pdf")[0].read_bytes()
    assert b"Keywords" in pdf
    with pytest.raises(ValueError, match="unsupported"):
        figures.save(fig, tmp_path / "x", formats=("jpg",))


def test_render_all(sweeps, tmp_path):
    names = [name for name, _ in figures.figure_jobs([sweeps["heads"], sweeps["zero"],
                                                      sweeps["layers"]])]
    assert {"rn_fig1_models", "rn_ablation_comparison", "0_rn_anti_erasure_L2H0_condensed",
            "0_rn_noise_L2H1", "1_rn_breakdown", "2_hydra_f7_compensation_attn_recomputed",
            "2_hydra_f1_layer_de_mlp"} <= set(names)
    paths = figures.render_all(sweeps["zero"], tmp_path, formats=("svg",))
    assert sorted(p.name for p in paths) == sorted(
        f"{n}.svg" for n, _ in figures.figure_jobs(sweeps["zero"]))


def test_fig1_draws_a_band_per_model(sweeps):
    """Fig. 1 across models: each model gets its per-layer mean line and a 95 % band around it
    (rows resampled for the condensed selection, heads for "all"), and R&N's zones."""
    from matplotlib.collections import PolyCollection

    from nbtools.figures.rn import layer_band

    results = [sweeps["heads"], sweeps["zero"]]
    for selection, unit in (("condensed", "rows"), ("all", "heads")):
        fig = figures.self_repair_vs_depth(results, selection=selection)
        ax = fig.axes[0]
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)
                 and str(c.get_gid()).startswith("band")]
        texts = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        plt.close(fig)
        assert sorted(b.get_gid().split(":")[0] for b in bands) == ["band0", "band1"], selection
        for b in bands:
            xy = b.get_paths()[0].vertices
            assert np.isfinite(xy).all() and np.ptp(xy[:, 1]) > 0, b.get_gid()
        assert "bootstrap" in texts and "early-layer breakage" in texts and "self-repair" in texts
        assert ("corpus rows" if unit == "rows" else "the layer's heads") in texts
        mean, lo, hi, got = layer_band(results[0], selection=selection, B=200)
        assert got == unit
        assert (lo <= hi).all() and ((lo <= mean + 1e-12) & (mean <= hi + 1e-12)).any()
