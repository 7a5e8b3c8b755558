"""Shared helpers for the benchmarks: a GPT-2-small-sized random model and a timer."""

from __future__ import annotations

import statistics
import time
import warnings

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import nbtools


def gpt2_small_lab(seed: int = 0, device: str = "cpu"):
    """A randomly initialised GPT-2 small (12 layers × 12 heads, d_model 768, vocab 50257)."""
    torch.manual_seed(seed)
    config = GPT2Config(resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    model = GPT2LMHeadModel(config).eval()
    vocab = {f"w{i}": i for i in range(config.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", pad_token="w0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nbtools.load(model, tokenizer=tokenizer, name="gpt2-small-random", device=device)


def paired_ratio(measured, baseline, repeats: int) -> tuple[float, float, float]:
    """Median of time(measured)/time(baseline) over `repeats` interleaved pairs.

    Interleaving makes the ratio robust to load drifting on a shared machine. Returns
    (median ratio, median measured seconds, median baseline seconds); one warm-up each.
    """
    measured(), baseline()
    ratios, a_times, b_times = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        measured()
        a = time.perf_counter() - start
        start = time.perf_counter()
        baseline()
        b = time.perf_counter() - start
        ratios.append(a / b)
        a_times.append(a)
        b_times.append(b)
    return statistics.median(ratios), statistics.median(a_times), statistics.median(b_times)
