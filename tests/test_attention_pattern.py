"""`Lab.attention_pattern` against a plain transformers forward (eager attention,
output_attentions=True, no nnsight) on GPT-2, GPT-NeoX and Llama (GQA) random models."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_lab, ragged_batch

import nbtools.lab
from nbtools.errors import InvalidInputError
from nbtools.tracing import eager_attention

FAMILIES = ("gpt2", "neox", "llama_gqa_vbias", "gemma2", "gemma3")


@pytest.fixture(scope="module")
def labs():
    return {family: make_lab(family) for family in FAMILIES}


def reference_attentions(hf_model, ids: list[int]) -> tuple[torch.Tensor, ...]:
    """Per layer [n_heads, T, T], from an eager copy of the model (the lab's stays as is)."""
    model = copy.deepcopy(hf_model)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True, use_cache=False)
    return tuple(a[0].float() for a in out.attentions)


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_plain_forward(labs, family):
    lab = labs[family]
    ids = ragged_batch(seed=3, lengths=(9,))[0]
    ref = reference_attentions(lab.hf_model, ids)
    T = len(ids)
    for layer in (0, lab.n_layers // 2, lab.n_layers - 1):  # earlier layers skipped
        pattern = lab.attention_pattern(torch.tensor([ids]), layer)
        assert pattern.shape == (lab.n_heads, T, T)
        torch.testing.assert_close(pattern, ref[layer], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(lab.n_heads, T))
        above = torch.ones(T, T, dtype=torch.bool).triu(1)
        assert torch.all(pattern[:, above] == 0)  # causal
        head = lab.n_heads - 1
        one = lab.attention_pattern(torch.tensor([ids]), layer, head)
        assert one.shape == (T, T)
        torch.testing.assert_close(one, ref[layer][head], rtol=1e-5, atol=1e-6)
    if family == "llama_gqa_vbias":  # the GQA model: heads sharing a kv head still differ
        assert lab.shape.n_kv_heads < lab.n_heads
        assert not torch.allclose(pattern[0], pattern[1])


def test_ragged_batch_trims_each_prompt(labs):
    lab = labs["llama_gqa_vbias"]
    prompts = ragged_batch(seed=5, lengths=(7, 11, 4))
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p)
    patterns = lab.attention_pattern(ids[:1], 1)  # one prompt: one tensor
    assert torch.is_tensor(patterns)
    patterns = lab.attention_pattern([" ".join(f"w{t}" for t in p) for p in prompts], 1, 2)
    assert [tuple(p.shape) for p in patterns] == [(n, n) for n in map(len, prompts)]
    for pattern, ids_b in zip(patterns, prompts, strict=True):
        torch.testing.assert_close(pattern, reference_attentions(lab.hf_model, ids_b)[1][2],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_model_unchanged_afterwards(family):
    lab = make_lab(family)
    prompt = "w3 w8 w1 w9 w4 w2"
    before = lab.measure(prompt, "1.0", positions="final")
    impl = lab.hf_model.config._attn_implementation
    lab.clear_cache()
    lab.attention_pattern(prompt, 0)
    assert lab.hf_model.config._attn_implementation == impl
    lab.clear_cache()
    after = lab.measure(prompt, "1.0", positions="final")
    for name in ("delta_logit", "direct_effect", "self_repair", "sr_heads", "sr_mlp"):
        torch.testing.assert_close(getattr(after, name), getattr(before, name), rtol=0, atol=0)


def test_eager_switch_restored_on_error(labs):
    hf_model = labs["gpt2"].hf_model
    impl = hf_model.config._attn_implementation
    with pytest.raises(RuntimeError), eager_attention(hf_model):
        assert hf_model.config._attn_implementation == "eager"
        raise RuntimeError("inside the trace")
    assert hf_model.config._attn_implementation == impl


@pytest.mark.parametrize("layer, head, message", [
    (4, None, "layer must be an integer in 0..3"), (-1, None, "layer .* in 0..3"),
    ("1", None, "layer .* in 0..3"), (True, None, "layer .* in 0..3"),
    (0, 4, "head must be an integer in 0..3"), (0, -1, "head .* in 0..3"),
    (0, 1.0, "head .* in 0..3"),
])
def test_bad_input_before_any_forward(labs, monkeypatch, layer, head, message):
    lab = labs["gpt2"]
    assert (lab.n_layers, lab.n_heads) == (4, 4)

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran")

    monkeypatch.setattr(nbtools.lab, "attention_session", no_forward)
    with pytest.raises(InvalidInputError, match=message):
        lab.attention_pattern("w1 w2 w3", layer, head)


def test_explorer_shows_the_single_ablated_heads_pattern(labs):
    from nbtools.widgets import Explorer
    from nbtools.widgets.panels import attention_data

    lab = labs["gpt2"]
    prompt = "w5 w17 w301 w44 w9 w120"
    ex = Explorer(lab, prompt=prompt, static_fallback=False)
    try:
        ex.wait()
        assert ex.attention == {}  # nothing ablated: no panel
        ex.ablate("2.3").wait()
        att = ex.attention
        assert (att["layer"], att["head"], att["position"]) == (2, 3, 5)
        assert att["tokens"] == lab.to_str_tokens(prompt)
        expected = lab.attention_pattern(prompt, 2, 3)
        # the Explorer's worker may run with another thread count: rounding, not equality
        torch.testing.assert_close(torch.tensor(att["matrix"]).double(), expected.double(),
                                   atol=1e-6, rtol=0)
        assert att["row"] == att["matrix"][5]
        ex.select(2).wait()  # another measured position: its row
        assert ex.attention["position"] == 2 and ex.attention["row"] == att["matrix"][2]
        ex.ablate("2.3", "1.0").wait()  # a set of heads: no single pattern
        assert ex.attention == {}
        ex.ablate("mlp1").wait()
        assert ex.attention == {}
    finally:
        ex.close()
    long = attention_data(torch.eye(60), ["t"] * 60, 59, 0, 0)
    assert long["matrix"] is None and long["row"] == [0.0] * 59 + [1.0]
