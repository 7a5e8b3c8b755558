"""nbtools — study self-repair in language models, live in Jupyter, with nnsight.

    import nbtools
    lab = nbtools.load("tiny")            # or "smollm2-135m", a real model (fetched once)
    r = lab.measure("The Eiffel Tower is in", ablate="3.1", method="zero")
    r.self_repair, r.sr_heads, r.sr_mlp, r.sr_ln
"""

from .components import AttnLayer, Head, MLPLayer, Neurons, parse_components
from .errors import InterventionError, InvalidInputError, NbtoolsError, UnsupportedModelError
from .lab import Lab
from .loading import load
from .models import fetch
from .results import Measurement
from .version import __version__ as __version__


def __getattr__(name: str):
    """`nbtools.Explorer` / `nbtools.Compare` import the widgets (the "lab" extra) only when
    first used."""
    if name in ("Compare", "Explorer"):
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'nbtools' has no attribute {name!r}")


__all__ = [
    "AttnLayer", "Compare", "Explorer", "Head", "InterventionError", "InvalidInputError", "Lab",
    "MLPLayer", "Measurement", "NbtoolsError", "Neurons", "UnsupportedModelError", "fetch", "load",
    "parse_components",
]
