"""Jupyter widgets for self-repair: the live `Explorer` and the panels it is built from.

    from nbtools.widgets import Explorer
    Explorer(prompt="The Eiffel Tower is located in the city of")   # the embedded model

Standalone panels (each also has `from_measurement(m)`): `HeadGrid`, `TokenStrip`,
`TargetLogit`, `Waterfall`, `NormGauge`, `NeuronTable`, `LayerCurve`, `TopKPredictions`.
`Compare` shows one ablation under two settings (or in two models) side by side.
All are anywidgets with plain-ESM front ends shipped in `static/` (no CDN); they work in
JupyterLab 4 and Notebook 7.

The Explorer's parts: `inputs` (its state checked and turned into one `Lab.measure` call),
`worker` (the one thread that touches the model), `live_sweep` (every component ablated
alone, for the SR colouring and the live repair map), `fallback` (the static image kept in
the notebook), `panels` / `export` / `codegen` (a measurement as panel JSON, figures and files,
a reproducing cell).
"""

from .compare import Compare
from .explorer import Explorer
from .export import view_figure
from .panels import measurement_view
from .standalone import (
    HeadGrid,
    LayerCurve,
    NeuronTable,
    NormGauge,
    TargetLogit,
    TokenStrip,
    TopKPredictions,
    Waterfall,
)
from .worker import LatestWins

__all__ = [
    "Compare", "Explorer", "HeadGrid", "LatestWins", "LayerCurve", "NeuronTable", "NormGauge",
    "TargetLogit", "TokenStrip", "TopKPredictions", "Waterfall", "measurement_view",
    "view_figure",
]
