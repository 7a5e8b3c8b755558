"""Position-suffix reuse: ablated runs from the first ablated position on the clean KV cache.

Every result must equal the full recomputation (suffix_reuse=False) to float32 rounding, for
every family (absolute positions, rotary, GQA caches), padded rows with different first
ablated positions, several resample sources, max_rows batching, and measurement sites
before, at and after the ablated positions.
"""

from __future__ import annotations

import pytest
import torch
from conftest import ragged_batch

from nbtools import AttnLayer, Head, MLPLayer, Neurons
from nbtools.batching import ablation_positions
from nbtools.suffix import plan_suffix

ABLATIONS = [Head(0, 1), Head(2, 3), AttnLayer(3), MLPLayer(1), Neurons(2, (4, 8)),
             (Head(1, 0), MLPLayer(2))]
FAMILIES = ["gpt2", "neox", "neox_seq", "llama_gqa_vbias", "llama", "gemma2", "gemma3"]
RAGGED = (12, 9, 11, 10, 8)
CASES = {
    "final, 3 sources, padded": dict(
        prompts=RAGGED, method="resample", sources="others", n_sources=3, positions="final",
        target="top", logprobs=True),
    "positions list, zero, neurons": dict(
        prompts=RAGGED, method="zero", positions=[3, 5], neurons=True),
    "sites before and after": dict(
        prompts=RAGGED, method="mean", positions=[4], measure_at=[2, 4, 6], target=7),
    "trailing positions cut": dict(
        prompts=(9, 9, 9), method="resample", sources="shift", positions="all",
        measure_at=[3], target=5, logprobs=True),
    "per-row sources": dict(
        prompts=RAGGED, method="resample", sources=[[[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                                                     [5, 6, 7, 8, 9, 10, 11, 12, 13]]] * 5,
        positions="final", target="top"),
}


def assert_same(fast, slow):
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        for name, value in a.tensors().items():
            other = b.tensors()[name]
            if value.is_floating_point():
                torch.testing.assert_close(value, other, atol=1e-5, rtol=1e-5,
                                           msg=f"{a.label} {name}")
            else:
                assert torch.equal(value, other), (a.label, name)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", list(CASES))
def test_suffix_reuse_equals_full_recomputation(labs, family, case):
    lab = labs[family]
    kw = dict(CASES[case])
    prompts = ragged_batch(lengths=kw.pop("prompts"))
    fast = lab.measure_many(prompts, ABLATIONS, max_rows=7, **kw)
    slow = lab.measure_many(prompts, ABLATIONS, suffix_reuse=False, **kw)
    assert_same(fast, slow)
    both = lab.measure_many(prompts, ABLATIONS, suffix_reuse=False, prefix_reuse=False, **kw)
    assert_same(lab.measure_many(prompts, ABLATIONS, prefix_reuse=False, **kw), both)


@pytest.mark.parametrize("family", ["gpt2", "llama_gqa_vbias"])
def test_hydra_protocol(labs, family):
    """positions="final", target="top", 15 sources per prompt, layer ablations."""
    lab = labs[family]
    prompts = ragged_batch(seed=3, lengths=tuple(6 + i % 5 for i in range(16)))
    layers = [AttnLayer(i) for i in range(4)] + [MLPLayer(i) for i in range(4)]
    kw = dict(method="resample", sources="others", n_sources=15, positions="final",
              target="top", max_rows=128)
    fast = lab.measure_scales(prompts, layers, **kw)
    slow = lab.measure_scales(prompts, layers, suffix_reuse=False, **kw)
    for scale in fast:
        assert_same(fast[scale], slow[scale])


def test_final_position_runs_one_token_on_the_cache(labs, monkeypatch):
    """The ablated trace of a final-position ablation carries one token per row and the clean
    keys/values of every earlier position (the longest prompt's)."""
    lab = labs["llama_gqa_vbias"]
    seen = []

    def spy(module, args, kwargs):
        seen.append((kwargs["input_ids"].shape, kwargs["attention_mask"].shape,
                     kwargs.get("position_ids"), kwargs.get("cache")))

    handle = lab.hf_model.register_forward_pre_hook(spy, with_kwargs=True)
    monkeypatch.setattr(lab, "_states", type(lab._states)(8))  # no clean run cached yet
    monkeypatch.setattr(lab, "_clean", type(lab._clean)(8))
    prompts = ragged_batch(lengths=(12, 9, 11))
    lab.measure_many(prompts, [AttnLayer(2)], method="zero", positions="final", target="top")
    handle.remove()
    _clean_run, (ids_shape, mask_shape, position_ids, cache) = seen
    assert ids_shape == (3, 1) and mask_shape == (3, 11 + 1)
    assert position_ids[:, 0].tolist() == [11, 8, 10]
    # GQA: 2 key-value heads; layer 0 was skipped (prefix reuse), layer 2 ran and appended
    assert cache.layers[0].keys.shape == (3, 2, 11, 16)
    assert cache.layers[2].keys.shape == (3, 2, 12, 16)


def test_plan_suffix_layout(labs):
    lab = labs["gpt2"]
    batch = lab.tokenize(ragged_batch(lengths=(6, 4, 5)))
    pos_mask = ablation_positions(batch, "final")
    rows, pos = torch.tensor([0, 1, 2]), torch.tensor([5, 3, 4])
    s = plan_suffix(batch, pos_mask, rows, pos)
    assert s.offset.tolist() == [5, 3, 4] and s.n_cached == 5 and s.width == 1
    assert s.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 1],
                                         [1, 1, 1, 1, 0, 1]]
    assert torch.equal(s.input_ids[:, 0], batch.input_ids[rows, pos])
    # ablate everywhere, measure at position 2: only the trailing positions are cut
    s = plan_suffix(batch, ablation_positions(batch, "all"), rows, torch.tensor([2, 2, 2]))
    assert s.n_cached == 0 and s.width == 3 and s.attention_mask.shape == (3, 3)
    # nothing to save: every position is needed
    all_sites = torch.tensor([5, 3, 4])
    assert plan_suffix(batch, ablation_positions(batch, "all"), rows, all_sites) is None


