"""Dtypes: float32 by default on CPU, and a completeness check derived from the dtype's epsilon
that never trips on a correct half-precision run but still catches a dropped write."""

from __future__ import annotations

import pytest
import torch
from conftest import make_lab, pretend_head_write_landed, ragged_batch, word_tokenizer
from reference import make_gpt2

import nbtools
from nbtools import Head, InterventionError

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


@pytest.mark.parametrize("dtype", [*HALF, torch.float32])
@pytest.mark.parametrize("fold", [True, False])
def test_dropped_single_head_write_raises(monkeypatch, dtype, fold):
    """One head's zero ablation that never reached the model is caught, also in bf16/fp16."""
    lab = make_lab("gpt2")
    lab.hf_model.to(dtype)
    pretend_head_write_landed(monkeypatch)
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
