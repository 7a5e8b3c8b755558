"""The Lab keeps no copy of a big weight matrix: `lab.weights()` holds small constants, equal to
the full-copy formulas, and the session's log-probabilities equal the model's own."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import FAMILIES, make_lab


def _tensors(weights):
    for f in dataclasses.fields(weights):
        value = getattr(weights, f.name)
        if isinstance(value, torch.Tensor):
            yield f.name, value


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_hold_no_big_matrix(labs, family):
    """No field of `lab.weights()` is as big as half of W_U, nor a float64 layer of W_out."""
    lab = labs[family]
    lab.measure([[1, 2, 3, 4]], "L1H0", logprobs=True, neurons=True)
    s = lab.shape
    for name, t in _tensors(lab.weights()):
        assert t.numel() < s.d_model * s.d_vocab / 2, name
        assert t.dtype != torch.float64 or t.numel() < s.d_mlp * s.d_model, name


def _close(actual, expected, rtol):
    scale = expected.abs().max().clamp(min=1e-30)
    assert (actual - expected).abs().max() <= rtol * scale, (actual - expected).abs().max() / scale


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_constants_equal_the_full_copy_formulas(family, dtype):
    lab = make_lab(family)
    lab.hf_model.to(dtype)
    a, w = lab.adapter, lab.weights()
    final, unembed = a.module(a.paths["final_norm"]), a.module(a.paths["unembed"])
    _close(w.gamma, final.weight.double() + a.gamma_offset, 1e-12)  # Gemma: γ̃ = 1 + weight
    beta = getattr(final, "bias", None)
    _close(w.beta, torch.zeros_like(w.gamma) if beta is None else beta.double(), 1e-12)
    _close(w.W_U_mean, unembed.weight.double().mean(0), 1e-12)
    layers = range(lab.n_layers)

    def linear(path, i):
        mod = a.module(path, i)
        W = mod.weight.double()
        b = torch.zeros(W.shape[1 if a.conv1d else 0], dtype=torch.float64) \
            if mod.bias is None else mod.bias.double()
        return (W if a.conv1d else W.T), b  # [in, out], [out]

    _close(w.b_O, torch.stack([linear(a.paths["attn_out"], i)[1] for i in layers]), 1e-12)
    _close(w.b_out, torch.stack([linear(a.paths["down"], i)[1] for i in layers]), 1e-12)
    if w.c_V is None:
        assert a.value() is None and not w.c_V_W_O.any()
        return
    W_O = [linear(a.paths["attn_out"], i)[0] for i in layers]
    expected = torch.stack([c.reshape(-1) @ W for c, W in zip(w.c_V, W_O, strict=True)])
    _close(w.c_V_W_O, expected, 1e-12)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_and_top_k_are_the_models_own(family, dtype):
    """The session forms full-vocabulary logits at the sites only; they are the model's."""
    lab = make_lab(family)
    lab.hf_model.to(dtype)
    ids = torch.tensor([[5, 9, 2, 8, 3, 1, 7]])
    m = lab.measure_clean(ids, measure_at="all", target="next", top_k=4)
    with torch.no_grad():
        logprobs = lab.hf_model(ids).logits[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    # bf16: the model rounds its logits to bf16 (8 bits), the session keeps them in fp32
    atol, rtol = (1e-5, 0) if dtype == torch.float32 else (1e-2, 1e-2)
    expected = logprobs.gather(-1, targets[:, None])[:, 0].double()
    torch.testing.assert_close(m.logprob_clean, expected, atol=atol, rtol=rtol)
    top = logprobs.exp().topk(4, dim=-1)
    torch.testing.assert_close(m.topk_probs_clean, top.values.double(), atol=atol, rtol=rtol)
