"""Judging a trained model: held-out loss, the unigram baseline and greedy samples."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..corpus import Document, heldout_score
from .config import TrainConfig
from .data import EOT, document_rows, encode_documents

#: Prompts whose greedy continuations go into the model card.
SAMPLE_PROMPTS = (
    "The president said that",
    "In the morning, she",
    "The film is",
    "Scientists have found that",
    "The history of the",
)


@torch.no_grad()
def heldout_loss(
    model, tokenizer, documents: Sequence[Document], seq_len: int = 128, batch_size: int = 16
) -> tuple[float, int]:
    """Mean loss (nats/token) and token count over documents cut into ``seq_len``-token rows.

    Every document is preceded by ``<|endoftext|>``; rows do not cross documents and each
    token of a document is predicted exactly once.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = sorted(document_rows(tokenizer, documents, seq_len), key=len, reverse=True)
    total, count = 0.0, 0
    index = 0
    while index < len(rows):
        length = len(rows[index])
        group = [rows[index]]
        index += 1
        while index < len(rows) and len(rows[index]) == length and len(group) < batch_size:
            group.append(rows[index])
            index += 1
        batch = torch.stack(group).to(device)
        logits = model(input_ids=batch[:, :-1]).logits.float()
        targets = batch[:, 1:]
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        ).item()
        count += targets.numel()
    model.train(was_training)
    return total / max(1, count), count


def unigram_loss(train_stream: np.ndarray, tokenizer, documents: Sequence[Document]) -> float:
    """Held-out loss of an add-one-smoothed unigram model fitted on the training stream."""
    vocab = len(tokenizer)
    counts = np.bincount(train_stream, minlength=vocab).astype(np.float64) + 1.0
    log_probs = np.log(counts / counts.sum())
    targets = np.concatenate([row[1:].numpy() for row in document_rows(tokenizer, documents, 128)])
    return float(-log_probs[targets].mean())


@torch.no_grad()
def greedy_samples(model, tokenizer, prompts: Iterable[str], new_tokens: int = 24) -> list[dict]:
    """Greedy continuations of each prompt (given after ``<|endoftext|>``)."""
    model.eval()
    eot = tokenizer.convert_tokens_to_ids(EOT)
    samples = []
    for prompt in prompts:
        ids = [eot, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
        for _ in range(new_tokens):
            logits = model(input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
        prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 1
        samples.append({"prompt": prompt, "continuation": tokenizer.decode(ids[prompt_len:])})
    return samples


def heldout_subset(heldout: Sequence[Document], tokenizer, target_tokens: int) -> list[Document]:
    """A fixed, quick-to-evaluate subset: held-out documents in hash order up to a budget."""
    chosen, tokens = [], 0
    for doc in sorted(heldout, key=lambda d: heldout_score(d.id)):
        if tokens >= target_tokens:
            break
        chosen.append(doc)
        tokens += len(encode_documents(tokenizer, [doc]))
    return sorted(chosen, key=lambda d: d.id)


@dataclass(frozen=True)
class Evaluation:
    """A trained model's numbers for its card (losses in nats per token)."""

    fp32_loss: float
    shipped_loss: float
    heldout_tokens: int
    unigram_loss: float
    subset: list[Document]
    subset_tokens: int
    subset_loss: float
    seconds: float
    samples: list[dict]


def evaluate(
    model,
    out: Path,
    tokenizer,
    heldout_docs: Sequence[Document],
    train_stream: np.ndarray,
    config: TrainConfig,
    log: Callable[[str], object],
) -> Evaluation:
    """Held-out loss of the float32 ``model`` and of the weights saved in ``out`` (as loaded
    from there), the held-out subset's loss, the unigram baseline and greedy samples."""
    from ..embedded import load_from_dir

    tick = time.time()
    fp32_loss, heldout_tokens = heldout_loss(model, tokenizer, heldout_docs, config.seq_len)
    shipped, _ = load_from_dir(out, verify=False)
    shipped_loss, _ = heldout_loss(shipped, tokenizer, heldout_docs, config.seq_len)
    subset = heldout_subset(heldout_docs, tokenizer, config.subset_tokens)
    subset_loss, subset_tokens = heldout_loss(shipped, tokenizer, subset, config.seq_len)
    baseline = unigram_loss(train_stream, tokenizer, heldout_docs)
    seconds = time.time() - tick
    log(
        f"held-out loss {shipped_loss:.4f} ({config.save_dtype} weights), {fp32_loss:.4f} "
        f"(float32), unigram baseline {baseline:.4f}; {heldout_tokens:,} tokens "
        f"({seconds:.0f} s)"
    )
    return Evaluation(
        fp32_loss=fp32_loss,
        shipped_loss=shipped_loss,
        heldout_tokens=heldout_tokens,
        unigram_loss=baseline,
        subset=subset,
        subset_tokens=subset_tokens,
        subset_loss=subset_loss,
        seconds=seconds,
        samples=greedy_samples(shipped, tokenizer, SAMPLE_PROMPTS),
    )
