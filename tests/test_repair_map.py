"""Repair map: cells equal per-ablation `lab.measure` ΔDEs, rows sum to SR, resume, figure."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import make_lab, random_rows, word_prompts

from nbtools import AttnLayer, Head, InvalidInputError, MLPLayer
from nbtools.sweeps import (
    RepairMapResult,
    ResultFileError,
    load_result,
    repair_map,
    sweep_heads,
)
from nbtools.sweeps.layers import source_index
from nbtools.sweeps.repair_map import column_labels, parse_rows

BATCHES = ((0, 2), (2, 5))  # 5 rows in batches of 2: the 1-row tail joins the batch before
MAP_KW = dict(batch_rows=2, top_frac=0.05, progress=False)


@pytest.fixture(scope="module")
def lab():
    return make_lab("gpt2")


@pytest.fixture(scope="module")
def rows():
    return random_rows(5, 12)


@pytest.fixture(scope="module")
def prompts():
    return word_prompts(9)


@pytest.fixture(scope="module")
def map_file(lab, rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("map") / "map.safetensors"
    res = repair_map(lab, rows, rows="all", out=path, checkpoint_every=0, **MAP_KW)
    return path, res


def _expected_cells(m) -> torch.Tensor:
    """[N, C] ΔDE per site in the map's column order, from a Measurement's own fields."""
    cols = []
    for layer in range(m.head_delta_de.shape[1]):
        cols += [m.head_delta_de[:, layer, h] for h in range(m.head_delta_de.shape[2])]
        cols.append(m.mlp_delta_de[:, layer])
    return torch.stack([*cols, m.sr_ln], 1).double()


def _own(comp, L, H) -> list[int]:
    if isinstance(comp, Head):
        return [comp.layer * (H + 1) + comp.head]
    if isinstance(comp, AttnLayer):
        return [comp.layer * (H + 1) + h for h in range(H)]
    return [comp.layer * (H + 1) + H]


# --- the R&N protocol ----------------------------------------------------------------------
def test_columns_and_rows_are_ordered_by_layer(lab):
    cols = column_labels(2, 3)
    assert cols == ["L0H0", "L0H1", "L0H2", "MLP0", "L1H0", "L1H1", "L1H2", "MLP1", "LN"]
    got = parse_rows(["mlp1", "1.2", "attn0", "0.3", "1.*"], lab.shape)
    assert [str(c) for c in got] == ["L0H3", "attn0", "L1H0", "L1H1", "L1H2", "L1H3", "mlp1"]
    assert len(parse_rows("heads", lab.shape)) == 16
    assert len(parse_rows("layers", lab.shape)) == 8
    assert len(parse_rows("all", lab.shape)) == 24


@pytest.mark.parametrize("comp", [Head(0, 0), Head(1, 2), Head(3, 1), AttnLayer(1), MLPLayer(2)])
def test_map_cells_equal_per_ablation_measure(lab, rows, map_file, comp):
    _, res = map_file
    L, H = lab.n_layers, lab.n_heads
    parts = []
    for start, end in BATCHES:
        m = lab.measure(rows[start:end], comp, method="resample", sources="shift")
        parts.append((_expected_cells(m), m.direct_effect.double(), m.self_repair.double()))
    cells = torch.cat([p[0] for p in parts])
    de, sr = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
    k = res.settings["top_k"]
    assert k == int(0.05 * 5 * 11)
    top = torch.sort(de, descending=True, stable=True).indices[:k]
    r = res.rows.index(str(comp))
    own = _own(comp, L, H)
    for sel, idx in (("all", torch.arange(de.numel())), ("condensed", top)):
        got = res.map(sel)[r]
        expect = cells[idx].mean(0)
        assert torch.isnan(got[own]).all()
        keep = torch.ones_like(got, dtype=torch.bool)
        keep[own] = False
        torch.testing.assert_close(got[keep], expect[keep], atol=1e-9, rtol=0)
        torch.testing.assert_close(res.row_stat("direct_effect", sel)[r], de[idx].mean(),
                                   atol=1e-9, rtol=0)
        torch.testing.assert_close(res.row_stat("self_repair", sel)[r], sr[idx].mean(),
                                   atol=1e-9, rtol=0)
        # a row sums to its self-repair (SR = SR_heads + SR_MLP + SR_LN)
        torch.testing.assert_close(got.nansum(), sr[idx].mean(), atol=1e-9, rtol=0)
    assert res.row_stat("n_sites", "condensed")[r] == k


def test_map_agrees_with_the_head_sweep(lab, rows, map_file):
    _, res = map_file
    heads = sweep_heads(lab, rows, heads="all", **MAP_KW)
    idx = [res.rows.index(f"L{a}H{b}") for a in range(lab.n_layers) for b in range(lab.n_heads)]
    H1 = lab.n_heads + 1
    mlp_cols = [layer * H1 + lab.n_heads for layer in range(lab.n_layers)]
    head_cols = [c for c in range(len(res.columns) - 1) if c not in mlp_cols]
    for sel in ("condensed", "all"):
        grid = res.map(sel)[idx]
        for name, got in (("self_repair", grid.nansum(1)), ("sr_ln", grid[:, -1]),
                          ("sr_mlp", grid[:, mlp_cols].sum(1)),
                          ("sr_heads", grid[:, head_cols].nansum(1))):
            torch.testing.assert_close(got, heads.stat(name, sel).flatten(), atol=1e-9, rtol=0)


def test_map_file_roundtrip_and_summaries(map_file):
    path, res = map_file
    back = load_result(path)
    assert isinstance(back, RepairMapResult) and back.complete
    assert back.settings == res.settings and back.rows == res.rows
    for key, value in res.stats.items():
        torch.testing.assert_close(back.stats[key], value, equal_nan=True)
    s = back.settings
    assert s["protocol"] == "rn" and s["method"] == "resample" and s["selections"] == [
        "condensed", "all"]
    assert {"torch", "nnsight", "transformers"} <= set(s["versions"])
    assert back.columns[-1] == "LN" and len(back.columns) == 4 * 5 + 1
    pairs = back.top_pairs(5, "all")
    assert len(pairs) == 5 and all(p["repairer"] != "LN" for p in pairs)
    assert pairs[0]["delta_de"] >= pairs[-1]["delta_de"]
    grid = back.map("all")
    r, c = back.rows.index(pairs[0]["ablated"]), back.columns.index(pairs[0]["repairer"])
    assert pairs[0]["delta_de"] == float(grid[r, c]) == float(torch.nan_to_num(
        grid[:, :-1], nan=-1e9).max())


def test_concentration_definitions():
    grid = torch.tensor([[3.0, 1.0, -2.0, 0.0, float("nan")], [0.0, -1.0, 0.0, 0.0, 0.0]])
    settings = dict(rows=["L0H0", "L0H1"], columns=["a", "b", "c", "d", "LN"],
                    selections=["all"])
    res = RepairMapResult(stats={"map/all": grid}, state={}, settings=settings)
    pos = res.concentration(k=1, over="positive")
    assert pos[0] == pytest.approx(3 / 4) and torch.isnan(pos[1])
    assert res.concentration(k=2, over="abs")[0] == pytest.approx(5 / 6)
    with pytest.raises(InvalidInputError, match="positive"):
        res.concentration(over="nope")
    with pytest.raises(InvalidInputError, match="not in this map"):
        res.map("condensed")


def test_map_resumes_after_random_kills(lab, rows, tmp_path, monkeypatch):
    kw = dict(MAP_KW, rows=["0.1", "2.*", "mlp1"])
    path = tmp_path / "reference.safetensors"
    repair_map(lab, rows, out=path, **kw)
    reference = path.read_bytes()
    out = tmp_path / "resumed.safetensors"
    rng = random.Random(0)
    calls = {"n": 0, "kill_at": 1}

    def flaky(real):
        def measure(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == calls["kill_at"]:
                raise KeyboardInterrupt
            return real(self, *args, **kwargs)
        return measure

    for verb in ("measure_many", "measure_clean"):  # the selection pass runs clean runs alone
        monkeypatch.setattr(type(lab), verb, flaky(getattr(type(lab), verb)))
    kills = 0
    while True:
        calls.update(n=0, kill_at=rng.randint(1, 5))
        try:
            repair_map(lab, rows, out=out, checkpoint_every=0, **kw)
            break
        except KeyboardInterrupt:
            kills += 1
            assert not load_result(out).complete
    assert kills >= 2
    assert out.read_bytes() == reference
    assert not list(tmp_path.glob(".*.tmp"))
    again = repair_map(lab, rows, out=out, **kw)  # finished: returned without recomputation
    assert again.complete and out.read_bytes() == reference
    with pytest.raises(ResultFileError, match="different settings.*top_frac"):
        repair_map(lab, rows, out=out, **{**kw, "top_frac": 0.1})


def test_map_validation(lab, rows):
    with pytest.raises(InvalidInputError, match="protocol"):
        repair_map(lab, rows, protocol="nope")
    with pytest.raises(InvalidInputError, match="out of range"):
        repair_map(lab, rows, rows=["9.9"])
    with pytest.raises(InvalidInputError, match="map rows"):
        repair_map(lab, rows, rows=["mlp1:3"])
    with pytest.raises(InvalidInputError, match="method"):
        repair_map(lab, rows, method="nope")
    with pytest.raises(InvalidInputError, match="resamples"):
        repair_map(lab, protocol="hydra", method="zero")
    zero = repair_map(lab, rows[:2], method="zero", rows="3.*", progress=False)
    # last-layer heads: nothing downstream but MLP3 and the final norm
    assert torch.all(zero.map("all")[:, :-2].nan_to_num() == 0)


# --- the Hydra protocol --------------------------------------------------------------------
def test_hydra_map_equals_per_prompt_measure(lab, prompts):
    res = repair_map(lab, prompts, protocol="hydra", n_sources=4, batch_prompts=4,
                     rows=["1.1", "attn2", "mlp0"], progress=False)
    assert res.selections == ["all"]
    index = source_index(len(prompts), 4, 0)
    assert res.rows == ["mlp0", "L1H1", "attn2"]
    for comp in (Head(1, 1), AttnLayer(2), MLPLayer(0)):
        r = res.rows.index(str(comp))
        cells, sr = [], []
        for p in range(len(prompts)):
            m = lab.measure([prompts[p]], comp, method="resample", positions="final",
                            target="top", sources=[[prompts[j] for j in index[p]]])
            cells.append(_expected_cells(m)[0])
            sr.append(float(m.self_repair[0]))
        expect = torch.stack(cells).mean(0)
        got = res.map()[r]
        keep = torch.isfinite(got)
        assert (~keep).sum() == len(_own(comp, lab.n_layers, lab.n_heads))
        # a batch of prompts vs one prompt: float32 forwards agree to ~1e-6
        torch.testing.assert_close(got[keep], expect[keep], atol=2e-5, rtol=1e-5)
        assert float(res.row_stat("self_repair")[r]) == pytest.approx(sum(sr) / len(sr),
                                                                       abs=2e-5)


# --- figure and command line ---------------------------------------------------------------
def test_figure_from_the_file_in_every_format(map_file, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from nbtools.figures import figure_jobs, render_all
    from nbtools.figures import repair_map as draw

    path, _ = map_file
    res = load_result(path)
    assert [name for name, _ in figure_jobs(res)] == ["repair_map_rn_condensed",
                                                      "repair_map_rn_all"]
    written = render_all(res, tmp_path, dpi=80)
    assert sorted(p.suffix for p in written) == [".pdf", ".pdf", ".png", ".png", ".svg", ".svg"]
    assert all(p.stat().st_size > 1000 for p in written)
    fig = draw(res, "all", n_labels=3)
    labels = [t.get_text() for t in fig.axes[0].texts]
    top = res.map("all")[:, :-1].nan_to_num(nan=-1e9).max(1).values
    assert len(labels) == min(3, int((top > 0).sum()))
    assert fig._nbtools["settings"]["protocol"] == "rn"
    assert "all tokens" in fig._nbtools["caption"]


def test_layer_view_sums_heads_and_keeps_each_rows_repair(map_file):
    """layer_map: an attention column is the sum of its layer's head columns, the head rows
    of a layer are averaged (so a row still sums to the mean SR of those heads), layer
    ablations keep their own rows, and the figure's layer view draws it with the clipped
    colour range stated."""
    import matplotlib

    matplotlib.use("Agg")
    from nbtools.figures import repair_map as draw

    _, res = map_file
    L, H = res.settings["n_layers"], res.settings["n_heads"]
    full, agg = res.map("all"), res.layer_map("all")
    assert agg["columns"] == [f"attn{i}" for i in range(L)] + [f"MLP{i}" for i in range(L)] + ["LN"]
    heads_of = {r: i for i, r in enumerate(agg["rows"])}
    for layer in range(L):
        idx = [i for i, r in enumerate(res.rows) if r.startswith(f"L{layer}H")]
        row = agg["map"][heads_of[f"L{layer} heads"]]
        per = full[idx, :-1].reshape(len(idx), L, H + 1)
        attn = per[..., :H].nansum(-1)
        torch.testing.assert_close(row[:L], attn.mean(0))
        torch.testing.assert_close(row[L:2 * L], per[..., H].mean(0))
        torch.testing.assert_close(row.nansum(), full[idx].nansum(1).mean())
    own = agg["map"][heads_of["attn1"]]
    assert torch.isnan(own[1]) and not torch.isnan(own[2])  # the ablated layer itself
    fig = draw(res, "all", view="layers")
    assert fig.axes[0].get_images()[0].get_array().shape == tuple(agg["map"].shape)
    assert "colour" in fig._nbtools["caption"] and "view='full'" in fig._nbtools["caption"]
    with pytest.raises(InvalidInputError, match="choose from full, layers"):
        draw(res, "all", view="heads")


def test_command_line_map_show_figures(tmp_path, capsys):
    from conftest import word_tokenizer
    from reference import make_gpt2

    from nbtools.cli import main

    model = tmp_path / "model"
    make_gpt2().save_pretrained(model)
    word_tokenizer().save_pretrained(model)
    (tmp_path / "corpus.txt").write_text(" ".join(f"w{(i * 37) % 509 + 1}" for i in range(400)))
    out = tmp_path / "map.safetensors"
    args = ["sweep", "map", "--model", model, "--corpus", tmp_path / "corpus.txt", "--rows", 4,
            "--row-len", 12, "--batch-rows", 2, "--ablate", "1.*,mlp2", "--out", out,
            "--no-progress"]
    assert main([str(a) for a in args]) == 0
    res = load_result(out)
    assert res.rows == ["L1H0", "L1H1", "L1H2", "L1H3", "mlp2"] and res.complete
    assert main(["show", str(out), "--top", "3"]) == 0
    shown = capsys.readouterr().out
    assert "strongest repair pairs" in shown and "top 3 components" in shown
    assert main(["figures", str(out), "--out", str(tmp_path / "figs"), "--formats", "png"]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "repair_map_rn_all.png", "repair_map_rn_condensed.png"]
    assert main(["sweep", "map", "--model", str(model), "--ablate", "9.9", "--out",
                 str(tmp_path / "x.safetensors"), "--corpus", str(tmp_path / "corpus.txt")]) == 2
    assert "out of range" in capsys.readouterr().err
