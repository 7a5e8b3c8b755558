"""The per-head value constant c_h = (β₁·W_V + b_V)[h] that the paper convention folds.

The reference measures c_h by running the model with every pre-attention norm fed zeros;
the engine computes it from the weights in the adapters. Qwen2 (value biases, RMSNorm, GQA)
is checked here against the reference in both conventions, every method.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from conftest import FAMILIES, make_lab, ragged_batch, word_tokenizer
from reference import make_qwen2, value_constants
from test_against_reference import assert_matches, run_both

import nbtools


@pytest.fixture(scope="module")
def qwen2():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nbtools.load(make_qwen2(), tokenizer=word_tokenizer(), name="qwen2")


def _sources_and_reference(prompts):
    gen = torch.Generator().manual_seed(2)
    width = max(map(len, prompts))
    row_sources = [torch.randint(1, 512, (width,), generator=gen).tolist() for _ in prompts]
    return row_sources, ragged_batch(seed=7, lengths=(10, 6))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_adapter_constant_equals_the_measured_one(labs, family):
    lab = labs[family]
    measured = torch.stack(value_constants(lab.hf_model)).double()
    mine = lab.weights().c_V
    if family in ("llama", "gemma3"):  # no value bias, no norm bias: no constant at all
        assert mine is None and measured.abs().max() == 0
        return
    torch.testing.assert_close(mine, measured, atol=1e-5, rtol=0)


def test_qwen2_constant_is_its_value_bias(qwen2):
    """RMSNorm has no β₁, so c_h is the value bias of the KV head serving query head h."""
    s = qwen2.shape
    bias = qwen2.hf_model.model.layers[1].self_attn.v_proj.bias.detach().double()
    per_kv = bias.reshape(s.n_kv_heads, s.d_head)
    served_by = torch.arange(s.n_heads) // (s.n_heads // s.n_kv_heads)
    assert torch.equal(qwen2.weights().c_V[1], per_kv[served_by])
    measured = torch.stack(value_constants(qwen2.hf_model)).double()
    torch.testing.assert_close(qwen2.weights().c_V, measured, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
@pytest.mark.parametrize("ablation,positions", [("head", "all"), ("attn", "final"),
                                                ("set", [1, 4])])
@pytest.mark.parametrize("fold", [True, False])
def test_qwen2_matches_reference(qwen2, method, ablation, positions, fold):
    prompts = ragged_batch(seed=1)
    row_sources, reference_prompts = _sources_and_reference(prompts)
    result, ref = run_both(qwen2, prompts, ablation, method, positions, fold=fold,
                           row_sources=row_sources, reference_prompts=reference_prompts)
    assert_matches(result, ref)
    assert result.delta_logit.abs().max() > 0


def _value_bias_only(lab) -> torch.Tensor:
    """The old, wrong constant: the value bias alone, without β₁·W_V."""
    s = lab.shape
    if lab.adapter.family == "gpt2":
        biases = [b.attn.c_attn.bias.detach()[2 * s.d_model:] for b in lab.hf_model.transformer.h]
        return torch.stack(biases).reshape(s.n_layers, s.n_heads, s.d_head)
    biases = [b.attention.query_key_value.bias.detach().reshape(s.n_heads, 3, s.d_head)[:, 2]
              for b in lab.hf_model.gpt_neox.layers]
    return torch.stack(biases)


@pytest.mark.parametrize("family", ["gpt2", "neox"])
def test_value_bias_alone_is_not_the_constant(labs, family):
    """With a nonzero LN1 bias the constant is not b_V: the full one matches the reference in
    the paper convention (zero ablation included), b_V alone does not."""
    prompts = ragged_batch(seed=2)
    right, ref = run_both(labs[family], prompts, "head", "zero", "all", fold=True)
    assert_matches(right, ref)
    wrong_lab = make_lab(family)
    old = _value_bias_only(wrong_lab)
    assert (old.double() - wrong_lab.weights().c_V).abs().max() > 0.05
    # the engine with b_V alone as the constant (and Σ_h c_h W_O[h] recomputed from it)
    a = wrong_lab.adapter
    W_O = [a.module(a.paths["attn_out"], i).weight.detach().double() for i in range(a.shape.n_layers)]
    flat = old.double().reshape(a.shape.n_layers, -1)
    c_V_W_O = torch.stack([c @ W if a.conv1d else W @ c for c, W in zip(flat, W_O, strict=True)])
    wrong_lab._weights = dataclasses.replace(wrong_lab.weights(), c_V=old.double(),
                                             c_V_W_O=c_V_W_O)
    wrong, _ = run_both(wrong_lab, prompts, "head", "zero", "all", fold=True)
    for name in ("head_de_clean", "direct_effect", "delta_logit", "self_repair"):
        gap = (getattr(wrong, name) - ref[name]).abs().max()
        assert gap > 1e-3, (name, float(gap))
