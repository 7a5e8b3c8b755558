"""Distribution-level sweeps: many ablations over a corpus or a prompt set, streamed to
resumable result files.

    from nbtools.sweeps import sweep_heads, sweep_layers, load_result
    heads = sweep_heads(lab, "nltk", n_rows=256, out="heads.safetensors")   # R&N protocol
    layers = sweep_layers(lab, out="layers.safetensors")                     # Hydra protocol
    rmap = repair_map(lab, "nltk", n_rows=64, out="map.safetensors")        # who repairs whom
    load_result("heads.safetensors").stat("self_repair")                     # [L, H]
"""

from __future__ import annotations

from .heads import QUANTITIES, STATISTICS, HeadSweepResult, sweep_heads
from .layers import LayerSweepResult, sweep_layers
from .remote import remote_execution
from .repair_map import RepairMapResult, repair_map
from .rows import corpus_rows, iter_texts
from .store import ResultFileError, peek_kind


def load_result(path) -> HeadSweepResult | LayerSweepResult | RepairMapResult:
    """Load any sweep result file (its kind is read from the file's header)."""
    kind = peek_kind(path)
    if kind == "head_sweep":
        return HeadSweepResult.load(path)
    if kind == "layer_sweep":
        return LayerSweepResult.load(path)
    if kind == "repair_map":
        return RepairMapResult.load(path)
    raise ResultFileError(f"{path} holds an unknown result kind {kind!r}")


__all__ = [
    "QUANTITIES", "STATISTICS", "HeadSweepResult", "LayerSweepResult", "RepairMapResult",
    "ResultFileError", "corpus_rows", "iter_texts", "load_result", "remote_execution",
    "repair_map", "sweep_heads", "sweep_layers",
]
