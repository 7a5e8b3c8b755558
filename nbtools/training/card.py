"""The model card of a trained model: its contents (``card.json``), its text (``MODEL_CARD.md``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

from .. import files
from ..corpus import CORPORA, DEFAULT_MAX_CHARS, Document
from .config import TrainConfig
from .data import EOT
from .evaluation import Evaluation
from .loop import Progress

#: Files of a finished run that make up a loadable model folder.
ARTIFACT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "MODEL_CARD.md",
    "card.json",
)

#: Files whose SHA-256 is recorded in ``card.json`` and checked on loading.
HASHED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

CARD_VERSION = 1


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_data(
    data_root: Path | None,
    documents: Sequence[Document],
    train_docs: Sequence[Document],
    heldout_docs: Sequence[Document],
    train_tokens: int,
    heldout_tokens: int,
    heldout_fraction: float,
) -> dict:
    """The card's ``data`` entry: where the documents came from (the corpus zips' SHA-256 when
    read from ``data_root``, else the given documents' corpora) and how they were split."""
    if data_root is not None:
        source = {
            "source": "NLTK corpora from the shared data folder (corpora/*.zip)",
            "corpora": list(CORPORA),
            "zip_sha256": {
                name: sha256_file(data_root / "corpora" / f"{name}.zip") for name in CORPORA
            },
        }
    else:
        source = {
            "source": "documents passed to train_tiny",
            "corpora": sorted({doc.corpus for doc in documents}),
        }
    return {
        **source,
        "train_documents": len(train_docs),
        "heldout_documents": len(heldout_docs),
        "train_tokens": train_tokens,
        "heldout_tokens": heldout_tokens,
        "split": "held out when the first 8 bytes of sha256('nbtools-heldout-v1:' + id), "
        "read as a big-endian integer and divided by 2**64, are below "
        f"{heldout_fraction}",
    }


def build_card(
    *,
    name: str,
    config: TrainConfig,
    out: Path,
    parameters: int,
    vocab_size: int,
    progress: Progress,
    epochs: float,
    data: dict,
    evaluation: Evaluation,
) -> dict:
    """The ``card.json`` dictionary of a finished run whose model files are in ``out``."""
    tokens_seen = progress.step * config.tokens_per_step
    threads = torch.get_num_threads()
    shown_out = out.name if out.is_absolute() else out.as_posix()
    return {
        "card_version": CARD_VERSION,
        "name": name,
        "architecture": "GPT2LMHeadModel",
        "parameters": parameters,
        "weights_dtype": config.save_dtype,
        "vocab_size": vocab_size,
        "special_tokens": [EOT],
        "recipe": _recipe(config),
        "seed": config.seed,
        "steps": progress.step,
        "tokens_seen": tokens_seen,
        "epochs": round(epochs, 3),
        "data": data,
        "train_loss": round(sum(progress.recent) / len(progress.recent), 4),
        "train_loss_window_steps": len(progress.recent),
        "heldout_loss": round(evaluation.shipped_loss, 4),
        "heldout_loss_float32": round(evaluation.fp32_loss, 4),
        "unigram_heldout_loss": round(evaluation.unigram_loss, 4),
        "heldout_subset": {
            "ids": [doc.id for doc in evaluation.subset],
            "tokens": evaluation.subset_tokens,
            "loss": round(evaluation.subset_loss, 4),
        },
        "loss_curve": progress.curve,
        "tokens_per_second": round(tokens_seen / max(progress.elapsed, 1e-9)),
        "training_seconds": round(progress.elapsed),
        "evaluation_seconds": round(evaluation.seconds),
        "threads": threads,
        "environment": _environment(),
        "samples": evaluation.samples,
        "reproduce": f"nbtools train-tiny --out {shown_out} --tokens {config.max_tokens}"
        f" --seed {config.seed} --threads {threads}",
        "sha256": {file: sha256_file(out / file) for file in HASHED_FILES},
    }


def _recipe(config: TrainConfig) -> dict:
    """The settings and the fixed choices of the recipe."""
    return {
        **dataclasses.asdict(config),
        "optimizer": "AdamW",
        "eps": 1e-8,
        "dropout": 0.0,
        "weight_decay_on": "parameters with 2 or more dimensions",
        "schedule": "linear warm-up, cosine decay to min_lr",
        "effective_warmup_steps": config.effective_warmup,
    }


