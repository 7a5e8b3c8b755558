"""Shared helpers for sweeps: progress bars, batch boundaries, head lists, checkpoint timing."""

from __future__ import annotations

import time
from collections.abc import Iterator

from ..components import Head, parse_component
from ..errors import InvalidInputError


def progress_bar(enabled: bool, total: int, initial: int, desc: str, unit: str):
    """A `tqdm.auto` bar (notebook or terminal), or a silent stand-in when disabled."""
    if not enabled:
        return _Silent()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is in the "lab" extra
        return _Silent()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def batch_bounds(n: int, size: int, min_size: int = 1) -> list[tuple[int, int]]:
    """Consecutive [start, end) chunks of `size`; a last chunk smaller than `min_size` is
    merged into the one before it (resample "shift" needs two rows per batch)."""
    if size < 1:
        raise InvalidInputError(f"batch size must be at least 1, got {size}")
    bounds = [(s, min(n, s + size)) for s in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_size:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def parse_heads(spec, n_layers: int, n_heads: int) -> list[Head]:
    """Heads from "all", a layer wildcard "3.*", or a list / comma string of head specs."""
    if spec is None:
        return []
    if isinstance(spec, str):
        if spec.strip() == "all":
            return [Head(layer, h) for layer in range(n_layers) for h in range(n_heads)]
        spec = [s for s in spec.split(",") if s.strip()]
    heads: list[Head] = []
    for item in spec:
        if isinstance(item, str) and item.strip().endswith(".*"):
            layer = _layer(item.strip()[:-2], n_layers)
            heads.extend(Head(layer, h) for h in range(n_heads))
            continue
        if isinstance(item, tuple | list) and len(item) == 2:
            item = Head(item[0], item[1])
        comp = parse_component(item)
        if not isinstance(comp, Head):
            raise InvalidInputError(f"{item!r} is not an attention head; write heads as '9.6' or 'L9H6'")
        if not (0 <= comp.layer < n_layers and 0 <= comp.head < n_heads):
            raise InvalidInputError(
                f"head {comp} is out of range; this model has layers 0..{n_layers - 1} and "
                f"heads 0..{n_heads - 1}")
        heads.append(comp)
    return sorted(dict.fromkeys(heads))


def _layer(text: str, n_layers: int) -> int:
    text = text.strip().lstrip("Ll")
    if not text.isdigit() or not 0 <= int(text) < n_layers:
        raise InvalidInputError(f"layer {text!r} is out of range; this model has layers 0..{n_layers - 1}")
    return int(text)


class Checkpointer:
    """Decides when to write a checkpoint: every `every` seconds (0 = after every batch)."""

    def __init__(self, every: float):
        self.every = every
        self.last = time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            return True
        return False


def iter_pending(bounds: list[tuple[int, int]], done: int) -> Iterator[tuple[int, int]]:
    """The chunks not yet processed when `done` items are finished."""
    for start, end in bounds:
        if start >= done:
            yield start, end
