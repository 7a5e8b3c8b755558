"""``train_tiny``: the recipe of the embedded model, from documents to a loadable model folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .. import files
from ..corpus import Document
from .card import build_card, describe_data, write_card
from .config import TrainConfig
from .data import Batches, load_documents, prepare_tokens, split_for_training
from .evaluation import evaluate
from .loop import load_checkpoint, prepare_model, save_weights, train_steps


def train_tiny(
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    max_tokens: int = TrainConfig.max_tokens,
    seed: int = 0,
    log: Callable[[str], object] = print,
    threads: int | None = None,
    documents: Iterable[Document] | None = None,
    log_every: int = 50,
    checkpoint_every: int = 200,
    name: str = "tiny",
    **overrides,
) -> dict:
    """Train the embedded model's recipe and write a loadable model folder to ``out_dir``.

    ``name`` is the model's name in its card. ``documents`` replaces the shared corpora
    (e.g. a few documents for a quick test);
    ``overrides`` set other :class:`TrainConfig` fields (``vocab_size=400, n_layer=1`` ...).
    A checkpoint of the same settings in ``out_dir/work`` is resumed.
    Returns the card (also written to ``card.json``).
    """
    config = TrainConfig(max_tokens=max_tokens, seed=seed, **overrides)
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    checkpoint_path = files.check_writable(out / "work" / "checkpoint.pt")
    documents, data_root = load_documents(data_dir, documents)
    train_docs, heldout_docs = split_for_training(documents, config.heldout_fraction)
    log(f"documents: {len(train_docs)} train, {len(heldout_docs)} held out")
    checkpoint = load_checkpoint(checkpoint_path, config)
    tokenizer, stream = prepare_tokens(out, train_docs, config, checkpoint is not None, log)
    model, optimizer, progress = prepare_model(config, tokenizer, checkpoint, log)
    batches = Batches(stream, config.seq_len, config.batch_size, config.seed)
    progress = train_steps(
        model, optimizer, batches, config, progress, checkpoint_path, log, log_every,
        checkpoint_every,
    )
    model.eval()
    save_weights(model, out, config.save_dtype)

    evaluation = evaluate(model, out, tokenizer, heldout_docs, stream, config, log)
    data = describe_data(
        data_root, documents, train_docs, heldout_docs, int(len(stream)),
        evaluation.heldout_tokens, config.heldout_fraction,
    )
    card = build_card(
        name=name,
        config=config,
        out=out,
        parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=len(tokenizer),
        progress=progress,
        epochs=batches.epochs_at(progress.step),
        data=data,
        evaluation=evaluation,
    )
    write_card(out, card)
    log(f"wrote {out} (weights sha256 {card['sha256']['model.safetensors']})")
    return card
