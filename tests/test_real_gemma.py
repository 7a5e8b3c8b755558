"""Gemma-3-270M (a real sandwich-norm model, SPEC §7): loaded from its cache folder (skipped when
the folder is absent), checked against the plain-PyTorch hook reference and the identities.

One forward of a 10-token prompt takes about 0.3 s on one core (the 262k-row unembedding
dominates), so every test here uses one or two short prompts.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import padded
from reference import reference_measure
from test_against_reference import FIELDS

import nbtools
from nbtools import AttnLayer, Head, MLPLayer
from nbtools.models.registry import cache_root

EIFFEL = "The Eiffel Tower is located in the city of"
JAPAN = "The capital of Japan is"
ATOL = 1e-4  # 18 float32 layers; the measured worst gaps are in the notes (≈1e-5)


@pytest.fixture(scope="module")
def gemma():
    folder = cache_root() / "gemma3-270m"
    if not (folder / "model.safetensors").exists():
        pytest.skip(f"Gemma-3-270M not cached at {folder}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nbtools.load(str(folder))


def ids_of(lab, texts):
    return [lab.tokenize([t]).input_ids[0].tolist() for t in texts]


def test_loads_as_gemma_and_knows_paris(gemma):
    s = gemma.shape
    assert gemma.adapter.family == "gemma" and gemma.hf_model.config.model_type == "gemma3_text"
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.d_head, s.d_model) == (18, 4, 1, 256, 640)
    assert gemma.adapter.paths["attn_branch"] is not None and gemma.adapter.final_softcap is None
    r = gemma.measure_clean(EIFFEL)
    assert gemma.tokenizer.decode([int(r.topk_ids_clean[0, 0])]) == " Paris"
    assert float(r.topk_probs_clean[0, 0]) > 0.5


@pytest.mark.parametrize("ablation,theirs,method,positions", [
    (Head(5, 1), [("head", 5, 1)], "zero", "all"),
    (AttnLayer(9), [("attn", 9)], "resample", "final"),
    (MLPLayer(3), [("mlp", 3)], "mean", "all"),
])
def test_matches_the_hook_reference(gemma, ablation, theirs, method, positions):
    prompts = ids_of(gemma, [EIFFEL, JAPAN])
    ids, mask = padded(prompts)
    kwargs, opts = {}, {}
    if method == "resample":  # each row takes the other prompt's final position
        src = [prompts[1], prompts[0]]
        kwargs = dict(zip(("source_ids", "source_mask"), padded(src), strict=True))
        opts = dict(sources=[[s] for s in src])
    if method == "mean":
        kwargs = dict(zip(("mean_ids", "mean_mask"), (ids, mask), strict=True))
    target = "top" if positions == "final" else "next"
    result = gemma.measure(prompts, ablation, method=method, positions=positions, target=target,
                           **opts)
    targets = torch.full_like(ids, -1)
    targets[result.rows, result.positions] = result.target_ids
    ref = reference_measure(gemma.hf_model, ids, mask, targets, theirs, method,
                            positions=positions, **kwargs)
    for name in FIELDS:
        if name.startswith("neuron"):
            continue
        # the final-norm scales are ≈ 10³ here: compared relative to float32's precision
        tol = dict(atol=0, rtol=1e-6) if name.startswith("scale") else dict(atol=ATOL, rtol=0)
        torch.testing.assert_close(getattr(result, name), ref[name].to(torch.float64), **tol,
                                   msg=lambda m, n=name: f"{n}: {m}")
    assert result.sr_branch.abs().max() > 1e-3


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_identities(gemma, method):
    """T1 completeness; SR = SR_heads + SR_MLP + SR_branch + SR_LN; SR_LN's closed form."""
    prompts = [EIFFEL, "The Louvre museum is located in the city of"]
    r = gemma.measure(prompts, Head(12, 2), method=method, sources="shift")
    clean = (r.head_de_clean.sum((-1, -2)) + r.attn_bias_de.sum(-1) + r.mlp_de_clean.sum(-1)
             + r.embed_de.sum(-1) + r.unembed_bias)
    torch.testing.assert_close(clean, r.logit_clean, atol=ATOL, rtol=0)
    torch.testing.assert_close(r.sr_heads + r.sr_mlp + r.sr_branch + r.sr_ln, r.self_repair,
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(r.sr_ln, r.sr_ln_closed, atol=ATOL, rtol=0)
    assert (r.sr_branch_attn[:, :12] == 0).all() and r.sr_branch_attn[:, 12].abs().max() > 0
