"""What the walkthrough notebooks (`notebooks/`) run on each model they may pick, and their order.

    MODEL = pick_model()                      # $NBTOOLS_NOTEBOOK_MODEL, a cached real model, or "tiny"
    S = sizes("paper_figures", MODEL)         # {"n_rows": 4, "row_len": 128, ...}

Sizes are chosen so that each notebook runs top to bottom in a few minutes on a laptop CPU,
and they are valid for the sweeps on every model a notebook may pick (tests check both):
the embedded model, and any registered real model (fewer rows and prompts: they have far
more heads). A hub id or folder gets the real-model sizes.
"""

from __future__ import annotations

import os

EMBEDDED = "tiny"
ENV = "NBTOOLS_NOTEBOOK_MODEL"

#: The walkthroughs in reading order (file stems in notebooks/) and their titles: each one
#: uses only what the ones before it explained (the README and the docs list them so).
ORDER = {
    "quickstart": "Quickstart: the self-repair Explorer",
    "head_self_repair": "Self-repair of heads",
    "final_layernorm": "The final LayerNorm",
    "anti_erasure": "Anti-erasure neurons",
    "hydra_effect": "The Hydra effect",
    "who_repairs_whom": "Who repairs whom",
    "other_models": "Other models: the hub and NDIF",
    "paper_figures": "Paper figures",
}

#: notebook → {"embedded": sizes on the embedded model, "real": sizes on any other model}.
SIZES = {
    "hydra_effect": {
        # n_prompts: the first N of the 40 embedded factual prompts (None: all);
        # n_sources: resample sources per prompt (15 in the paper; needs n_prompts > n_sources)
        "embedded": dict(n_prompts=None, n_sources=15),
        "real": dict(n_prompts=24, n_sources=15),
    },
    "paper_figures": {
        # head sweep: n_rows corpus rows of row_len tokens; layer sweep: n_prompts, n_sources
        "embedded": dict(n_rows=32, row_len=128, n_prompts=24, n_sources=15),
        "real": dict(n_rows=4, row_len=128, n_prompts=16, n_sources=15),
    },
}


def next_walkthrough(notebook: str) -> str | None:
    """The walkthrough to read after `notebook` (a file stem), None after the last one."""
    names = list(ORDER)
    if notebook not in ORDER:
        from .errors import InvalidInputError

        raise InvalidInputError(f"no walkthrough {notebook!r}; known: {', '.join(names)}")
    at = names.index(notebook) + 1
    return names[at] if at < len(names) else None


def candidates() -> list[str]:
    """Every model a walkthrough picks by itself: the embedded one and each registered one."""
    from .models.registry import REGISTRY

    return [EMBEDDED, *REGISTRY]


def pick_model() -> str:
    """$NBTOOLS_NOTEBOOK_MODEL if set, else the first registered real model in the cache
    (`nbtools fetch <name>` puts one there), else the embedded model."""
    from .models.registry import REGISTRY, cached

    chosen = os.environ.get(ENV)
    if chosen:
        return chosen
    return next((name for name in REGISTRY if cached(name)), EMBEDDED)


def sizes(notebook: str, model: str) -> dict:
    """The sizes `notebook` uses on `model` (a copy: edit it freely)."""
    if notebook not in SIZES:
        from .errors import InvalidInputError

        raise InvalidInputError(f"no sizes for the notebook {notebook!r}; known: "
                                f"{', '.join(SIZES)}")
    return dict(SIZES[notebook]["embedded" if model == EMBEDDED else "real"])
