"""Corpus → rows of token ids (R&N: rows of 128 tokens from the pretraining distribution).

Documents are tokenised one at a time, joined with the end-of-text token (if the tokenizer
has one) and cut into consecutive rows; tokenisation stops as soon as `max_rows` rows are
full, so a large corpus costs only what is used. With `prepend_bos` every row starts with
the BOS / end-of-text token followed by `row_len - 1` corpus tokens (TransformerLens'
``tokenize_and_concatenate`` convention).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import InvalidInputError, whole_number


def iter_texts(corpus) -> Iterator[str]:
    """Texts from a corpus description.

    corpus: None or "nltk" (the shared NLTK corpora via `nbtools.corpus`), "nltk:brown,abc"
    (chosen corpora), a path to a text file or a folder of ``*.txt`` files, a list of such
    paths, or an iterable of strings / `nbtools.corpus.Document` objects.
    """
    from .. import corpus as nbcorpus

    if corpus is None or (isinstance(corpus, str) and corpus.split(":")[0] == "nltk"):
        names = nbcorpus.CORPORA
        if isinstance(corpus, str) and ":" in corpus:
            names = tuple(x.strip() for x in corpus.split(":", 1)[1].split(",") if x.strip())
            unknown = [n for n in names if n not in nbcorpus.CORPORA]
            if unknown:
                raise InvalidInputError(
                    f"unknown NLTK corpus {unknown}; choose from {', '.join(nbcorpus.CORPORA)}")
        for doc in nbcorpus.iter_documents(corpora=names):
            yield doc.text
        return
    if isinstance(corpus, str | os.PathLike):
        corpus = [corpus]
    items = list(corpus) if not isinstance(corpus, Iterator) else corpus
    for item in items:
        if isinstance(item, os.PathLike) or (isinstance(item, str) and _looks_like_path(item)):
            if not Path(item).exists():
                raise InvalidInputError(
                    f"corpus file {str(item)!r} does not exist (a one-word string that looks "
                    "like a file name is read as one; give texts as a list of strings)")
            for doc in nbcorpus.iter_text_files([item]):
                yield doc.text
        elif isinstance(item, str):
            yield item
        elif hasattr(item, "text"):
            yield item.text
        else:
            raise InvalidInputError(
                f"cannot read corpus item {item!r}; give texts, Documents or text-file paths")


def _looks_like_path(s: str) -> bool:
    """A short one-line string naming a .txt file, an existing file / folder, or one word with
    a folder separator or a file suffix ("data/corpus", "notes.md"); else: a text."""
    if "\n" in s or len(s) > 1024:
        return False
    if s.endswith(".txt") or (not any(c.isspace() for c in s)
                              and ("/" in s or os.sep in s or re.search(r"\.\w{1,8}$", s))):
        return True
    try:
        return Path(s).exists()
    except OSError:  # e.g. a name too long for the file system: a text
        return False


def corpus_rows(tokenizer, corpus, row_len: int = 128, max_rows: int | None = None,
                prepend_bos: bool = False, n_ctx: int | None = None) -> torch.Tensor:
    """Token rows [R, row_len] (int64) from a corpus (see `iter_texts`) or token ids.

    A 2-D tensor or a list of equal-length id lists is used as the rows themselves.
    Raises InvalidInputError if fewer than one full row of tokens is available.
    """
    if n_ctx is not None and row_len > n_ctx:
        raise InvalidInputError(f"row_len={row_len} exceeds the model's context of {n_ctx} tokens")
    if row_len < 2:
        raise InvalidInputError("row_len must be at least 2 (a next token is needed)")
    if max_rows is not None and whole_number(max_rows, "n_rows") < 1:
        raise InvalidInputError(f"n_rows must be at least 1 (or None: every row), got {max_rows}")
    if isinstance(corpus, torch.Tensor):
        if corpus.dtype == torch.bool or corpus.is_floating_point():
            raise InvalidInputError(f"token rows must be an integer tensor, not {corpus.dtype}")
        rows = corpus.long()
        if rows.dim() != 2:
            raise InvalidInputError(f"token rows must be a 2-D tensor [rows, tokens], got {tuple(rows.shape)}")
        return rows[:max_rows].contiguous() if max_rows else rows.contiguous()
    if isinstance(corpus, list) and corpus and all(isinstance(r, list | tuple) for r in corpus):
        if len({len(r) for r in corpus}) != 1:
            raise InvalidInputError("token-id rows must all have the same length")
        return corpus_rows(tokenizer, torch.tensor(corpus), row_len, max_rows)
    eot = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eot
    if prepend_bos and bos is None:
        raise InvalidInputError("prepend_bos=True but the tokenizer has no BOS / end-of-text token")
    body = row_len - 1 if prepend_bos else row_len
    rows: list[list[int]] = []
    buf: list[int] = []
    for text in iter_texts(corpus):
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if eot is not None:
            ids = [*ids, eot]
        buf.extend(ids)
        while len(buf) >= body:
            rows.append(([bos] if prepend_bos else []) + buf[:body])
            buf = buf[body:]
            if max_rows is not None and len(rows) >= max_rows:
                return torch.tensor(rows, dtype=torch.long)
    if not rows:
        hint = (" (a string is read as the text itself unless it looks like a file name)"
                if isinstance(corpus, str) else "")
        raise InvalidInputError(
            f"the corpus has fewer than {body} tokens: not one full row of row_len={row_len}{hint}")
    return torch.tensor(rows, dtype=torch.long)


def describe_corpus(corpus) -> str:
    """How a result file names the corpus a sweep read (short)."""
    if corpus is None:
        return "nltk"
    if isinstance(corpus, str):
        return corpus if len(corpus) < 200 else corpus[:200] + "…"
    if isinstance(corpus, torch.Tensor):
        return f"token rows {tuple(corpus.shape)}"
    return type(corpus).__name__
