"""Side by side: the same ablation under two settings, or in two models, panel by panel.

    Compare(prompt="The Eiffel Tower is located in the city of", ablate="3.1",
            left=dict(method="zero"), right=dict(method="resample", sources=["..."]))
    Compare(ablate="3.1", left=dict(scale="clean"), right=dict(scale="recomputed"))
    Compare("tiny", model_b="path/to/other", ablate="3.1")   # two models: mapped by depth

One head grid (the left model's, coloured by clean DE) picks the ablation; a click ablates
in both sides. Below it, the waterfall, the norm gauge and the top predictions are shown in
pairs, and a table lists every quantity on both sides with their difference (highlighted
where the two disagree by more than `tolerance`). Both sides measure the final position of
the prompt; target "top" (each side's clean top token) or a single-token string.

Two models of different shapes: a component of layer l (of L) maps to layer
round(l · (L′ − 1) / (L − 1)) of the other model (the same relative depth) and head h to
h mod H′; the mapping is written above the panels. Measurements run on the calling thread
(one `Lab.measure` per side per click).
"""

from __future__ import annotations

import html

import ipywidgets

from ..components import AttnLayer, Head, MLPLayer, check_components, parse_components
from ..errors import InvalidInputError
from ..loading import as_lab
from . import panels
from .explorer import DEFAULT_PROMPT
from .standalone import HeadGrid, NormGauge, TopKPredictions, Waterfall

#: Quantities in the differences table: (Measurement field or derived name, label).
ROWS = (("delta_logit", "ΔL (net change)"), ("direct_effect", "DE (clean)"),
        ("direct_effect_ablated", "DE^abl"), ("self_repair", "SR"),
        ("sr_heads", "SR heads"), ("sr_mlp", "SR MLP"), ("sr_ln", "SR LN"),
        ("scale_ratio", "s/s′"), ("p_clean", "p(target) clean"),
        ("p_ablated", "p(target) ablated"))


def map_component(c, shape_a, shape_b):
    """The component of model B at the same relative depth as `c` of model A (head h → h mod H′)."""
    La, Lb = shape_a.n_layers, shape_b.n_layers
    layer = round(c.layer * (Lb - 1) / (La - 1)) if La > 1 else 0
    if isinstance(c, Head):
        return Head(layer, c.head % shape_b.n_heads)
    if isinstance(c, AttnLayer):
        return AttnLayer(layer)
    if isinstance(c, MLPLayer):
        return MLPLayer(layer)
    raise InvalidInputError(f"{c}: Compare maps heads, attention and MLP layers between models")


def _value(m, name: str) -> float:
    if name == "scale_ratio":
        return float(m.scale_ratio[0])
    if name == "p_clean":
        return float(m.logprob_clean[0].exp())
    if name == "p_ablated":
        return float(m.logprob_ablated[0].exp())
    return float(getattr(m, name)[0])


def _same_weights(lab_a, lab_b) -> bool:
    """Two Labs of one model (loaded twice): the same shape and weights' fingerprint."""
    from ..sweeps.store import model_digest

    return lab_a.shape == lab_b.shape and model_digest(lab_a.hf_model) == model_digest(lab_b.hf_model)


def _check_side(lab, side: dict, target) -> None:
    """InvalidInputError for a side's method, scale or target that its Lab would refuse."""
    from ..ablation import METHODS
    from ..batching import target_token_id
    from ..lab import SCALES

    if side.get("method", "zero") not in METHODS:
        raise InvalidInputError(f"unknown method {side['method']!r}; choose from "
                                f"{', '.join(METHODS)}")
    if side.get("scale", "clean") not in SCALES:
        raise InvalidInputError(f"unknown scale {side['scale']!r}; choose from {', '.join(SCALES)}")
    if target != "top":
        target_token_id(target, lab.tokenizer, lab.shape.d_vocab)


