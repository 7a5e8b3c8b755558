"""SPEC identities (T1 completeness, T2 closed form, T3 exact zeros) on every family, with
SPEC §7's branch-norm term on the sandwich-norm families (Gemma 2/3)."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, ragged_batch

from nbtools import AttnLayer, Head, MLPLayer, Neurons

ATOL = 1e-4
EVEN = (12, 12, 12)  # resample "shift" needs sources as long as the rows they replace


def clean_sum(r):
    return (r.head_de_clean.sum((-1, -2)) + r.attn_bias_de.sum(-1) + r.mlp_de_clean.sum(-1)
            + r.embed_de.sum(-1) + r.unembed_bias)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fold", [True, False])
def test_completeness(labs, family, fold):
    """T1: Σ_c DE_c + b̂_U[y] = ℓ̂(y) on the clean run."""
    r = labs[family].measure(ragged_batch(), Head(1, 0), fold_value_biases=fold, neurons=True)
    torch.testing.assert_close(clean_sum(r), r.logit_clean, atol=ATOL, rtol=0)
    # the MLP layer is the sum of its neurons plus its bias
    torch.testing.assert_close(r.neuron_de_clean.sum(-1) + r.mlp_bias_de, r.mlp_de_clean,
                               atol=ATOL, rtol=0)
    # an attention layer is the sum of its heads plus its constant
    torch.testing.assert_close(r.head_de_clean.sum(-1) + r.attn_bias_de, r.attn_de_clean,
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
@pytest.mark.parametrize("ablation", [Head(1, 2), AttnLayer(2), MLPLayer(0), Neurons(2, (5, 9))])
def test_decomposition_and_closed_form(labs, family, method, ablation):
    """T2: SR = SR_heads + SR_MLP + SR_branch + SR_LN and SR_LN equals (1 − s'/s)(ℓ̂_abl − b̂_U[x])
    (SR_LN is the residual, so its closed form also checks SR_branch's total)."""
    prompts = ragged_batch(lengths=EVEN) if method == "resample" else ragged_batch()
    r = labs[family].measure(prompts, ablation, method=method, sources="shift")
    torch.testing.assert_close(r.sr_heads + r.sr_mlp + r.sr_branch + r.sr_ln, r.self_repair,
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(r.sr_branch_attn.sum(-1) + r.sr_branch_mlp.sum(-1), r.sr_branch)
    torch.testing.assert_close(r.sr_ln, r.sr_ln_closed, atol=ATOL, rtol=0)
    torch.testing.assert_close(r.self_repair_prime, r.delta_logit + r.direct_effect)
    assert r.delta_logit.abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_exact_zeros(labs, family):
    """T3: upstream and same-layer heads have ΔDE = 0 exactly; last-layer heads repair by no head."""
    lab = labs[family]
    L = lab.n_layers
    r = lab.measure(ragged_batch(lengths=EVEN), Head(2, 1), method="resample", sources="shift")
    delta = r.head_delta_de
    assert (delta[:, :2] == 0).all(), "upstream heads changed"
    same_layer = torch.ones(lab.n_heads, dtype=torch.bool)
    same_layer[1] = False
    assert (delta[:, 2, same_layer] == 0).all(), "same-layer heads changed"
    assert (r.mlp_delta_de[:, :2] == 0).all(), "upstream MLPs changed"
    last = lab.measure(ragged_batch(lengths=EVEN), Head(L - 1, 0), method="resample",
                       sources="shift")
    assert (last.sr_heads == 0).all()
    if lab.adapter.parallel:
        assert (last.sr_mlp == 0).all()
    else:
        assert last.sr_mlp.abs().max() > 0


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama_gqa_vbias", "gemma2"])
def test_value_bias_conventions(labs, family):
    """Resample and mean ΔL, SR and its parts agree across conventions; DE and zero ablation do not."""
    lab = labs[family]
    for method in ("resample", "mean"):
        a, b = (lab.measure(ragged_batch(lengths=EVEN), Head(1, 1), method=method, sources="shift",
                            fold_value_biases=fold) for fold in (True, False))
        for name in ("delta_logit", "self_repair", "sr_heads", "sr_mlp", "sr_branch", "sr_ln"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=ATOL, rtol=0)
        assert (a.direct_effect - b.direct_effect).abs().max() > 1e-4
    za, zb = (lab.measure(ragged_batch(), Head(1, 1), method="zero", fold_value_biases=fold)
              for fold in (True, False))
    assert (za.delta_logit - zb.delta_logit).abs().max() > 1e-4
    assert za.direct_effect_ablated.abs().max() < 1e-6  # folded zero ablation removes the head


def test_hydra_compensation_identity(labs):
    """For one attention layer, CE = ΔL − ΔDE_layer + SR_LN-free part: CE = SR_heads + SR_MLP."""
    for family in ("gpt2", "neox", "gemma3"):
        r = labs[family].measure(ragged_batch(lengths=EVEN), AttnLayer(1), method="resample",
                                 sources="shift")
        torch.testing.assert_close(r.compensation, r.sr_heads + r.sr_mlp, atol=ATOL, rtol=0)
        torch.testing.assert_close(r.delta_ablate, -r.delta_logit)
        torch.testing.assert_close(r.delta_unembed, r.direct_effect)


@pytest.mark.parametrize("family", FAMILIES)
def test_scale_recomputed_leaves_no_norm_term(labs, family):
    """With each run's own scale the ablated DEs (plus, for branch norms, SR_branch: the
    frozen-scale branch writes rescaled to the real ones) sum to the ablated logit, so no LN
    residual remains beyond constants and upstream components, and ℓ̂_abl is unchanged."""
    lab = labs[family]
    frozen = lab.measure(ragged_batch(), Head(2, 0), method="mean")
    own = lab.measure(ragged_batch(), Head(2, 0), method="mean", scale="recomputed")
    torch.testing.assert_close(frozen.logit_ablated, own.logit_ablated)
    ablated_sum = (own.head_de_ablated.sum((-1, -2)) + own.mlp_de_ablated.sum(-1)
                   + (own.attn_de_ablated - own.head_de_ablated.sum(-1)).sum(-1)
                   + own.embed_de.sum(-1) * own.scale_clean / own.scale_ablated
                   + own.unembed_bias
                   + own.sr_branch)  # branch writes at their own scale (0 without branch norms)
    torch.testing.assert_close(ablated_sum, own.logit_ablated, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_branch_term(labs, family):
    """SR_branch is exactly 0 without branch norms. With them (SPEC §7), zero-ablating one
    head: no branch norm upstream of its layer rescales (exactly 0), its own layer's
    attention norm does, by more than a twentieth of the head's largest DE, and so do the
    norms downstream (its layer's MLP branch, the next attention branch)."""
    lab = labs[family]
    r = lab.measure(ragged_batch(), Head(2, 1), method="zero")
    if lab.adapter.paths["attn_branch"] is None:
        assert (r.sr_branch == 0).all() and (r.sr_branch_attn == 0).all()
        assert (r.sr_branch_mlp == 0).all()
        return
    assert (r.sr_branch_attn[:, :2] == 0).all() and (r.sr_branch_mlp[:, :2] == 0).all()
    own = r.sr_branch_attn[:, 2].abs()
    assert own.max() > 0.05 * r.direct_effect.abs().max(), "the ablated layer's norm did not move"
    assert (r.sr_branch_mlp[:, 2:].abs().max() > 0) and (r.sr_branch_attn[:, 3].abs().max() > 0)
