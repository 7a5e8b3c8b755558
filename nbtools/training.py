"""Deterministic recipe for the small GPT-2 shipped with nbtools (``nbtools train-tiny``).

Trains a byte-level BPE tokenizer and a ``transformers.GPT2LMHeadModel`` on the natural-English
corpora of :mod:`nbtools.corpus`, evaluates it on the held-out documents and writes a folder
that ``transformers`` (and :func:`nbtools.embedded.load_from_dir`) load offline: weights
(safetensors), ``config.json``, tokenizer files, ``MODEL_CARD.md`` and ``card.json``.

Training writes an atomic checkpoint under ``<out>/work/`` every few hundred steps and resumes
from it when run again with the same settings.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .corpus import (
    CORPORA,
    DEFAULT_MAX_CHARS,
    Document,
    default_data_dir,
    heldout_score,
    iter_documents,
    split_documents,
)

__all__ = [
    "ARTIFACT_FILES",
    "EOT",
    "TrainConfig",
    "encode_documents",
    "heldout_loss",
    "main",
    "sha256_file",
    "train_tiny",
    "train_tokenizer",
    "unigram_loss",
]

#: The end-of-text token: document separator and bos/eos/pad.
EOT = "<|endoftext|>"

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

SAMPLE_PROMPTS = (
    "The president said that",
    "In the morning, she",
    "The film is",
    "Scientists have found that",
    "The history of the",
)

CARD_VERSION = 1

_FILE_MODE = 0o644


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained model (the defaults are the shipped recipe)."""

    max_tokens: int = 8_300_000
    seed: int = 0
    vocab_size: int = 8192
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 256
    n_positions: int = 256
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 300
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    heldout_fraction: float = 0.03
    save_dtype: str = "float16"
    subset_tokens: int = 40_000

    @property
    def total_steps(self) -> int:
        return max(1, self.max_tokens // (self.batch_size * self.seq_len))

    @property
    def effective_warmup(self) -> int:
        """Warm-up steps, capped at a tenth of the run so tiny runs still decay."""
        return max(1, min(self.warmup_steps, self.total_steps // 10))

    def lr_at(self, step: int) -> float:
        """Linear warm-up to ``lr``, then cosine decay to ``min_lr`` at the last step."""
        warmup = self.effective_warmup
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.total_steps - 1 - warmup)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer with ``<|endoftext|>`` as its only special token.

    Returns a ``transformers`` fast tokenizer (bos, eos and pad are ``<|endoftext|>``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=EOT, eos_token=EOT, pad_token=EOT
    )


def encode_documents(tokenizer, documents: Sequence[Document]) -> np.ndarray:
    """One token stream: ``<|endoftext|>`` before every document (uint32 ids)."""
    eot = tokenizer.convert_tokens_to_ids(EOT)
    backend = tokenizer.backend_tokenizer
    parts = []
    for start in range(0, len(documents), 256):
        batch = [doc.text for doc in documents[start : start + 256]]
        for encoding in backend.encode_batch(batch, add_special_tokens=False):
            parts.append(np.asarray([eot, *encoding.ids], dtype=np.uint32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)


# --------------------------------------------------------------------------- data order


class Batches:
    """Deterministic batches of ``seq_len + 1``-token rows cut from a token stream.

    Each epoch cuts the stream into rows on a grid shifted by a seeded random offset and
    visits them in a seeded random order; the batch of any step can be computed directly,
    which makes resuming exact.
    """

    def __init__(self, stream: np.ndarray, seq_len: int, batch_size: int, seed: int):
        if len(stream) < 2 * seq_len + 1:
            raise ValueError(
                f"Token stream too short ({len(stream)} tokens) for rows of {seq_len} tokens."
            )
        self.stream = torch.from_numpy(stream.astype(np.int64))
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.rows_per_epoch = (len(stream) - seq_len) // seq_len
        self._epochs: dict[int, tuple[int, torch.Tensor]] = {}

    def _epoch(self, epoch: int) -> tuple[int, torch.Tensor]:
        if epoch not in self._epochs:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            shift = int(torch.randint(self.seq_len, (1,), generator=generator))
            order = torch.randperm(self.rows_per_epoch, generator=generator)
            self._epochs = {epoch: (shift, order)}  # keep only the current epoch
        return self._epochs[epoch]

    def epochs_at(self, step: int) -> float:
        return step * self.batch_size / self.rows_per_epoch

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for row in range(step * self.batch_size, (step + 1) * self.batch_size):
            shift, order = self._epoch(row // self.rows_per_epoch)
            start = shift + int(order[row % self.rows_per_epoch]) * self.seq_len
            rows.append(self.stream[start : start + self.seq_len + 1])
        batch = torch.stack(rows)
        return batch[:, :-1], batch[:, 1:]


# --------------------------------------------------------------------------- evaluation


def _document_rows(tokenizer, documents: Sequence[Document], seq_len: int) -> list[torch.Tensor]:
    """Each document (after ``<|endoftext|>``) cut into rows predicting ``seq_len`` tokens."""
    rows = []
    stream = encode_documents(tokenizer, documents)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    starts = np.flatnonzero(stream == eot).tolist() + [len(stream)]
    for begin, end in zip(starts[:-1], starts[1:], strict=True):
        doc = torch.from_numpy(stream[begin:end].astype(np.int64))
        for offset in range(0, len(doc) - 1, seq_len):
            rows.append(doc[offset : offset + seq_len + 1])
    return rows


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
    rows = sorted(_document_rows(tokenizer, documents, seq_len), key=len, reverse=True)
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
    targets = np.concatenate([row[1:].numpy() for row in _document_rows(tokenizer, documents, 128)])
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


# --------------------------------------------------------------------------- files


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)


def _atomic_torch_save(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_save_npy(array: np.ndarray, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npy")
    os.close(fd)
    np.save(tmp, array)
    os.replace(tmp, path)


def _build_model(config: TrainConfig, vocab_size: int, eot: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    model_config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        tie_word_embeddings=True,
    )
    torch.manual_seed(config.seed)
    return GPT2LMHeadModel(model_config)


def _optimizer(model, config: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=1e-8)


def _save_atomically(obj, folder: Path) -> None:
    """``obj.save_pretrained`` into a staging folder, then move each file into ``folder``."""
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".staging-"))
    obj.save_pretrained(staging)
    for file in staging.iterdir():
        os.chmod(file, _FILE_MODE)
        os.replace(file, folder / file.name)
    staging.rmdir()


# --------------------------------------------------------------------------- training


def _heldout_subset(heldout: Sequence[Document], tokenizer, target_tokens: int) -> list[Document]:
    """A fixed, quick-to-evaluate subset: held-out documents in hash order up to a budget."""
    chosen, tokens = [], 0
    for doc in sorted(heldout, key=lambda d: heldout_score(d.id)):
        if tokens >= target_tokens:
            break
        chosen.append(doc)
        tokens += len(encode_documents(tokenizer, [doc]))
    return sorted(chosen, key=lambda d: d.id)


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
    Returns the card (also written to ``card.json``).
    """
    config = TrainConfig(max_tokens=max_tokens, seed=seed, **overrides)
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)

    if documents is None:
        data_root = Path(data_dir) if data_dir is not None else default_data_dir()
        documents = list(iter_documents(data_root))
        data_info = {
            "source": "NLTK corpora from the shared data folder (corpora/*.zip)",
            "corpora": list(CORPORA),
            "zip_sha256": {
                name: sha256_file(data_root / "corpora" / f"{name}.zip") for name in CORPORA
            },
        }
    else:
        documents = list(documents)
        data_info = {
            "source": "documents passed to train_tiny",
            "corpora": sorted({doc.corpus for doc in documents}),
        }
    train_docs, heldout_docs = split_documents(documents, config.heldout_fraction)
    if not train_docs or not heldout_docs:
        raise ValueError(
            f"Split gave {len(train_docs)} training and {len(heldout_docs)} held-out documents; "
            "need at least one of each (pass more documents or a larger heldout_fraction)."
        )
    log(f"documents: {len(train_docs)} train, {len(heldout_docs)} held out")

    checkpoint_path = work / "checkpoint.pt"
    settings = dataclasses.asdict(config)
    checkpoint = None
    if checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, weights_only=False)
        if checkpoint["config"] != settings:
            raise ValueError(
                f"{checkpoint_path} was written with other settings; use another --out folder "
                "or delete it to start over."
            )

    from transformers import PreTrainedTokenizerFast

    tokens_path = work / "train_tokens.npy"
    if checkpoint is not None and (out / "tokenizer.json").exists() and tokens_path.exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
        stream = np.load(tokens_path)
        log(f"resuming from step {checkpoint['step']}")
    else:
        tick = time.time()
        tokenizer = train_tokenizer((doc.text for doc in train_docs), config.vocab_size)
        tokenizer.model_max_length = config.n_positions
        _save_atomically(tokenizer, out)
        stream = encode_documents(tokenizer, train_docs)
        _atomic_save_npy(stream, tokens_path)
        log(
            f"tokenizer: {len(tokenizer)} tokens, {len(stream):,} training tokens "
            f"({time.time() - tick:.0f} s)"
        )

    eot = tokenizer.convert_tokens_to_ids(EOT)
    model = _build_model(config, len(tokenizer), eot)
    optimizer = _optimizer(model, config)
    batches = Batches(stream, config.seq_len, config.batch_size, config.seed)
    step, elapsed, curve, recent = 0, 0.0, [], []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, elapsed = checkpoint["step"], checkpoint["elapsed"]
        curve, recent = checkpoint["curve"], checkpoint["recent"]

    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model: {n_params:,} parameters; {config.total_steps} steps of "
        f"{config.batch_size}x{config.seq_len} tokens, warm-up {config.effective_warmup}"
    )
    model.train()
    tokens_per_step = config.batch_size * config.seq_len
    interval_start, interval_losses = time.time(), []
    while step < config.total_steps:
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        inputs, targets = batches[step]
        logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        interval_losses.append(loss.item())
        recent = (recent + [interval_losses[-1]])[-100:]
        if step % log_every == 0 or step == config.total_steps:
            seconds = time.time() - interval_start
            elapsed += seconds
            mean = sum(interval_losses) / len(interval_losses)
            curve.append([step, round(mean, 4)])
            log(
                f"step {step}/{config.total_steps} | tokens {step * tokens_per_step:,} | "
                f"{len(interval_losses) * tokens_per_step / seconds:,.0f} tok/s | "
                f"loss {mean:.4f} | lr {config.lr_at(step - 1):.2e}"
            )
            interval_start, interval_losses = time.time(), []
        if step % checkpoint_every == 0 or step == config.total_steps:
            state = {
                "config": settings,
                "step": step,
                "elapsed": elapsed,
                "curve": curve,
                "recent": recent,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
            }
            _atomic_torch_save(state, checkpoint_path)

    model.eval()
    _save_atomically(copy.deepcopy(model).to(getattr(torch, config.save_dtype)), out)
    from .embedded import load_from_dir

    tick = time.time()
    fp32_loss, heldout_tokens = heldout_loss(model, tokenizer, heldout_docs, config.seq_len)
    shipped, _ = load_from_dir(out, verify=False)
    shipped_loss, _ = heldout_loss(shipped, tokenizer, heldout_docs, config.seq_len)
    subset = _heldout_subset(heldout_docs, tokenizer, config.subset_tokens)
    subset_loss, subset_tokens = heldout_loss(shipped, tokenizer, subset, config.seq_len)
    baseline = unigram_loss(stream, tokenizer, heldout_docs)
    evaluation_seconds = time.time() - tick
    log(
        f"held-out loss {shipped_loss:.4f} ({config.save_dtype} weights), {fp32_loss:.4f} "
        f"(float32), unigram baseline {baseline:.4f}; {heldout_tokens:,} tokens "
        f"({evaluation_seconds:.0f} s)"
    )

    import tokenizers
    import transformers

    card = {
        "card_version": CARD_VERSION,
        "name": name,
        "architecture": "GPT2LMHeadModel",
        "parameters": n_params,
        "weights_dtype": config.save_dtype,
        "vocab_size": len(tokenizer),
        "special_tokens": [EOT],
        "recipe": {
            **settings,
            "optimizer": "AdamW",
            "eps": 1e-8,
            "dropout": 0.0,
            "weight_decay_on": "parameters with 2 or more dimensions",
            "schedule": "linear warm-up, cosine decay to min_lr",
            "effective_warmup_steps": config.effective_warmup,
        },
        "seed": config.seed,
        "steps": step,
        "tokens_seen": step * tokens_per_step,
        "epochs": round(batches.epochs_at(step), 3),
        "data": {
            **data_info,
            "train_documents": len(train_docs),
            "heldout_documents": len(heldout_docs),
            "train_tokens": int(len(stream)),
            "heldout_tokens": heldout_tokens,
            "split": "held out when the first 8 bytes of sha256('nbtools-heldout-v1:' + id), "
            "read as a big-endian integer and divided by 2**64, are below "
            f"{config.heldout_fraction}",
        },
        "train_loss": round(sum(recent) / len(recent), 4),
        "train_loss_window_steps": len(recent),
        "heldout_loss": round(shipped_loss, 4),
        "heldout_loss_float32": round(fp32_loss, 4),
        "unigram_heldout_loss": round(baseline, 4),
        "heldout_subset": {
            "ids": [doc.id for doc in subset],
            "tokens": subset_tokens,
            "loss": round(subset_loss, 4),
        },
        "loss_curve": curve,
        "tokens_per_second": round(step * tokens_per_step / max(elapsed, 1e-9)),
        "training_seconds": round(elapsed),
        "evaluation_seconds": round(evaluation_seconds),
        "threads": torch.get_num_threads(),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "machine": platform.machine(),
        },
        "samples": greedy_samples(shipped, tokenizer, SAMPLE_PROMPTS),
        "reproduce": f"nbtools train-tiny --out {out.name if out.is_absolute() else out.as_posix()}"
        f" --tokens {config.max_tokens} --seed {config.seed} --threads {torch.get_num_threads()}",
        "sha256": {file: sha256_file(out / file) for file in HASHED_FILES},
    }
    _atomic_write_text(out / "MODEL_CARD.md", render_model_card(card))
    _atomic_write_text(out / "card.json", json.dumps(card, indent=1) + "\n")
    log(f"wrote {out} (weights sha256 {card['sha256']['model.safetensors']})")
    return card


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


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``nbtools train-tiny --out DIR [--data DIR] [--tokens N] ...``."""
    parser = argparse.ArgumentParser(
        prog="nbtools train-tiny", description="Train the small embedded GPT-2 model."
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output folder (resumes if it has a checkpoint from the same settings)",
    )
    parser.add_argument(
        "--data", default=None, help="shared data folder (default: $NBTOOLS_DATA or ../shared/data)"
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=TrainConfig.max_tokens,
        help="training tokens (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    train_tiny(
        args.out,
        data_dir=args.data,
        max_tokens=args.tokens,
        seed=args.seed,
        threads=args.threads,
        log=log,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
