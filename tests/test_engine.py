"""Engine behaviour: batching, prefix reuse, no state leaks, dtypes, intervention checks."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import make_lab, pretend_head_write_landed, ragged_batch

import nbtools
from nbtools import AttnLayer, Head, InterventionError, MLPLayer, Neurons

ABLATIONS = [Head(0, 1), Head(2, 3), AttnLayer(3), MLPLayer(1), Neurons(2, (4, 8)),
             (Head(1, 0), MLPLayer(2))]


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama_gqa_vbias"])
@pytest.mark.parametrize("method", ["zero", "resample"])
def test_prefix_reuse_is_identical(labs, family, method):
    """Starting ablated runs from the cached clean residual changes no number (bit-identical)."""
    lab = labs[family]
    prompts = ragged_batch(lengths=(10, 10, 10))
    kw = dict(method=method, sources="shift", neurons=True, suffix_reuse=False)
    fast = lab.measure_many(prompts, ABLATIONS, **kw)
    slow = lab.measure_many(prompts, ABLATIONS, prefix_reuse=False, **kw)
    for a, b in zip(fast, slow, strict=True):
        for name, value in a.tensors().items():
            assert torch.equal(value, b.tensors()[name]), (a.label, name)


def test_batched_equals_one_at_a_time(labs):
    """measure_many (one trace per first layer, many rows) equals separate measure calls."""
    lab = labs["gpt2"]
    prompts = ragged_batch()
    many = lab.measure_many(prompts, ABLATIONS, method="mean", max_rows=7, neurons=True)
    for m in many:
        one = lab.measure(prompts, m.components, method="mean", neurons=True)
        for name, value in m.tensors().items():
            torch.testing.assert_close(value, one.tensors()[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_no_state_leaks(family):
    """After any sequence of ablations a clean run is bit-identical to a fresh model's."""
    fresh = make_lab(family)
    lab = make_lab(family)
    ids = torch.tensor(ragged_batch(lengths=(9, 9)))
    before = fresh.hf_model(input_ids=ids).logits
    for method in ("zero", "mean", "resample"):
        lab.measure_many(ids, ABLATIONS, method=method, sources="shift")
    lab.measure(ids, [Head(1, 1)], method="zero", positions="final", target="top")
    assert torch.equal(lab.hf_model(input_ids=ids).logits, before)
    with torch.no_grad(), lab.model.trace(ids):
        traced = lab.model.lm_head.output.save()
    assert torch.equal(traced, before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in lab.hf_model.modules())


def test_targets_and_logprobs_match_the_model(labs):
    lab = labs["llama_gqa_vbias"]
    ids = torch.tensor(ragged_batch(lengths=(8, 8)))
    r = lab.measure(ids, Head(1, 1), method="zero", target="top", logprobs=True, top_k=3)
    logits = lab.hf_model(input_ids=ids).logits[:, -1]
    assert torch.equal(r.target_ids, logits.argmax(-1))
    torch.testing.assert_close(r.logprob_clean, logits.log_softmax(-1).max(-1).values.double(),
                               atol=1e-5, rtol=0)
    assert torch.equal(r.topk_ids_clean, logits.topk(3).indices)
    centred = logits - logits.mean(-1, keepdim=True)
    torch.testing.assert_close(r.logit_clean, centred.max(-1).values.double(), atol=1e-5, rtol=0)


def test_given_target_token(labs):
    lab = labs["gpt2"]
    r = lab.measure(["w5 w6 w7"], Head(0, 0), target="w42")
    assert r.target_ids.tolist() == [42] and r.positions.tolist() == [2]
    r = lab.measure(["w5 w6 w7"], Head(0, 0), target=42, measure_at=[0, 1])
    assert r.positions.tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("seed", [0, 3])
