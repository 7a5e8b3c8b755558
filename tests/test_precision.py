"""Dtypes: float32 by default on CPU, and a completeness check derived from the dtype's epsilon
that never trips on a correct half-precision run but still catches a dropped write."""

from __future__ import annotations

import pytest
import torch
from conftest import make_lab, ragged_batch, word_tokenizer
from reference import make_gpt2

import nbtools
from nbtools import Head, InterventionError, tracing

HALF = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("family", ["gpt2", "neox_seq", "llama_gqa_vbias"])
def test_correct_half_precision_runs_pass_the_check(family, dtype):
    lab = make_lab(family)
    lab.hf_model.to(dtype)
    for seed in range(4):
        for method in ("zero", "mean"):
            r = lab.measure(ragged_batch(seed=seed), Head(1, 2), method=method)
            assert r.settings["dtype"] == str(dtype).replace("torch.", "")


def _drop_the_write(monkeypatch, replace_with_zero):
    """run_ablated runs the model unedited but reports the ablated z (the write never landed)."""
    real = tracing.run_ablated

    def run_then_pretend(lm, adapter, ids, mask, edits, prefix, neurons, *suffix):
        acts = real(lm, adapter, ids, mask, {min(edits): tracing.LayerEdit()}, prefix, neurons,
                    *suffix)
        layer = min(edits)
        edit = edits[layer]
        z = acts.z[layer - acts.first_layer]
        value = torch.zeros_like(z) if replace_with_zero else edit.head_value.to(z.dtype)
        mask_ = edit.head_mask[..., None].expand_as(z)
        acts.z[layer - acts.first_layer] = torch.where(mask_, value.expand_as(z), z)
        return acts

    monkeypatch.setattr("nbtools.lab.run_ablated", run_then_pretend)


@pytest.mark.parametrize("dtype", [*HALF, torch.float32])
@pytest.mark.parametrize("fold", [True, False])
def test_dropped_single_head_write_raises(monkeypatch, dtype, fold):
    """One head's zero ablation that never reached the model is caught, also in bf16/fp16."""
    lab = make_lab("gpt2")
    lab.hf_model.to(dtype)
    _drop_the_write(monkeypatch, replace_with_zero=not fold)
    with pytest.raises(InterventionError, match="do not add up"):
        lab.measure(ragged_batch(), Head(1, 1), method="zero", fold_value_biases=fold)


def test_cpu_load_defaults_to_float32(tmp_path):
    """A half-precision folder runs in float32 on CPU unless dtype= asks otherwise."""
    make_gpt2().half().save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)
    lab = nbtools.load(str(tmp_path))
    assert lab.hf_model.dtype == torch.float32
    assert lab.measure("w1 w2 w3", Head(0, 0)).settings["dtype"] == "float32"
    assert nbtools.load(str(tmp_path), dtype="bfloat16").hf_model.dtype == torch.bfloat16
