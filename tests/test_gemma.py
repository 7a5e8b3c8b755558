"""Gemma 2/3 (sandwich norms, SPEC §7) through nbtools' surface: the SR_branch terms add up,
vanish for other families, show in the Explorer's waterfall and in head sweeps; the registered
Gemma-3-270M loads by name (tests/test_real_gemma.py checks it against the hook reference)."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, ragged_batch

import nbtools
from nbtools import AttnLayer, Head, MLPLayer

ATOL = 1e-5


@pytest.mark.parametrize("family", ["gemma3", "gemma2"])
@pytest.mark.parametrize("ablation", [Head(1, 2), AttnLayer(2), MLPLayer(0)])
def test_branch_norms_repair_and_the_terms_add_up(labs, family, ablation):
    """SR = SR_heads + SR_MLP + SR_branch + SR_LN exactly, SR_branch is not negligible, and
    its per-layer parts are the closed form Σ_j DE(ŵ'_j)·(ρ_j − 1)."""
    r = labs[family].measure(ragged_batch(), ablation, method="zero")
    torch.testing.assert_close(r.sr_heads + r.sr_mlp + r.sr_branch + r.sr_ln, r.self_repair,
                               atol=ATOL, rtol=0)
    assert r.sr_branch.abs().max() > 1e-3, "the branch norms should rescale"
    per_layer = r.sr_branch_attn.sum(-1) + r.sr_branch_mlp.sum(-1)
    torch.testing.assert_close(per_layer, r.sr_branch, atol=1e-12, rtol=0)


@pytest.mark.parametrize("family", [f for f in FAMILIES if not f.startswith("gemma")])
def test_no_branch_term_without_branch_norms(labs, family):
    r = labs[family].measure(ragged_batch(), Head(1, 2), method="zero")
    assert torch.equal(r.sr_branch, torch.zeros_like(r.sr_branch))


@pytest.mark.parametrize("family", ["gemma3", "gpt2"])
def test_the_explorer_waterfall_shows_branch_norms_only_where_there_are_some(labs, family):
    from nbtools.widgets import Explorer

    ex = Explorer(labs[family], prompt="w5 w9 w2 w8 w3 w1 w7 w4", ablate="2.1",
                  static_fallback=False)
    try:
        ex.wait()
        steps = {s["key"]: s["value"] for s in ex.view["waterfall"]["steps"]}
        m = ex.measurement
    finally:
        ex.close()
    assert ("sr_branch" in steps) == (family == "gemma3")
    parts = sum(v for k, v in steps.items() if k != "delta_logit")
    assert parts == pytest.approx(steps["delta_logit"], abs=1e-9)
    if family == "gemma3":
        assert steps["sr_branch"] == pytest.approx(float(m.sr_branch[0]), abs=1e-12)


def test_a_head_sweep_summarises_sr_branch_on_gemma(labs):
    from nbtools.sweeps import sweep_heads

    rows = torch.randint(1, 500, (4, 8), generator=torch.Generator().manual_seed(0))
    res = sweep_heads(labs["gemma3"], rows, heads="1.*", batch_rows=2, progress=False)
    assert "sr_branch" in res.quantities
    parts = sum(res.stat(q, "all") for q in ("sr_heads", "sr_mlp", "sr_branch", "sr_ln"))
    torch.testing.assert_close(parts[1], res.stat("self_repair", "all")[1], atol=1e-9, rtol=0)
    plain = sweep_heads(labs["gpt2"], rows, heads="1.*", batch_rows=2, progress=False)
    assert "sr_branch" not in plain.quantities


# --- the real model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma():
    from nbtools.models.registry import cached

    if not cached("gemma3-270m"):
        pytest.skip("Gemma-3-270M is not in the cache (nbtools fetch gemma3-270m)")
    return nbtools.load("gemma3-270m")


PROMPT = "The Eiffel Tower is located in the city of"


def test_real_gemma_knows_the_fact(gemma):
    m = gemma.measure_clean(PROMPT, target=" Paris", logprobs=True, top_k=3)
    assert gemma.tokenizer.decode([int(m.topk_ids_clean[0, 0])]) == " Paris"
    assert 0.6 < float(m.logprob_clean[0].exp()) < 0.9  # 0.76 for the Q4_K_M weights