def test_half_precision_accumulates_in_float64(dtype, seed):
    """A bf16/fp16 model runs in its dtype; the decomposition is accumulated in float64.

    The closed form reads the model's own (rounded) residual stream, the residual term the
    saved components, so they agree only up to the model's half-precision rounding. (Prompt
    seed 3 raised under the old guessed tolerance 5e-2·(1 + |r·u|) in bf16.)
    """
    lab = make_lab("gpt2")
    lab.hf_model.to(dtype)
    prompts = ragged_batch(seed=seed)
    r = lab.measure(prompts, Head(1, 2), method="mean")
    assert r.settings["dtype"] == str(dtype).replace("torch.", "")
    assert r.self_repair.dtype == torch.float64
    torch.testing.assert_close(r.sr_heads + r.sr_mlp + r.sr_ln, r.self_repair, atol=1e-9, rtol=0)
    torch.testing.assert_close(r.sr_ln, r.sr_ln_closed, atol=0.1, rtol=0)
    full = make_lab("gpt2").measure(prompts, Head(1, 2), method="mean")
    torch.testing.assert_close(r.delta_logit, full.delta_logit, atol=0.1, rtol=0.1)


@pytest.mark.parametrize("positions", ["all", "final"])
def test_dropped_intervention_is_detected(monkeypatch, positions):
    """If a write never reaches the model, the completeness check raises InterventionError
    (also on suffix runs, positions="final")."""
    lab = make_lab("gpt2")
    pretend_head_write_landed(monkeypatch)
    with pytest.raises(InterventionError, match="do not add up"):
        lab.measure(ragged_batch(), Head(1, 1), method="zero", positions=positions,
                    target="top")


def test_no_effect_warns(labs):
    lab = labs["gpt2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lab.measure(ragged_batch(), Head(1, 1), method="zero", positions="final")
    assert any("changed nothing" in str(w.message) for w in caught)


def test_strings_components_and_repr(labs):
    lab = labs["neox"]
    r = lab.measure("w1 w2 w3 w4", ["L1H2", "mlp2", "mlp3:1,2"], method="zero")
    assert r.label == "L1H2+mlp2+mlp3:1,2"
    assert "SR=" in repr(r) and "neox" in repr(lab)
    assert set(r.summary()) >= {"self_repair", "sr_ln", "compensation"}
    assert lab.to_str_tokens("w1 w2") == ["w1", "w2"]
    tops = lab.measure("w1 w2 w3 w4", "2.1", neurons=True).top_neurons(k=4)
    assert len(tops) == 4 and tops[0]["delta_de"] >= tops[-1]["delta_de"]


def test_load_accepts_an_nnsight_model(labs):
    again = nbtools.load(labs["gpt2"].model)
    assert again.shape == labs["gpt2"].shape


def test_measure_scales_equals_one_scale_at_a_time(labs):
    """Both norm-scale conventions from one set of forward passes equal separate calls."""
    lab = labs["llama_gqa_vbias"]
    prompts = ragged_batch(lengths=(8, 9, 10, 11, 12))
    kw = dict(method="resample", sources="others", n_sources=3, positions="final",
              target="top", logprobs=True)
    both = lab.measure_scales(prompts, [AttnLayer(1), MLPLayer(2)], **kw)
    assert list(both) == ["clean", "recomputed"]
    for scale, ms in both.items():
        for m, one in zip(ms, lab.measure_many(prompts, [AttnLayer(1), MLPLayer(2)],
                                               scale=scale, **kw), strict=True):
            assert m.settings == one.settings and m.settings["scale"] == scale
            for name, value in m.tensors().items():
                assert torch.equal(value, one.tensors()[name]), (scale, m.label, name)
    with pytest.raises(nbtools.InvalidInputError, match="scales"):
        lab.measure_scales(prompts, [AttnLayer(1)], scales=("nope",))


def test_layer_sweep_measures_both_scales_from_one_pass(labs, monkeypatch):
    """sweep_layers runs each batch's forward passes once for all scales; the numbers equal
    one sweep per scale."""
    from nbtools.sweeps import sweep_layers

    lab = labs["gpt2"]
    prompts = [" ".join(f"w{(7 * i + j) % 500 + 1}" for j in range(5 + i % 3)) for i in range(6)]
    kw = dict(n_sources=3, batch_prompts=3, progress=False, examples=1)
    calls = []
    real = lab._measure
    monkeypatch.setattr(lab, "_measure", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    both = sweep_layers(lab, prompts, **kw)
    assert calls == [("clean", "recomputed")] * 3  # two batches and one example
    for scale in ("clean", "recomputed"):
        one = sweep_layers(lab, prompts, scales=[scale], **kw)
        for name, value in one.state.items():
            assert torch.equal(value, both.state[name]), (scale, name)
