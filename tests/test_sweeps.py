"""Sweeps: equal to per-batch / per-prompt `measure`, streaming top-k, resume, determinism."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import make_lab, random_rows, word_prompts, word_tokenizer

from nbtools import AttnLayer, Head, InvalidInputError, MLPLayer
from nbtools.sweeps import (
    HeadSweepResult,
    LayerSweepResult,
    ResultFileError,
    corpus_rows,
    load_result,
    sweep_heads,
    sweep_layers,
)
from nbtools.sweeps.heads import QUANTITIES, RATIO_QUANTITIES
from nbtools.sweeps.layers import hydra_sources, source_index
from nbtools.sweeps.topk import merge_topk, top_count

HEAD_KW = dict(batch_rows=2, progress=False, per_token=["2.1", "3.0"], anti_erasure=["2.0"],
               n_top_neurons=8, top_frac=0.05)
SMALL_KW = dict(HEAD_KW, heads=["1.0"], per_token=["2.1"])  # 3 measure_many calls per batch


@pytest.fixture(scope="module")
def lab():
    return make_lab("gpt2")


@pytest.fixture(scope="module")
def rows():
    return random_rows(5, 12)


@pytest.fixture(scope="module")
def prompts():
    return word_prompts(11)


@pytest.fixture(scope="module")
def head_file(lab, rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("heads") / "heads.safetensors"
    res = sweep_heads(lab, rows, out=path, checkpoint_every=0, **HEAD_KW)
    return path, res


@pytest.fixture(scope="module")
def layer_file(lab, prompts, tmp_path_factory):
    path = tmp_path_factory.mktemp("layers") / "layers.safetensors"
    res = sweep_layers(lab, prompts, out=path, batch_prompts=6, n_sources=4, checkpoint_every=0,
                       progress=False)
    return path, res


# --- the streaming top-k buffer ------------------------------------------------------------
def test_merge_topk_equals_global_selection_with_ties():
    gen = torch.Generator().manual_seed(0)
    keys = torch.randint(0, 6, (3, 40), generator=gen).double()  # many ties
    ids = torch.arange(40).expand(3, 40)
    buf = None
    for start in range(0, 40, 7):
        part = {"key": keys[:, start:start + 7], "id": ids[:, start:start + 7]}
        buf = merge_topk(buf, part, 9, "key")
    order = torch.sort(keys, dim=1, descending=True, stable=True).indices[:, :9]
    assert torch.equal(buf["id"], order)
    assert top_count(6350, 0.02) == 127 and top_count(10, 0.02) == 1


# --- head sweep == measure ---------------------------------------------------------------
BATCHES = ((0, 2), (2, 5))  # 5 rows in batches of 2: the 1-row tail joins the batch before
CHECKED_HEADS = ((0, 0), (1, 2), (2, 3), (3, 0))


def _manual_head_stats(lab, rows, k):
    """Everything from plain `lab.measure` calls per head and batch (independent algebra)."""
    per_head = {}
    for layer, h in CHECKED_HEADS:
        if True:
            parts = []
            for start, end in BATCHES:
                m = lab.measure(rows[start:end], Head(layer, h), method="resample", sources="shift")
                vals = {q: getattr(m, q) for q in QUANTITIES if q != "scale_ratio"}
                vals["scale_ratio"] = m.scale_clean / m.scale_ablated
                vals["row"] = m.rows + start
                vals["position"] = m.positions
                parts.append(vals)
            cat = {q: torch.cat([p[q] for p in parts]) for q in parts[0]}
            order = torch.sort(cat["direct_effect"], descending=True, stable=True).indices[:k]
            per_head[(layer, h)] = (cat, {q: v[order] for q, v in cat.items()})
    return per_head


def test_head_sweep_equals_measure(lab, rows, head_file):
    _, res = head_file
    k = res.settings["top_k"]
    assert k == int(0.05 * 5 * 11)
    manual = _manual_head_stats(lab, rows, k)
    for (layer, h), (all_sites, top) in manual.items():
        for q in QUANTITIES:
            for sel, vals in (("all", all_sites), ("condensed", top)):
                got = res.stat(q, sel)[layer, h]
                torch.testing.assert_close(got, vals[q].mean().double(), atol=1e-9, rtol=0)
        torch.testing.assert_close(res.stat("direct_effect", "condensed", "median")[layer, h],
                                   top["direct_effect"].median().double(), atol=1e-9, rtol=0)
        de = all_sites["direct_effect"]
        for q in RATIO_QUANTITIES:
            ratio = all_sites[q] / de
            torch.testing.assert_close(res.stat(q, "all", "mean_clipped_ratio")[layer, h],
                                       ratio.clamp(0, 1).mean().double(), atol=1e-9, rtol=0)
            torch.testing.assert_close(res.stat(q, "all", "ratio_of_means")[layer, h],
                                       (all_sites[q].mean() / de.mean()).double(), atol=1e-9,
                                       rtol=0)
            torch.testing.assert_close(res.stat(q, "condensed", "mean_ratio")[layer, h],
                                       (top[q] / top["direct_effect"]).mean().double(),
                                       atol=1e-9, rtol=0)
    # per-token records are every site of the head, in corpus order
    cat, _ = manual[(3, 0)]
    tok = res.per_token("3.0")
    assert torch.equal(tok["row"], cat["row"])
    for q in QUANTITIES:
        torch.testing.assert_close(tok[q], cat[q].double(), atol=1e-9, rtol=0)
    cond = res.condensed("L1H2")
    assert cond["direct_effect"].shape == (k,)
    assert torch.all(cond["direct_effect"][:-1] >= cond["direct_effect"][1:])


def test_anti_erasure_equals_measure(lab, rows, head_file):
    _, res = head_file
    layer, n_top, k = (res.settings[n] for n in ("anti_erasure_layer", "n_top_neurons", "top_k"))
    assert layer == lab.n_layers - 1
    ms = [lab.measure(rows[s:e], "2.0", method="resample", sources="shift", neurons=True)
          for s, e in BATCHES]
    delta = torch.cat([m.neuron_delta_de[:, layer] for m in ms])
    clean = torch.cat([m.neuron_de_clean[:, layer] for m in ms])
    de = torch.cat([m.direct_effect for m in ms])
    sr_mlp = torch.cat([m.sr_mlp for m in ms])
    top = delta.sort(-1, descending=True).values[:, :n_top]
    pos = de > 0
    ae = res.anti_erasure("2.0", "all")
    for j, x in enumerate(res.settings["thresholds"]):
        expect = ((top > x / 100 * de[:, None]) & pos[:, None]).sum(0).double() / pos.sum()
        torch.testing.assert_close(ae["curves"][:, j], expect.double(), atol=1e-12, rtol=0)
    # a ratio of means over a small SR_MLP: relative tolerance (suffix reuse and batch shapes
    # move the float32 forward passes by ~1e-7)
    assert ae["top5_share_ratio_of_means"] == pytest.approx(
        float(top[:, :5].sum() / sr_mlp.sum()), rel=1e-5)
    assert float(ae["recurrence"].sum()) == pytest.approx(min(10, n_top))  # top-10 per site
    torch.testing.assert_close(ae["neuron_de_clean"], clean.mean(0).double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(ae["neuron_de_ablated"], (clean + delta).mean(0).double(),
                               atol=1e-6, rtol=0)
    # condensed: the head's top-k sites by clean DE, with their top neurons
    cond = res.anti_erasure("2.0", "condensed")
    order = torch.sort(de, descending=True, stable=True).indices[:k]
    torch.testing.assert_close(cond["top_delta"], top[order].double(), atol=1e-6, rtol=0)
    all_rows = torch.cat([m.rows + s for m, (s, _) in zip(ms, BATCHES, strict=True)])
    assert torch.equal(res.condensed("2.0")["row"], all_rows[order])


def test_head_sweep_file_roundtrip(head_file):
    path, res = head_file
    back = load_result(path)
    assert isinstance(back, HeadSweepResult) and back.complete
    assert back.settings == res.settings
    for key, value in res.stats.items():
        torch.testing.assert_close(back.stats[key], value, equal_nan=True)
    s = back.settings
    assert s["method"] == "resample" and s["seed"] == 0 and s["model"] == "gpt2"
    assert "top 5.00%" in s["selection"] and set(s["statistics"]) >= {"ratio_of_means",
                                                                       "mean_clipped_ratio"}
    assert {"torch", "nnsight", "transformers"} <= set(s["versions"])
    assert back.table()[0]["layer"] == 0 and "self_repair" in back.table()[0]


def test_head_sweep_resumes_after_random_kills(lab, rows, tmp_path, monkeypatch):
    path = tmp_path / "reference.safetensors"
    sweep_heads(lab, rows, out=path, **SMALL_KW)
    reference = path.read_bytes()
    out = tmp_path / "resumed.safetensors"
    real = type(lab).measure_many
    rng = random.Random(0)
    calls = {"n": 0, "kill_at": rng.randint(1, 6)}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(lab), "measure_many", flaky)
    kills = 0
    while True:
        calls.update(n=0, kill_at=rng.randint(1, 6))
        try:
            sweep_heads(lab, rows, out=out, checkpoint_every=0, **SMALL_KW)
            break
        except KeyboardInterrupt:
            kills += 1
            assert not load_result(out).complete
    assert kills >= 2
    assert out.read_bytes() == reference
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_head_sweep_is_deterministic_and_checks_settings(lab, rows, tmp_path):
    first, out = tmp_path / "first.safetensors", tmp_path / "again.safetensors"
    sweep_heads(lab, rows, out=first, **SMALL_KW)
    sweep_heads(lab, rows, out=out, **SMALL_KW)
    assert out.read_bytes() == first.read_bytes()
    # a finished file is returned as is, without recomputation
    again = sweep_heads(lab, rows, out=out, **SMALL_KW)
    assert again.complete and out.read_bytes() == first.read_bytes()
    with pytest.raises(ResultFileError, match="different settings.*top_frac"):
        sweep_heads(lab, rows, out=out, **{**SMALL_KW, "top_frac": 0.1})
    sweep_heads(lab, rows[:2], out=out, overwrite=True, **{**SMALL_KW, "top_frac": 0.1})
    assert load_result(out).settings["top_frac"] == 0.1


def test_head_sweep_methods_and_validation(lab, rows):
    zero = sweep_heads(lab, rows[:2], method="zero", heads=["0.1", "3.*"], progress=False)
    mean = sweep_heads(lab, rows[:3], method="mean", heads="1.1", mean_rows=2, progress=False)
    assert torch.isfinite(zero.stat("self_repair")[3]).all()
    assert torch.isnan(zero.stat("self_repair")[1]).all()
    assert "mean over the 24 tokens" in mean.settings["ablation"]
    with pytest.raises(InvalidInputError, match="method"):
        sweep_heads(lab, rows, method="nope")
    with pytest.raises(InvalidInputError, match="out of range"):
        sweep_heads(lab, rows, heads=["9.9"])
    with pytest.raises(InvalidInputError, match="at least two rows"):
        sweep_heads(lab, rows[:1])


@pytest.mark.parametrize("family", ["neox", "llama_gqa_vbias"])
def test_head_sweep_other_families(family, rows):
    other = make_lab(family)
    res = sweep_heads(other, rows[:2], heads="3.*", progress=False)
    # last-layer heads: nothing downstream but the final norm (T3)
    assert torch.all(res.stat("sr_heads", "all")[3] == 0)
    if family == "neox":
        assert torch.all(res.stat("sr_mlp", "all")[3] == 0)


def test_corpus_rows_from_texts_and_files(tmp_path):
    tok = word_tokenizer()
    texts = [" ".join(f"w{i}" for i in range(1, 30)), " ".join(f"w{i}" for i in range(40, 55))]
    rows = corpus_rows(tok, texts, row_len=8)
    assert rows.shape == (5, 8) and rows[0, 0] == 1 and rows[3, 5] == 40
    file = tmp_path / "c.txt"
    file.write_text(texts[0])
    assert torch.equal(corpus_rows(tok, str(file), row_len=8, max_rows=2), rows[:2])
    with pytest.raises(InvalidInputError, match="fewer than"):
        corpus_rows(tok, ["w1 w2"], row_len=8)
    assert corpus_rows(tok, "w7 " * 5000, row_len=8).shape == (625, 8)  # a long text, no path


def test_corpus_rows_from_shared_corpora():
    from nbtools.corpus import DataNotFoundError, default_data_dir

    try:
        folder = default_data_dir() / "tokenizer-gpt2"
    except DataNotFoundError:
        pytest.skip("no shared data folder")
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(str(folder), local_files_only=True)
    rows = corpus_rows(tok, "nltk:inaugural", row_len=128, max_rows=3)
    assert rows.shape == (3, 128)
    assert "Fellow" in tok.decode(rows[0, :8])


# --- layer sweep == measure ---------------------------------------------------------------
def test_layer_sweep_equals_per_prompt_measure(lab, prompts, layer_file):
    _, res = layer_file
    index = source_index(len(prompts), 4, 0)
    assert torch.equal(res.state["sources"], index)
    for p in (0, 7, 10):
        sources = [[prompts[j] for j in index[p]]]
        for a, comp in ((1, AttnLayer(1)), (6, MLPLayer(2))):
            assert res.ablations[a] == str(comp)
            for scale in ("clean", "recomputed"):
                m = lab.measure([prompts[p]], comp, method="resample", sources=sources,
                                positions="final", target="top", scale=scale)
                get = lambda name, s=scale, p=p, a=a: res.get(name, s)[p, a]  # noqa: E731
                # a batch of prompts vs one prompt: float32 forwards agree to ~1e-6
                close = dict(atol=2e-5, rtol=1e-5)
                torch.testing.assert_close(get("compensation"), m.compensation[0].double(), **close)
                torch.testing.assert_close(get("attn_de_ablated"), m.attn_de_ablated[0].double(),
                                           **close)
                torch.testing.assert_close(res.get("delta_ablate")[p, a],
                                           m.delta_ablate[0].double(), **close)
                torch.testing.assert_close(res.get("delta_unembed")[p, a],
                                           m.delta_unembed[0].double(), **close)
        assert res.state["target"][p] == m.target_ids[0]


def test_layer_sweep_summaries(lab, prompts, layer_file):
    path, res = layer_file
    back = load_result(path)
    assert isinstance(back, LayerSweepResult) and back.complete
    assert back.target_tokens[0].startswith("w")
    for scale in ("clean", "recomputed"):
        attn, mlp = back.compensation_split(scale, "attn")
        torch.testing.assert_close(attn + mlp, back.get("compensation", scale, kind="attn"))
        attn, mlp = back.compensation_split(scale, "mlp")
        torch.testing.assert_close(attn + mlp, back.get("compensation", scale, kind="mlp"))
        reg = back.regression("attn", scale)
        x = back.get("delta_unembed", kind="attn")[:, 2]
        y = back.get("compensation", scale, kind="attn")[:, 2]
        slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
        assert float(reg["slope"][2]) == pytest.approx(float(slope), rel=1e-9)
    # examples: every source of prompt 0 separately; their mean is the averaged effect
    ex = back.state["examples/clean/attn_de_ablated"][0]             # [K, A, L]
    torch.testing.assert_close(ex.mean(0), back.get("attn_de_ablated", "clean")[0], atol=2e-5,
                               rtol=1e-5)
    m = hydra_sources(lab, prompts[0], AttnLayer(1), [prompts[j] for j in back.state["sources"][0]])
    torch.testing.assert_close(m.attn_de_ablated.double(), ex[:, 1], atol=2e-5, rtol=1e-5)


def test_layer_sweep_resume_and_determinism(lab, prompts, layer_file, tmp_path, monkeypatch):
    path, _ = layer_file
    out = tmp_path / "l.safetensors"
    real = type(lab).measure_scales
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] in (2, 4):  # the 2nd batch, then the 1st example (one call each)
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(lab), "measure_scales", flaky)
    for expected in (6, 11):
        with pytest.raises(KeyboardInterrupt):
            sweep_layers(lab, prompts, out=out, batch_prompts=6, n_sources=4, checkpoint_every=0,
                         progress=False)
        partial = load_result(out)
        assert not partial.complete and partial.progress["prompts_done"] == expected
    sweep_layers(lab, prompts, out=out, batch_prompts=6, n_sources=4, progress=False)
    assert out.read_bytes() == path.read_bytes()
    other = sweep_layers(lab, prompts, n_sources=4, seed=1, scales=["clean"], kinds=["attn"],
                         layers=[0, 2], progress=False, examples=0)
    assert not torch.equal(other.state["sources"], load_result(path).state["sources"])
    assert other.ablations == ["attn0", "attn2"] and other.layers_of("attn") == [0, 2]


def test_layer_sweep_validation(lab, prompts):
    with pytest.raises(InvalidInputError, match="needs at least 16 prompts"):
        sweep_layers(lab, prompts[:10])
    with pytest.raises(InvalidInputError, match="scales"):
        sweep_layers(lab, prompts, n_sources=4, scales=["nope"])
    with pytest.raises(InvalidInputError, match="layers"):
        sweep_layers(lab, prompts, n_sources=4, layers=[7])


@pytest.mark.parametrize("name", ["smollm2_heads", "smollm2_layers"])
def test_committed_result_files_load_and_save_back_byte_identical(name, tmp_path):
    """Files written before the sweep engine (docs/results/) still load, and saving what was
    loaded writes the very same bytes (the file format did not move)."""
    from pathlib import Path

    committed = Path(__file__).resolve().parents[1] / "docs" / "results" / f"{name}.safetensors"
    res = load_result(committed)
    assert res.complete and res.n_done == res.n_total > 0
    res.save(tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == committed.read_bytes()


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama_gqa_vbias"])
def test_t4_the_hydra_gap_splits_exactly(labs, family):
    """SPEC §4 T4: Δunembed − Δablate = DE^abl + CE + SR_LN per prompt, and the SR_LN part
    equals the source-averaged SR_LN of direct measurements with the sweep's sources."""
    lab = labs[family]
    prompts = word_prompts(7)
    res = sweep_layers(lab, prompts, n_sources=3, kinds=["attn"], scales=["clean"],
                       progress=False, examples=0)
    split = res.gap_split("attn")
    torch.testing.assert_close(split["gap"], split["de_ablated"] + split["compensation"]
                               + split["sr_ln"], atol=1e-12, rtol=0)
    sources = res.state["sources"]
    for p in (0, 4):
        each = lab.measure([prompts[p]] * 3, AttnLayer(2), method="resample",
                           sources=[[prompts[j]] for j in sources[p].tolist()],
                           positions="final", target="top")
        # (float32 runs of another batch: 1e-7 apart)
        assert float(split["sr_ln"][p, 2]) == pytest.approx(float(each.sr_ln.mean()), abs=1e-5)
        assert float(split["de_ablated"][p, 2]) == pytest.approx(
            float(each.direct_effect_ablated.mean()), abs=1e-5)
    table = res.gap_table("attn", B=200)
    assert [r["layer"] for r in table] == [f"attn{i}" for i in range(lab.n_layers)]
    mean, lo, hi = table[2]["sr_ln"]
    assert lo <= mean <= hi and table[2]["n"] == 7
