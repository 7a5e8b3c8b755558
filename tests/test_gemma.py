"""Gemma 2/3 (sandwich norms, SPEC §7): the branch-norm term SR_branch on random configs and
on the real Gemma-3-270M (when it is in the cache), against the plain-PyTorch reference."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, next_token_targets, padded, ragged_batch
from reference import reference_measure

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


def test_gemma2_softcap_decomposes_the_raw_logit(labs):
    """DEs and SR are of the raw logit (exact there); probabilities are the capped model's."""
    lab = labs["gemma2"]
    assert lab.adapter.final_softcap == 30.0
    prompts = ragged_batch()
    ids, mask = padded(prompts)
    m = lab.measure(prompts, Head(2, 1), method="zero", logprobs=True)
    with torch.no_grad():
        capped = lab.hf_model(input_ids=ids, attention_mask=mask).logits.double()
    targets = next_token_targets(ids, mask)
    rows, pos = m.rows, m.positions
    want = capped[rows, pos].log_softmax(-1).gather(-1, targets[rows, pos][:, None])[:, 0]
    torch.testing.assert_close(m.logprob_clean, want, atol=1e-5, rtol=0)
    raw = 30.0 * torch.atanh(capped[rows, pos] / 30.0)
    centred = raw.gather(-1, targets[rows, pos][:, None])[:, 0] - raw.mean(-1)
    torch.testing.assert_close(m.logit_clean, centred, atol=1e-3, rtol=0)


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


@pytest.mark.slow
@pytest.mark.parametrize("ablation,theirs", [(Head(8, 1), ("head", 8, 1)),
                                             (MLPLayer(12), ("mlp", 12))])
def test_real_gemma_matches_the_reference(gemma, ablation, theirs):
    ids = gemma.tokenize(PROMPT).input_ids
    mask = torch.ones_like(ids)
    m = gemma.measure(PROMPT, ablation, method="zero", target="next")
    targets = torch.full_like(ids, -1)
    targets[m.rows, m.positions] = m.target_ids
    ref = reference_measure(gemma.hf_model, ids, mask, targets, [theirs], "zero")
    for name in ("logit_clean", "logit_ablated", "head_de_clean", "head_de_ablated",
                 "mlp_de_ablated", "direct_effect", "self_repair", "sr_heads", "sr_mlp",
                 "sr_branch", "sr_ln", "sr_ln_closed"):
        mine, want = getattr(m, name), ref[name].to(torch.float64)
        gap = float((mine - want).abs().max())
        assert gap < 2e-3 * max(1.0, float(want.abs().max())), (name, gap)
    torch.testing.assert_close(m.sr_heads + m.sr_mlp + m.sr_branch + m.sr_ln, m.self_repair,
                               atol=1e-6, rtol=0)
    assert m.sr_branch.abs().max() > 1e-3
