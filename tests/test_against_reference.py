"""Every ablation and measured quantity equals the independent plain-PyTorch reference (≤1e-5)."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import FAMILIES, next_token_targets, padded, ragged_batch
from reference import reference_measure

from nbtools import AttnLayer, Head, MLPLayer, Neurons

ABLATIONS = {
    "head": ([Head(2, 1)], [("head", 2, 1)]),
    "attn": ([AttnLayer(1)], [("attn", 1)]),
    "mlp": ([MLPLayer(2)], [("mlp", 2)]),
    "neurons": ([Neurons(1, (3, 17, 200))], [("neurons", 1, [3, 17, 200])]),
    "set": ([Head(0, 3), Head(3, 0), MLPLayer(1)], [("head", 0, 3), ("head", 3, 0), ("mlp", 1)]),
    "last_head": ([Head(3, 2)], [("head", 3, 2)]),
}
POSITIONS = ["all", "final", [1, 4]]
FIELDS = ["logit_clean", "logit_ablated", "scale_clean", "scale_ablated", "head_de_clean",
          "head_de_ablated", "attn_de_clean", "attn_de_ablated", "mlp_de_clean", "mlp_de_ablated",
          "attn_bias_de", "mlp_bias_de", "embed_de", "unembed_bias", "direct_effect",
          "direct_effect_ablated", "delta_logit", "self_repair", "self_repair_prime", "sr_heads",
          "sr_mlp", "sr_branch", "sr_branch_attn", "sr_branch_mlp", "sr_ln", "sr_ln_closed", "delta_unembed", "delta_ablate", "compensation",
          "neuron_de_clean", "neuron_de_ablated"]


def assert_matches(result, ref, atol=1e-5):
    for name in FIELDS:
        mine = getattr(result, name)
        assert mine is not None, name
        theirs = ref[name].to(mine.dtype)
        assert mine.shape == theirs.shape, (name, mine.shape, theirs.shape)
        torch.testing.assert_close(mine, theirs, atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def site_targets(result, ids):
    """Reference-style targets [B, T] at exactly the sites the engine measured."""
    targets = torch.full_like(ids, -1)
    targets[result.rows, result.positions] = result.target_ids
    return targets


def run_both(lab, prompts, ablation, method, positions, fold=True, scale="clean",
             row_sources=None, reference_prompts=None):
    """The engine and the reference on the same prompts, ablation and options.

    row_sources (resample): one source prompt per prompt row. With positions="final" the
    target is the clean top token at the final position, else the next token everywhere.
    """
    ours, theirs = ABLATIONS[ablation]
    ids, mask = padded(prompts)
    kwargs = {}
    if method == "resample":
        kwargs = dict(zip(("source_ids", "source_mask"), padded(row_sources), strict=True))
    if method == "mean":
        kwargs = dict(zip(("mean_ids", "mean_mask"), padded(reference_prompts), strict=True))
    target = "top" if positions == "final" else "next"
    result = lab.measure(prompts, ours, method=method, positions=positions, scale=scale,
                         fold_value_biases=fold, neurons=True, target=target,
                         sources=[[s] for s in row_sources] if method == "resample" else None,
                         reference=reference_prompts)
    ref = reference_measure(lab.hf_model, ids, mask, site_targets(result, ids), theirs, method,
                            positions=positions, fold_value_biases=fold, scale=scale, **kwargs)
    return result, ref


# every family × method × ablation kind, with the ablated positions varied across them
CASES = [(f, m, a, POSITIONS[(i + i // len(ABLATIONS)) % 3]) for i, (f, m, a) in enumerate(
    itertools.product(FAMILIES, ["zero", "mean", "resample"], ABLATIONS))]


@pytest.mark.parametrize("family,method,ablation,positions", CASES)
def test_matches_reference(labs, family, method, ablation, positions):
    prompts = ragged_batch(seed=1)
    # one source per prompt row, as long as the longest prompt (so at least as long as its row)
    gen = torch.Generator().manual_seed(2)
    width = max(map(len, prompts))
    row_sources = [torch.randint(1, 512, (width,), generator=gen).tolist() for _ in prompts]
    reference_prompts = ragged_batch(seed=7, lengths=(10, 6))
    result, ref = run_both(labs[family], prompts, ablation, method, positions,
                           row_sources=row_sources, reference_prompts=reference_prompts)
    assert_matches(result, ref)
    assert result.delta_logit.abs().max() > 0, "the ablation changed nothing measured"


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama_gqa_vbias", "gemma2", "gemma3"])
@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("scale", ["clean", "recomputed"])
def test_conventions_match_reference(labs, family, fold, scale):
    prompts = ragged_batch(seed=2)
    result, ref = run_both(labs[family], prompts, "head", "zero", "all", fold=fold, scale=scale)
    assert_matches(result, ref)
    assert result.settings["fold_value_biases"] is fold and result.settings["scale"] == scale


@pytest.mark.parametrize("family", ["gpt2", "llama_gqa_vbias", "gemma3"])
def test_several_sources_average_effects(labs, family):
    """K resample sources: every quantity is the mean of K single-source reference runs."""
    lab = labs[family]
    prompts = ragged_batch(seed=3)
    sources = [ragged_batch(seed=10 + k, lengths=(12,))[0] for k in range(3)]
    result = lab.measure(prompts, [Head(1, 2)], method="resample", sources=sources, neurons=True)
    ids, mask = padded(prompts)
    refs = []
    for src in sources:
        s_ids = torch.tensor([src] * len(prompts))
        refs.append(reference_measure(lab.hf_model, ids, mask, next_token_targets(ids, mask),
                                      [("head", 1, 2)], "resample", source_ids=s_ids,
                                      source_mask=torch.ones_like(s_ids)))
    mean_ref = {k: torch.stack([r[k] for r in refs]).mean(0) for k in refs[0]}
    assert_matches(result, mean_ref)
    assert result.settings["n_sources"] == 3


def test_hydra_others_sources_match_reference(labs):
    """sources='others': each prompt resampled from other prompts of the batch, final position."""
    lab = labs["gpt2"]
    prompts = ragged_batch(seed=4, lengths=(8, 11, 9, 10, 7))
    result = lab.measure(prompts, [AttnLayer(1)], method="resample", sources="others",
                         n_sources=3, positions="final", target="top", seed=5)
    assert result.settings["n_sources"] == 3
    assert result.n_sites == len(prompts)
    # the same index the engine drew, replayed through the reference one source at a time
    from nbtools.ablation import resample_index
    from nbtools.batching import make_batch
    batch = make_batch(prompts, lab.tokenizer, 128, 512)
    _, index, _ = resample_index("others", batch, 3, 5)
    ids, mask = padded(prompts)
    targets = torch.full_like(ids, -1)
    targets[torch.arange(len(prompts)), mask.sum(1) - 1] = result.target_ids
    refs = []
    for k in range(3):
        s_ids, s_mask = ids[index[k]], mask[index[k]]
        refs.append(reference_measure(lab.hf_model, ids, mask, targets, [("attn", 1)], "resample",
                                      positions="final", source_ids=s_ids, source_mask=s_mask))
    for name in ["logit_ablated", "delta_logit", "self_repair", "sr_ln", "compensation",
                 "delta_unembed", "delta_ablate"]:
        mean = torch.stack([r[name] for r in refs]).mean(0)
        torch.testing.assert_close(getattr(result, name), mean, atol=1e-5, rtol=0)


def test_softcapped_logit_beside_the_raw_decomposition(labs):
    """Gemma 2 caps its logits (c = 3 here): the decomposition is of the raw logit, and the
    target's capped logit is reported beside it, clean and ablated, equal to the model's own
    output (zero-ablating head 1 of layer 2 with a forward pre-hook here)."""
    lab = labs["gemma2"]
    prompts = ragged_batch(seed=5)
    r = lab.measure(prompts, Head(2, 1), method="zero", logprobs=True, fold_value_biases=False)
    assert "softcap" in r.settings["logit"] and "c = 3.0" in r.settings["logit"]
    ids, mask = padded(prompts)
    o_proj = lab.hf_model.model.layers[2].self_attn.o_proj
    d_head = lab.shape.d_head

    def zero_head(module, args):
        z = args[0].clone()
        z[..., d_head:2 * d_head] = 0
        return (z,)

    with torch.no_grad():
        clean = lab.hf_model(input_ids=ids, attention_mask=mask).logits
        handle = o_proj.register_forward_pre_hook(zero_head)
        try:
            ablated = lab.hf_model(input_ids=ids, attention_mask=mask).logits
        finally:
            handle.remove()
    at = (r.rows, r.positions, r.target_ids)
    torch.testing.assert_close(r.logit_capped_clean, clean[at].double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(r.logit_capped_ablated, ablated[at].double(), atol=1e-5, rtol=0)
    assert clean.abs().max() < 3.0 and (r.logit_clean.abs() > 3.0).any()  # the cap bites
    assert r.delta_logit_capped.abs().max() > 1e-3
    assert labs["gemma3"].measure(prompts, Head(2, 1), logprobs=True).logit_capped_clean is None
