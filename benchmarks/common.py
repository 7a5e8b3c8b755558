"""Shared helpers for the benchmarks: the models (`--model`), a timer, and the compute floor.

The floor of an ablation measurement is the computation it cannot avoid: for every ablated
run, the layers from its first ablated one on, at the positions from its row's first ablated
position to its last measured one (earlier positions are clean), plus a target-only
unembedding (negligible). It is counted in "body forwards": plain forwards of the same
prompts without the full-vocabulary unembedding (`logits_to_keep=1`), which is what every
recomputed layer × position costs.
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import nbtools
from nbtools.batching import ablation_positions, measurement_sites

MODELS = "tiny (embedded), gpt2-small (random GPT-2 small shape) or a model folder"


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


def build_lab(model: str):
    """A Lab for --model: "tiny", "gpt2-small" (random, no download) or a folder / name."""
    if model == "gpt2-small":
        return gpt2_small_lab()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nbtools.load(model)


def random_rows(lab, n_rows: int, n_tokens: int, seed: int = 0) -> torch.Tensor:
    """Random token rows [n_rows, n_tokens] in the model's vocabulary."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, lab.shape.d_vocab, (n_rows, n_tokens), generator=gen)


def body_forward(lab, ids: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """A plain forward without the full-vocabulary unembedding (the floor's unit)."""
    with torch.no_grad():
        lab.hf_model(input_ids=ids, attention_mask=mask, logits_to_keep=1, use_cache=False)


def floor_forwards(lab, prompts, first_layers, n_sources: int = 1, positions="all",
                   target="next", measure_at=None) -> float:
    """The floor of measuring ablations whose first ablated layers are `first_layers` (one per
    ablation), each with `n_sources` runs, in body forwards of the prompts' batch."""
    batch = lab.tokenize(prompts)
    pos_mask = ablation_positions(batch, positions)
    sites = measurement_sites(batch, target, measure_at, lab.tokenizer, lab.shape.d_vocab)
    first = pos_mask.int().argmax(1)
    last = first.clone()
    last.scatter_reduce_(0, sites.rows, sites.positions, reduce="amax")
    share = float((last - first + 1).sum()) / float(batch.lengths.sum())  # positions
    L = lab.n_layers
    return n_sources * share * sum((L - start) / L for start in first_layers)


def print_floor(what: str, measured_s: float, floor: float, body_s: float) -> None:
    """One line: the floor (in body forwards and seconds) and measured ÷ floor."""
    print(f"  floor of {what}: {floor:.2f} body forwards = {floor * body_s * 1e3:.1f} ms; "
          f"measured ÷ floor {measured_s / (floor * body_s):.2f}")
