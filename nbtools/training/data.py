"""The training data: documents and their split, the tokenizer, token streams and batches."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from .. import files
from ..corpus import Document, default_data_dir, iter_documents, split_documents
from .config import TrainConfig

#: The end-of-text token: document separator and bos/eos/pad.
EOT = "<|endoftext|>"


def load_documents(
    data_dir: str | os.PathLike | None, documents: Iterable[Document] | None
) -> tuple[list[Document], Path | None]:
    """``(documents, corpus folder)``: the given ``documents`` (folder ``None``), else every
    document of the shared corpora under ``data_dir`` (default: the shared data folder)."""
    if documents is not None:
        return list(documents), None
    data_root = Path(data_dir) if data_dir is not None else default_data_dir()
    return list(iter_documents(data_root)), data_root


def split_for_training(
    documents: Sequence[Document], heldout_fraction: float
) -> tuple[list[Document], list[Document]]:
    """``(train, held out)`` by the corpus' hash split; ValueError unless both are non-empty."""
    train_docs, heldout_docs = split_documents(documents, heldout_fraction)
    if not train_docs or not heldout_docs:
        raise ValueError(
            f"Split gave {len(train_docs)} training and {len(heldout_docs)} held-out documents; "
            "need at least one of each (pass more documents or a larger heldout_fraction)."
        )
    return train_docs, heldout_docs


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


def document_rows(tokenizer, documents: Sequence[Document], seq_len: int) -> list[torch.Tensor]:
    """Each document (after ``<|endoftext|>``) cut into rows predicting ``seq_len`` tokens:
    int64 rows of ``seq_len + 1`` tokens, the last row of a document shorter."""
    rows = []
    stream = encode_documents(tokenizer, documents)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    starts = np.flatnonzero(stream == eot).tolist() + [len(stream)]
    for begin, end in zip(starts[:-1], starts[1:], strict=True):
        doc = torch.from_numpy(stream[begin:end].astype(np.int64))
        for offset in range(0, len(doc) - 1, seq_len):
            rows.append(doc[offset : offset + seq_len + 1])
    return rows


def prepare_tokens(
    out: Path,
    train_docs: Sequence[Document],
    config: TrainConfig,
    resuming: bool,
    log: Callable[[str], object],
):
    """``(tokenizer, training stream)``, read back from ``out`` when ``resuming`` and both were
    saved, else trained and encoded, then saved (tokenizer files in ``out``, the uint32 stream
    in ``out/work/train_tokens.npy``)."""
    from transformers import PreTrainedTokenizerFast

    tokens_path = out / "work" / "train_tokens.npy"
    if resuming and (out / "tokenizer.json").exists() and tokens_path.exists():
        return PreTrainedTokenizerFast.from_pretrained(out), np.load(tokens_path)
    tick = time.time()
    tokenizer = train_tokenizer((doc.text for doc in train_docs), config.vocab_size)
    tokenizer.model_max_length = config.n_positions
    with files.atomic_folder_files(out) as staging:
        tokenizer.save_pretrained(staging)
    stream = encode_documents(tokenizer, train_docs)
    with files.atomic_path(tokens_path, suffix=".npy") as tmp:
        np.save(tmp, stream)
    log(
        f"tokenizer: {len(tokenizer)} tokens, {len(stream):,} training tokens "
        f"({time.time() - tick:.0f} s)"
    )
    return tokenizer, stream


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
        """``(inputs, targets)`` of a step, each ``[batch_size, seq_len]`` int64."""
        rows = []
        for row in range(step * self.batch_size, (step + 1) * self.batch_size):
            shift, order = self._epoch(row // self.rows_per_epoch)
            start = shift + int(order[row % self.rows_per_epoch]) * self.seq_len
            rows.append(self.stream[start : start + self.seq_len + 1])
        batch = torch.stack(rows)
        return batch[:, :-1], batch[:, 1:]