class Compare(ipywidgets.VBox):
    """The same ablation under two settings (or in two models), side by side.

    model: the left model (a `Lab` or anything `nbtools.load` takes; default "tiny");
    model_b: a second model for the right side (default: the same Lab). left, right: the
    `Lab.measure` options of each side (method, sources, reference, positions, scale,
    fold_value_biases, centred); default zero vs mean ablation. prompt; ablate: components
    ablated together on the left (mapped by relative depth on the right if the models
    differ); target: "top" or a single-token string; top_k: predictions shown; tolerance:
    differences larger than this (in logits or probability) are highlighted.

    Python API: `ablate(...)`, `measurements` (left, right Measurements or None),
    `differences()` (rows of quantity, left, right, difference), `mapping` (text).
    """

    def __init__(self, model=None, prompt: str = DEFAULT_PROMPT, ablate=None, *, model_b=None,
                 left: dict | None = None, right: dict | None = None, target: str = "top",
                 top_k: int = 5, tolerance: float = 1e-3, tokenizer=None):
        self.lab_a = as_lab(model, tokenizer)
        self.lab_b = self.lab_a if model_b is None else as_lab(model_b)
        self.same_model = self.lab_b is self.lab_a or _same_weights(self.lab_a, self.lab_b)
        self.left = {"method": "zero"} if left is None else dict(left)
        self.right = {"method": "mean"} if right is None else dict(right)
        for side in (self.left, self.right):
            bad = set(side) - {"method", "sources", "n_sources", "reference", "positions",
                               "scale", "fold_value_biases", "centred", "seed"}
            if bad:
                raise InvalidInputError(f"unknown option(s) {sorted(bad)}; a side takes method, "
                                        "sources, n_sources, reference, positions, scale, "
                                        "fold_value_biases, centred, seed")
        if self.same_model and self.left == self.right:
            raise InvalidInputError("both sides have the same settings; change left= or right= "
                                    "(or give model_b=)")
        self.prompt, self.target, self.top_k = prompt, target, int(top_k)
        self.tolerance = float(tolerance)
        # the whole request, both sides, before any forward pass
        for lab, side in ((self.lab_a, self.left), (self.lab_b, self.right)):
            lab.to_str_tokens(prompt)
            _check_side(lab, side, target)
        self.measurements: tuple = (None, None)
        self.mapping = ""
        self.grid = HeadGrid(values=[[0.0] * self.lab_a.n_heads] * self.lab_a.n_layers,
                             mlp=[0.0] * self.lab_a.n_layers, legend="clean DE (left model)",
                             title=f"{self.lab_a.name}: click to ablate in both")
        self.grid.on_click(lambda event: self.ablate(*event["selected"]))
        self.header = ipywidgets.HTML()
        self.table = ipywidgets.HTML()
        self.panels = {side: (Waterfall(data=_blank_waterfall()), NormGauge(s_clean=1, s_ablated=1),
                              TopKPredictions()) for side in ("left", "right")}
        columns = [ipywidgets.VBox([ipywidgets.HTML(f"<b>{self._side_title(side)}</b>"),
                                    *self.panels[side]], layout={"width": "50%"})
                   for side in ("left", "right")]
        super().__init__([self.header, self.grid, ipywidgets.HBox(columns), self.table])
        self.ablate(*([] if ablate is None else
                      [str(c) for c in parse_components(ablate)]))

    def _side_title(self, side: str) -> str:
        lab, opts = (self.lab_a, self.left) if side == "left" else (self.lab_b, self.right)
        text = ", ".join(f"{k}={v!r}" for k, v in opts.items())
        return html.escape(f"{side}: {lab.name} · {text}")

    # --- Python API ---------------------------------------------------------------------
    def ablate(self, *components) -> Compare:
        """Ablate these components together on both sides (no argument: nothing ablated)."""
        comps = parse_components(list(components)) if components else ()
        check_components(comps, self.lab_a.shape)
        comps_b = comps if self.same_model else tuple(
            map_component(c, self.lab_a.shape, self.lab_b.shape) for c in comps)
        if comps_b:
            check_components(comps_b, self.lab_b.shape)
        self.mapping = self._describe_mapping(comps, comps_b)
        if not comps:
            self.measurements = (None, None)
            m_clean = self.lab_a.measure_clean(self.prompt, target=self.target,
                                               measure_at="final", top_k=self.top_k)
            self._show_grid(m_clean, [])
            self.header.value = (f"<div class='nbx-compare-head'>{html.escape(self.mapping)} "
                                 "— click a head, a layer label or an MLP cell</div>")
            self.table.value = ""
            return self
        m_a = self._measure(self.lab_a, comps, self.left)
        m_b = self._measure(self.lab_b, comps_b, self.right)
        self.measurements = (m_a, m_b)
        self._show_grid(m_a, [str(c) for c in comps])
        decode_a = lambda i: self.lab_a.tokenizer.decode([int(i)])  # noqa: E731
        decode_b = lambda i: self.lab_b.tokenizer.decode([int(i)])  # noqa: E731
        for side, m, decode in (("left", m_a, decode_a), ("right", m_b, decode_b)):
            wf, gauge, topk = self.panels[side]
            wf.data = panels.waterfall_data(m)
            gauge.data = panels.gauge_data(m)
            topk.data = panels.topk_data(m, decode)
        self.header.value = f"<div class='nbx-compare-head'>{html.escape(self.mapping)}</div>"
        self.table.value = self._table_html()
        return self

    def differences(self) -> list[dict]:
        """Every compared quantity: name, label, left, right, difference (right − left) and
        whether |difference| > tolerance. Empty while nothing is ablated."""
        m_a, m_b = self.measurements
        if m_a is None:
            return []
        out = []
        for name, label in ROWS:
            a, b = _value(m_a, name), _value(m_b, name)
            out.append({"name": name, "label": label, "left": a, "right": b, "difference": b - a,
                        "differs": abs(b - a) > self.tolerance})
        tok_a = self.lab_a.tokenizer.decode([int(m_a.target_ids[0])])
        tok_b = self.lab_b.tokenizer.decode([int(m_b.target_ids[0])])
        out.append({"name": "target", "label": "target token", "left": tok_a, "right": tok_b,
                    "difference": None, "differs": tok_a != tok_b})
        return out

    # --- helpers ----------------------------------------------------------------------
    def _measure(self, lab, comps, opts):
        return lab.measure(self.prompt, comps, target=self.target, measure_at="final",
                           logprobs=True, top_k=self.top_k, **opts)

    def _show_grid(self, m, selected: list[str]) -> None:
        with self.grid.hold_trait_notifications():
            self.grid.values = m.head_de_clean[0]
            self.grid.mlp = m.mlp_de_clean[0]
            self.grid.selected = selected

    def _describe_mapping(self, comps, comps_b) -> str:
        if self.same_model:
            return f"{self.lab_a.name}: the same ablation under two settings"
        if not comps:
            return (f"two models: {self.lab_a.name} ({self.lab_a.n_layers} layers) ↔ "
                    f"{self.lab_b.name} ({self.lab_b.n_layers} layers); components are mapped "
                    "by relative depth (head h → h mod heads)")
        pairs = ", ".join(f"{a} → {b}" for a, b in zip(comps, comps_b, strict=True))
        depth = ", ".join(f"{c.layer / max(1, self.lab_a.n_layers - 1):.2f}" for c in comps)
        return (f"two models: {self.lab_a.name} ({self.lab_a.n_layers} layers) ↔ "
                f"{self.lab_b.name} ({self.lab_b.n_layers} layers); mapped by relative depth "
                f"{depth}: {pairs}")

    def _table_html(self) -> str:
        rows = []
        for d in self.differences():
            style = " style='background:#fde68a;font-weight:600'" if d["differs"] else ""
            fmt = (lambda x: html.escape(repr(x))) if d["difference"] is None else \
                (lambda x: f"{x:+.4f}")
            diff = "" if d["difference"] is None else f"{d['difference']:+.4f}"
            rows.append(f"<tr data-nb='{d['name']}'{style}><td>{html.escape(d['label'])}</td>"
                        f"<td>{fmt(d['left'])}</td><td>{fmt(d['right'])}</td><td>{diff}</td></tr>")
        return ("<table class='nbx-compare-table'><thead><tr><th>quantity</th><th>left</th>"
                "<th>right</th><th>right − left</th></tr></thead><tbody>" + "".join(rows)
                + "</tbody></table>")


def _blank_waterfall() -> dict:
    return {"steps": [{"key": k, "label": label, "value": 0.0, "total": k == "delta_logit"}
                      for k, label in panels.WATERFALL_STEPS if k != "sr_branch"]}