def test_sites_before_the_ablation_are_exactly_clean(labs):
    lab = labs["neox"]
    m = lab.measure(ragged_batch(), Head(1, 2), method="zero", positions=[5],
                    measure_at=[1, 3, 5, 7], target=9)
    before = m.positions < 5
    assert before.any() and (m.delta_logit[before] == 0).all()
    assert (m.head_de_ablated[before] == m.head_de_clean[before]).all()
    assert (m.delta_logit[~before] != 0).all()


def test_suffix_runs_through_nnsights_remote_path(labs):
    """The clean cache is saved inside the trace and the suffix cache is an argument of the
    trace, so the remote (here: locally simulated) path gives the same numbers."""
    lab = labs["gpt2"]
    prompts = ragged_batch(lengths=(9, 7, 8))
    kw = dict(method="resample", sources="shift", positions="final", target="top",
              logprobs=True)
    here = lab.measure_many(prompts, [AttnLayer(1), MLPLayer(2)], **kw)
    there = lab.on("local").measure_many(prompts, [AttnLayer(1), MLPLayer(2)], **kw)
    for a, b in zip(here, there, strict=True):
        for name, value in a.tensors().items():
            assert torch.equal(value, b.tensors()[name]), name


def test_clean_cache_is_kept_only_when_needed(labs):
    """The clean run keeps its key-value cache only for suffix runs that read it; a cached
    clean run without one is recomputed with it (and keeps its neuron activations)."""
    lab = labs["neox"]
    prompts = ragged_batch(seed=5)
    lab.measure(prompts, Head(1, 1), method="zero", neurons=True)  # all positions: no cache
    kept = lab._states.get(lab.tokenize(prompts).key())
    assert "keys" not in kept and kept["act"]
    lab.measure(prompts, Head(1, 1), method="zero", positions="final", target="top",
                neurons=True)
    kept = lab._states.get(lab.tokenize(prompts).key())
    assert len(kept["keys"]) == lab.n_layers and kept["act"]
