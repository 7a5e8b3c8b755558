"""The Explorer's live sweep: every head and MLP layer ablated alone on the current prompt.

    sweeps = LiveSweeps(n_layers, n_heads)
    grid = sweeps.measure_layer(lab, key, prompt, layer, options)   # one layer more
    grid["heads"][layer][h], grid["mlp"][layer]      # SR of each component ablated alone
    sweeps.map_data(key)                             # the live repair map's panel JSON

A sweep depends on everything but the ablation (prompt, position, target, method, source,
positions, scale: its `key`); it is measured one layer per job, so clicks run in between,
with the repair map's own step (`sweeps.repair_map.ablate_each`): the grid's SRs and the
map's rows come from the same measurements. The 16 most recent sweeps are kept.
"""

from __future__ import annotations

import warnings

from ..components import Head, MLPLayer
from ..lru import LRU
from ..sweeps.repair_map import ablate_each
from . import panels


class LiveSweeps:
    """Per key: the grid {"key", "done", "n_layers", "heads" [L][H], "mlp" [L]} (None where
    not measured yet) and the map's rows [L·(H+1)][C] (None likewise)."""

    def __init__(self, n_layers: int, n_heads: int, size: int = 16):
        self.n_layers, self.n_heads = n_layers, n_heads
        self._cache = LRU(size)  # key → (grid, rows)

    def grid(self, key: str) -> dict | None:
        """The sweep of `key` so far, or None if none was started."""
        entry = self._cache.get(key)
        return None if entry is None else entry[0]

    def done(self, key: str) -> int:
        """How many layers of `key`'s sweep are measured."""
        grid = self.grid(key)
        return 0 if grid is None else grid["done"]

    def measure_layer(self, lab, key: str, prompt: str, layer: int, options: dict) -> dict:
        """Measure layer `layer`'s heads and MLP ablated alone (`options`: `Lab.measure`
        keyword arguments) and return the updated grid; a layer already done is not re-run."""
        L, H = self.n_layers, self.n_heads
        grid, rows = self._cache.get(key) or (
            {"key": key, "done": 0, "n_layers": L, "heads": [[None] * H for _ in range(L)],
             "mlp": [None] * L}, [None] * (L * (H + 1)))
        if grid["done"] > layer:
            return grid
        comps = [*(Head(layer, h) for h in range(H)), MLPLayer(layer)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            measured = list(ablate_each(lab, prompt, comps, **options))
        srs = [panels.num(m.self_repair[0]) for _, m, _ in measured]
        heads = [list(row) for row in grid["heads"]]
        heads[layer] = srs[:H]
        mlp = list(grid["mlp"])
        mlp[layer] = srs[H]
        grid = {**grid, "heads": heads, "mlp": mlp, "done": layer + 1}
        rows = list(rows)
        rows[layer * (H + 1):(layer + 1) * (H + 1)] = [panels.nums(cols[0])
                                                       for _, _, cols in measured]
        self._cache.put(key, (grid, rows))
        return grid

    def map_data(self, key: str) -> dict | None:
        """The live map panel's JSON for `key` (the rows measured so far), or None."""
        entry = self._cache.get(key)
        if entry is None:
            return None
        grid, rows = entry
        return panels.live_map_data(rows, self.n_layers, self.n_heads, key=key,
                                    done=grid["done"], total=self.n_layers,
                                    label="this prompt, measured position")