def _environment() -> dict:
    """The versions and machine a run used."""
    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "machine": platform.machine(),
    }


def write_card(out: Path, card: dict) -> None:
    """Write ``MODEL_CARD.md`` and ``card.json`` into ``out``, each atomically."""
    files.write_text(out / "MODEL_CARD.md", render_model_card(card))
    files.write_text(out / "card.json", json.dumps(card, indent=1) + "\n")


def render_model_card(card: dict) -> str:
    """The human-readable model card for a ``card.json`` dictionary."""
    recipe, data = card["recipe"], card["data"]
    samples = "\n".join(
        f"- *{s['prompt']}* → {json.dumps(s['continuation'], ensure_ascii=False)}"
        for s in card["samples"]
    )
    corpora = ", ".join(data["corpora"])
    return f"""# Model card: `{card["name"]}`

A small GPT-2-style language model trained from scratch by `nbtools train-tiny`, shipped so
that the toolkit's notebooks and tests run offline. It is a research toy, not a useful
language model: it has seen {card["tokens_seen"]:,} tokens of English.

## Model
- `transformers.GPT2LMHeadModel`: {recipe["n_layer"]} layers, {recipe["n_head"]} heads,
  d_model {recipe["n_embd"]}, context {recipe["n_positions"]}, no dropout, tied embeddings;
  {card["parameters"]:,} parameters, weights stored as {card["weights_dtype"]}.
- Tokenizer: byte-level BPE trained on the training documents, {card["vocab_size"]:,} tokens;
  `<|endoftext|>` separates documents and is the bos/eos/pad token.

## Data
{data["source"]}: {corpora}. Tagged corpora (Brown, MASC) had their part-of-speech tags
stripped and were detokenised; documents longer than {DEFAULT_MAX_CHARS:,} characters were cut
into parts.
{data["train_documents"]:,} training documents ({data["train_tokens"]:,} tokens) and
{data["heldout_documents"]:,} held-out documents ({data["heldout_tokens"]:,} tokens); the split
is by a hash of each document id: {data["split"]}.

## Recipe
AdamW (betas {tuple(recipe["betas"])}, weight decay {recipe["weight_decay"]} on matrices),
learning rate {recipe["lr"]} with {recipe["effective_warmup_steps"]} warm-up steps then cosine
decay to {recipe["min_lr"]}, batches of {recipe["batch_size"]} × {recipe["seq_len"]} tokens,
gradient clipping {recipe["grad_clip"]}, seed {card["seed"]}; {card["steps"]:,} steps,
{card["tokens_seen"]:,} tokens ({card["epochs"]} epochs), {card["threads"]} CPU threads,
{card["training_seconds"]:,} s of training at {card["tokens_per_second"]:,} tokens/s.

## Results (nats per token)
| measure | loss |
|---|---|
| training loss (mean of the last {card["train_loss_window_steps"]} steps) | {card["train_loss"]} |
| held-out loss, shipped {card["weights_dtype"]} weights | {card["heldout_loss"]} |
| held-out loss, float32 weights before saving | {card["heldout_loss_float32"]} |
| unigram baseline on the held-out set | {card["unigram_heldout_loss"]} |
| held-out subset ({len(card["heldout_subset"]["ids"])} documents, \
{card["heldout_subset"]["tokens"]:,} tokens; used by the tests) | {card["heldout_subset"]["loss"]} |

Held-out loss: every held-out document, preceded by `<|endoftext|>`, cut into rows of
{recipe["seq_len"]} predicted tokens; the mean over all predicted tokens.

## Greedy continuations
{samples}

## Reproduce
```
{card["reproduce"]}
```
then copy {", ".join(f"`{name}`" for name in ARTIFACT_FILES)} into `nbtools/embedded/tiny/`.
Same seed, data and thread count give the same data order and initialisation; floating-point
results can differ slightly between machines and library versions
(here: torch {card["environment"]["torch"]}, transformers
{card["environment"]["transformers"]}, tokenizers {card["environment"]["tokenizers"]}).

## Files
SHA-256 of `model.safetensors`: `{card["sha256"]["model.safetensors"]}`
(all checked files are listed in `card.json`).
"""
