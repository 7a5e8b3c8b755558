"""Prompts → right-padded token batches, and measurement sites (row, position, target token).

Right padding keeps every real token's computation identical to an unpadded run (causal
attention never looks ahead), so padding only has to be masked, never corrected for.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from .errors import InvalidInputError, whole_number


@dataclass
class Batch:
    """input_ids, attention_mask [B, T] (right-padded); lengths [B]; texts if given as strings."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor
    texts: list[str] | None = None

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def key(self) -> tuple:
        return (tuple(self.input_ids.shape), self.input_ids.numpy().tobytes(),
                self.attention_mask.numpy().tobytes())


def check_text(text: str, what: str) -> str:
    """`text` if it can be encoded (UTF-8), else InvalidInputError naming where it breaks (a
    lone surrogate, e.g. half of an emoji cut out of a JSON string)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidInputError(
            f"{what} is not valid text: character {err.start} is {text[err.start]!r}, a lone "
            "surrogate (half of a character that was cut in two); remove or repair it") from None
    return text


def _as_token_lists(prompts, tokenizer, what: str) -> tuple[list[list[int]], list[str] | None]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, torch.Tensor):
        if prompts.dtype == torch.bool or prompts.is_floating_point() or prompts.is_complex():
            raise InvalidInputError(
                f"{what} token ids must be an integer tensor (torch.long), not {prompts.dtype}")
        if prompts.dim() not in (1, 2):
            raise InvalidInputError(
                f"{what} token ids must be a tensor [T] or [B, T], not of shape "
                f"{tuple(prompts.shape)}")
        if prompts.dim() == 1:
            prompts = prompts[None]
        return [row.tolist() for row in prompts], None
    if not isinstance(prompts, list | tuple):
        raise InvalidInputError(
            f"{what}s must be a string, a list of strings, or token ids (a list of id lists or "
            f"a tensor [B, T]), not {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise InvalidInputError(f"no {what}s given (an empty list)")
    if all(isinstance(p, str) for p in prompts):
        return [tokenizer(check_text(p, f"{what} {i}"))["input_ids"]
                for i, p in enumerate(prompts)], prompts
    if all(isinstance(p, list | tuple) for p in prompts):
        return [[whole_number(t, f"a token id of {what} {i}") for t in p]
                for i, p in enumerate(prompts)], None
    raise InvalidInputError(
        f"{what}s must be a string, a list of strings, or token ids (a list of id lists or a "
        "tensor [B, T]); do not mix them")


def make_batch(prompts, tokenizer, n_ctx: int, d_vocab: int, pad_id: int = 0,
               what: str = "prompt") -> Batch:
    """Tokenise and right-pad; empty, over-long or out-of-vocabulary prompts raise.

    what: how errors name the prompts ("prompt", "source", "reference prompt").
    """
    token_lists, texts = _as_token_lists(prompts, tokenizer, what)
    for i, toks in enumerate(token_lists):
        if len(toks) == 0:
            raise InvalidInputError(f"{what} {i} is empty (no tokens)")
        if len(toks) > n_ctx:
            raise InvalidInputError(
                f"{what} {i} has {len(toks)} tokens; this model takes at most {n_ctx}")
        bad = [t for t in toks if not 0 <= t < d_vocab]
        if bad:
            raise InvalidInputError(f"{what} {i} has token ids {bad[:5]} outside 0..{d_vocab - 1}")
    lengths = torch.tensor([len(t) for t in token_lists])
    width = int(lengths.max())
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, toks in enumerate(token_lists):
        ids[i, : len(toks)] = torch.tensor(toks)
        mask[i, : len(toks)] = 1
    return Batch(ids, mask, lengths, texts)


def ablation_positions(batch: Batch, positions) -> torch.Tensor:
    """Bool mask [B, T] of the positions to ablate: "all", "final", or a list of indices."""
    B, T = batch.input_ids.shape
    idx = torch.arange(T)
    if positions == "all":
        return idx[None, :] < batch.lengths[:, None]
    if positions == "final":
        return idx[None, :] == (batch.lengths - 1)[:, None]
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = [positions]
    if isinstance(positions, str | bool) or not hasattr(positions, "__iter__"):
        raise InvalidInputError(f"positions must be 'all', 'final' or a list of ints, not {positions!r}")
    positions = [whole_number(
        p, "each of positions", "positions: 'all', 'final' or a list of ints") for p in positions]
    if not positions:
        raise InvalidInputError("positions is an empty list")
    shortest = int(batch.lengths.min())
    bad = [p for p in positions if not 0 <= p < shortest]
    if bad:
        raise InvalidInputError(
            f"positions {bad} out of range; every prompt has positions 0..{shortest - 1}")
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, positions] = True
    return mask


@dataclass
class Sites:
    """Measurement sites: rows, positions [N] and what decides the target tokens."""

    rows: torch.Tensor
    positions: torch.Tensor
    target_ids: torch.Tensor | None  # None until "top" is resolved from the clean run
    minus_ids: torch.Tensor | None = None  # a logit difference target − minus, else None


def measurement_sites(batch: Batch, target, measure_at, tokenizer, d_vocab: int) -> Sites:
    """Sites for a target: "next" (actual next token), "top" (clean argmax), a token or an id,
    or a pair of tokens / ids (a, b) for the logit difference a − b (the IOI metric)."""
    pair = None
    if isinstance(target, tuple | list):
        if len(target) != 2 or any(isinstance(t, tuple | list) for t in target):
            raise InvalidInputError(
                f"a logit-difference target is a pair of single tokens or ids, e.g. "
                f"(' Mary', ' John'); got {target!r}")
        if any(t in ("next", "top") for t in target if isinstance(t, str)):
            raise InvalidInputError(
                f"a logit-difference target names two tokens, not 'next' / 'top'; got {target!r}")
        pair = [target_token_id(t, tokenizer, d_vocab) for t in target]
        if pair[0] == pair[1]:
            raise InvalidInputError(f"the two tokens of the logit difference {target!r} are "
                                    "the same token")
    if measure_at is None:
        measure_at = "all" if target == "next" else "final"
    lengths = batch.lengths
    B, T = batch.input_ids.shape
    last_usable = lengths - 1 if target == "next" else lengths  # exclusive bound per row
    if measure_at == "all":
        mask = torch.arange(T)[None, :] < last_usable[:, None]
    elif measure_at == "final":
        if target == "next":
            raise InvalidInputError(
                "target='next' has no next token at the final position; measure_at='all', "
                "or target='top' / a token for the final position")
        mask = torch.arange(T)[None, :] == (lengths - 1)[:, None]
    elif isinstance(measure_at, str | bool) or not (
            isinstance(measure_at, int) or hasattr(measure_at, "__iter__")):
        raise InvalidInputError(
            f"measure_at must be 'all', 'final', a position or a list of them, not {measure_at!r}")
    else:
        wanted = [whole_number(p, "each of measure_at",
                                "measure_at: 'all', 'final' or a list of ints")
                  for p in ([measure_at] if isinstance(measure_at, int) else measure_at)]
        limit = int(last_usable.min())
        bad = [p for p in wanted if not 0 <= p < limit]
        if bad or not wanted:
            raise InvalidInputError(
                f"measure_at positions {bad or wanted} out of range; valid: 0..{limit - 1}"
                + (" (the last position has no next token)" if target == "next" else ""))
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[:, wanted] = True
    rows, pos = mask.nonzero(as_tuple=True)
    if rows.numel() == 0:
        raise InvalidInputError("no position to measure (prompts of one token with target='next'?)")
    if target == "next":
        return Sites(rows, pos, batch.input_ids[rows, pos + 1])
    if target == "top":
        return Sites(rows, pos, None)
    if pair is not None:
        return Sites(rows, pos, torch.full_like(rows, pair[0]), torch.full_like(rows, pair[1]))
    return Sites(rows, pos, torch.full_like(rows, target_token_id(target, tokenizer, d_vocab)))


def target_token_id(target, tokenizer, d_vocab: int) -> int:
    """A single token id from an integer (int, NumPy / 0-d torch integer) or a string that
    must encode to exactly one token."""
    if not isinstance(target, str | bool | float):
        try:
            target = operator.index(target)
        except TypeError:
            pass
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < d_vocab:
            raise InvalidInputError(f"target id {target} outside the vocabulary 0..{d_vocab - 1}")
        return target
    if isinstance(target, str):
        ids = tokenizer(check_text(target, f"target {target!r}"),
                        add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = tokenizer.convert_ids_to_tokens(ids)
            raise InvalidInputError(
                f"target {target!r} is {len(ids)} tokens {pieces}; give a single token "
                "(mind the leading space, e.g. ' Paris') or a token id")
        return ids[0]
    raise InvalidInputError(
        f"target must be 'next', 'top', a single-token string or a token id, not {target!r}")
