"""The Lab keeps no copy of a big weight matrix, and its algebra equals the full-copy formulas."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import FAMILIES, make_lab

from nbtools import effects
from nbtools.effects import Weights, full_logits, project_targets


def _tensors(weights: Weights):
    for f in dataclasses.fields(weights):
        value = getattr(weights, f.name)
        for t in value if isinstance(value, list | tuple) else [value]:
            if isinstance(t, torch.Tensor):
                yield f.name, t


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_hold_no_big_matrix(labs, family):
    """No field of `lab.weights()` is as big as half of W_U, nor a float64 layer of W_out."""
    lab = labs[family]
    lab.measure([[1, 2, 3, 4]], "L1H0", logprobs=True, neurons=True)
    s = lab.shape
    for centred in (True, False):
        for name, t in _tensors(lab.weights(centred)):
            assert t.numel() < s.d_model * s.d_vocab / 2, name
            assert t.dtype != torch.float64 or t.numel() < s.d_mlp * s.d_model, name


def _full_copies(adapter, centred: bool) -> dict:
    """The float64 full-copy formulas: Ŵ_U = diag(γ) W_U and b̂ = β·W_U + b_U (centred over
    the vocabulary), W_O [L, H, E, D], W_out [L, M, D]."""
    gamma, beta = (x.double() for x in adapter.gamma_beta())
    W_U = adapter.W_U().double()
    W_hat, b_hat = gamma[:, None] * W_U, beta @ W_U + adapter.b_U().double()
    if centred:
        W_hat, b_hat = W_hat - W_hat.mean(1, keepdim=True), b_hat - b_hat.mean()
    layers = range(adapter.shape.n_layers)
    return dict(W_U=W_hat, b_U=b_hat, W_O=torch.stack([adapter.W_O(i).double() for i in layers]),
                W_out=torch.stack([adapter.W_out(i).double() for i in layers]))


def _close(actual, expected, rtol):
    scale = expected.abs().max()
    assert (actual - expected).abs().max() <= rtol * scale, (actual - expected).abs().max() / scale


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("centred", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [2 ** 21, 100 * 64])
def test_projections_and_logits_equal_the_full_copy_formulas(family, centred, dtype, chunk,
                                                             monkeypatch):
    monkeypatch.setattr(effects, "CHUNK_ELEMENTS", chunk)
    lab = make_lab(family)
    lab.hf_model.to(dtype)
    weights = Weights.from_adapter(lab.adapter, centred=centred)
    ref = _full_copies(lab.adapter, centred)
    targets = torch.tensor([0, 5, 511, 5, 100])
    for fold in (True, False):
        proj = project_targets(weights, targets, fold, neurons=True)
        u = ref["W_U"][:, targets].T
        if weights.norm == "layernorm":
            u = u - u.mean(-1, keepdim=True)
        attn_bias = weights.b_O
        if fold and weights.c_V is not None:
            attn_bias = attn_bias + torch.einsum("lhe,lhed->ld", weights.c_V, ref["W_O"])
        _close(proj.u, u, 1e-12)
        _close(proj.head, torch.einsum("lhed,nd->nlhe", ref["W_O"], u), 1e-12)
        _close(proj.neuron, torch.einsum("lmd,nd->nlm", ref["W_out"], u), 1e-12)
        _close(proj.attn_bias, u @ attn_bias.T, 1e-12)
        _close(proj.mlp_bias, u @ weights.b_out.T, 1e-12)
        _close(proj.unembed_bias, ref["b_U"][targets], 1e-12)

    resid = torch.randn(3, 2, lab.shape.d_model, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0))
    r = resid - resid.mean(-1, keepdim=True) if weights.norm == "layernorm" else resid
    expected = r / effects.norm_scale(resid, weights.norm, weights.eps)[..., None] @ ref["W_U"]
    expected = expected + ref["b_U"]
    _close(full_logits(resid, weights), expected, 1e-12)
    logits32 = full_logits(resid, weights, torch.float32)
    assert logits32.dtype == torch.float32
    _close(logits32.double(), expected, 1e-5)
