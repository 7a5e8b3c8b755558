"""The Lab's two verbs its callers used to fake: the clean run alone, and a logit difference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FAMILIES, make_lab, padded, ragged_batch
from reference import reference_measure
from test_against_reference import FIELDS

from nbtools import Head, InvalidInputError, MLPLayer

CLEAN_FIELDS = ["logit_clean", "scale_clean", "head_de_clean", "attn_de_clean", "mlp_de_clean",
                "attn_bias_de", "mlp_bias_de", "embed_de", "unembed_bias", "neuron_de_clean",
                "logprob_clean", "topk_ids_clean", "topk_probs_clean"]
LINEAR = [f for f in FIELDS if f not in ("scale_clean", "scale_ablated")]


@pytest.mark.parametrize("family", FAMILIES)
def test_measure_clean_is_the_clean_half_of_any_measurement(labs, family):
    lab = labs[family]
    prompts = ragged_batch(seed=5)
    clean = lab.measure_clean(prompts, target="top", neurons=True, top_k=4)
    ablated = lab.measure(prompts, Head(1, 2), target="top", neurons=True, logprobs=True,
                          top_k=4, method="zero")
    assert clean.components == () and clean.label == "clean run"
    for name in CLEAN_FIELDS:
        torch.testing.assert_close(getattr(clean, name), getattr(ablated, name), rtol=0,
                                   atol=1e-12, msg=name)
    # nothing ablated: every ablated field is its clean one, nothing changed
    pairs = [("logit_ablated", "logit_clean"), ("head_de_ablated", "head_de_clean"),
             ("mlp_de_ablated", "mlp_de_clean"), ("scale_ablated", "scale_clean"),
             ("logprob_ablated", "logprob_clean"), ("topk_ids_ablated", "topk_ids_clean")]
    for a, c in pairs:
        assert torch.equal(getattr(clean, a), getattr(clean, c)), a
    for name in ("delta_logit", "self_repair", "sr_heads", "sr_mlp", "sr_ln", "direct_effect"):
        assert torch.equal(getattr(clean, name), torch.zeros_like(getattr(clean, name))), name
    # SPEC T1 on the clean run: the components add up to the centred logit
    total = (clean.head_de_clean.sum((-1, -2)) + clean.mlp_de_clean.sum(-1)
             + clean.attn_bias_de.sum(-1) + clean.embed_de.sum(-1) + clean.unembed_bias)
    torch.testing.assert_close(total, clean.logit_clean, atol=1e-4, rtol=0)


def _ref(lab, prompts, m, token):
    ids, mask = padded(prompts)
    targets = torch.full_like(ids, -1)
    targets[m.rows, m.positions] = token
    return reference_measure(lab.hf_model, ids, mask, targets, [("head", 2, 1)], "zero",
                             positions="all")


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama_gqa_vbias"])
def test_logit_difference_target_is_one_projection_onto_u_a_minus_u_b(labs, family):
    lab = labs[family]
    prompts = ragged_batch(seed=6)
    opts = dict(method="zero", measure_at=[3, 6], neurons=True)
    a, b = 17, 301
    diff = lab.measure(prompts, Head(2, 1), target=("w17", np.int64(b)), logprobs=True, **opts)
    ma = lab.measure(prompts, Head(2, 1), target=a, logprobs=True, **opts)
    mb = lab.measure(prompts, Head(2, 1), target=b, **opts)
    assert diff.target_ids.tolist() == [a] * 6 and diff.minus_ids.tolist() == [b] * 6
    for name in LINEAR:
        torch.testing.assert_close(getattr(diff, name), getattr(ma, name) - getattr(mb, name),
                                   rtol=0, atol=1e-9, msg=name)
    for name in ("scale_clean", "scale_ablated", "logprob_clean", "logprob_ablated"):
        assert torch.equal(getattr(diff, name), getattr(ma, name)), name
    # the independent reference: the difference of the two targets' reference measurements
    ref_a, ref_b = _ref(lab, prompts, diff, a), _ref(lab, prompts, diff, b)
    for name in LINEAR:
        torch.testing.assert_close(getattr(diff, name), (ref_a[name] - ref_b[name]).to(
            torch.float64), atol=1e-5, rtol=0, msg=name)


def test_logit_difference_runs_half_the_traces():
    lab = make_lab("gpt2")
    calls = []
    lab.hf_model.register_forward_pre_hook(lambda *_: calls.append(1))
    prompt = "w5 w9 w2 w8 w3 w1"
    lab.measure(prompt, [MLPLayer(3)], target=("w1", "w2"), suffix_reuse=False)
    with_pair = len(calls)
    lab.measure(prompt, [MLPLayer(3)], target="w1", suffix_reuse=False)
    lab.measure(prompt, [MLPLayer(3)], target="w2", suffix_reuse=False)
    assert with_pair == 2 and len(calls) == with_pair + 2  # cached clean run: one each


@pytest.mark.parametrize("target,message", [
    (("w1", "w1"), "the same token"),
    (("w1", "w2", "w3"), "a pair of single tokens"),
    ((("w1",), "w2"), "a pair of single tokens"),
    (("next", "w2"), "not 'next' / 'top'"),
    (("w1", "w2 w3"), "is 2 tokens"),
])
def test_bad_logit_difference_fails_before_any_forward_pass(target, message):
    lab = make_lab("gpt2")
    calls = []
    lab.hf_model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(InvalidInputError, match=message):
        lab.measure("w1 w2 w3 w4", Head(1, 1), target=target)
    assert calls == []
