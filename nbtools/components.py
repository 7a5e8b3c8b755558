"""What can be ablated: heads, attention layers, MLP layers and MLP neurons.

Components are small immutable values; `parse_components` also accepts the short strings
researchers type ("9.6" or "L9H6" for a head, "attn9", "mlp9", "mlp9:12,40" for neurons).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidInputError, whole_number
from .shapes import Shape


@dataclass(frozen=True, order=True)
class Head:
    """Attention head `head` of layer `layer` (ablated on its slice of z, before W_O)."""

    layer: int
    head: int

    def __post_init__(self):
        object.__setattr__(self, "layer", whole_number(self.layer, "Head layer"))
        object.__setattr__(self, "head", whole_number(self.head, "Head head index"))

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass(frozen=True, order=True)
class AttnLayer:
    """Every head of an attention layer (z of all heads; the output bias b_O stays)."""

    layer: int

    def __post_init__(self):
        object.__setattr__(self, "layer", whole_number(self.layer, "AttnLayer layer"))

    def __str__(self) -> str:
        return f"attn{self.layer}"


@dataclass(frozen=True, order=True)
class MLPLayer:
    """A whole MLP layer's output (including its output bias)."""

    layer: int

    def __post_init__(self):
        object.__setattr__(self, "layer", whole_number(self.layer, "MLPLayer layer"))

    def __str__(self) -> str:
        return f"mlp{self.layer}"


@dataclass(frozen=True, order=True)
class Neurons:
    """Some neurons of an MLP layer (their activations, before the down projection)."""

    layer: int
    neurons: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "layer", whole_number(self.layer, "Neurons layer"))
        neurons = self.neurons
        if isinstance(neurons, str) or not isinstance(neurons, Iterable):
            neurons = [neurons]
        object.__setattr__(self, "neurons",
                           tuple(whole_number(n, "a neuron index") for n in neurons))

    def __str__(self) -> str:
        return f"mlp{self.layer}:" + ",".join(map(str, self.neurons))


Component = Head | AttnLayer | MLPLayer | Neurons

_PATTERNS = [
    (re.compile(r"^(?:L)?(\d+)[.H](\d+)$", re.I), lambda m: Head(int(m[1]), int(m[2]))),
    (re.compile(r"^attn(\d+)$", re.I), lambda m: AttnLayer(int(m[1]))),
    (re.compile(r"^mlp(\d+)$", re.I), lambda m: MLPLayer(int(m[1]))),
    (re.compile(r"^mlp(\d+):([\d,\s]+)$", re.I),
     lambda m: Neurons(int(m[1]), tuple(int(x) for x in m[2].split(",") if x.strip()))),
]


def parse_component(spec) -> Component:
    """One component from an object or a string such as "9.6", "L9H6", "attn3", "mlp5:7,8"."""
    if isinstance(spec, Head | AttnLayer | MLPLayer | Neurons):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        for pattern, make in _PATTERNS:
            match = pattern.match(text)
            if match:
                return make(match)
    raise InvalidInputError(
        f"cannot read {spec!r} as a component; use Head(l, h), AttnLayer(l), MLPLayer(l), "
        "Neurons(l, [n, ...]) or a string like '9.6', 'L9H6', 'attn9', 'mlp9', 'mlp9:12,40'"
    )


def parse_components(spec) -> tuple[Component, ...]:
    """A set of components ablated together, from one component or an iterable of them."""
    if isinstance(spec, str | Head | AttnLayer | MLPLayer | Neurons):
        items = [spec]
    elif isinstance(spec, Iterable):
        items = list(spec)
    else:
        items = [spec]
    if not items:
        raise InvalidInputError("the ablation is empty: name at least one component")
    return tuple(dict.fromkeys(parse_component(x) for x in items))


def check_components(components: Iterable[Component], shape: Shape) -> None:
    """Raise InvalidInputError naming the valid range for any component out of range."""
    for c in components:
        if not 0 <= c.layer < shape.n_layers:
            raise InvalidInputError(
                f"{c}: layer {c.layer} is out of range; this model has layers 0..{shape.n_layers - 1}")
        if isinstance(c, Head) and not 0 <= c.head < shape.n_heads:
            raise InvalidInputError(
                f"{c}: head {c.head} is out of range; layer {c.layer} has heads 0..{shape.n_heads - 1}")
        if isinstance(c, Neurons):
            if not c.neurons:
                raise InvalidInputError(f"{c}: name at least one neuron")
            bad = [n for n in c.neurons if not 0 <= n < shape.d_mlp]
            if bad:
                raise InvalidInputError(
                    f"{c}: neuron(s) {bad} out of range; MLP layers have neurons 0..{shape.d_mlp - 1}")
