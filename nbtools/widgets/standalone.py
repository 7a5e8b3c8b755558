"""Panel widgets usable on their own; the Explorer draws the same panels with the same code.

    from nbtools.widgets import HeadGrid, Waterfall
    m = lab.measure("The Eiffel Tower is in", "3.1", target="top", measure_at="final",
                    neurons=True, logprobs=True)
    HeadGrid(values=m.head_de_clean[0], mlp=m.mlp_de_clean[0], on_click=print)
    Waterfall.from_measurement(m)

Numbers are logits (centred over the vocabulary unless the Measurement says otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import traitlets

from . import panels
from .base import NbWidget, finite

_NAME = re.compile(r"^(?:L(\d+)H(\d+)|attn(\d+)|mlp(\d+))$")


def _matrix(value, what: str) -> list[list[float]]:
    """A rectangular, non-empty, finite [rows][cols] list from a tensor, array or lists."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not value:
        raise traitlets.TraitError(f"{what} must be a non-empty 2-D array [layers, heads]")
    rows = []
    for i, row in enumerate(value):
        if hasattr(row, "tolist"):
            row = row.tolist()
        if not isinstance(row, list | tuple) or not row:
            raise traitlets.TraitError(f"{what} must be 2-D [layers, heads]; row {i} is {row!r}")
        rows.append([finite(x, f"{what}[{i}]") for x in row])
    if len({len(r) for r in rows}) != 1:
        raise traitlets.TraitError(f"{what} rows have different lengths {[len(r) for r in rows]}")
    return rows


def _vector(value, what: str, n: int | None = None) -> list[float]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise traitlets.TraitError(f"{what} must be a 1-D array, not {type(value).__name__}")
    out = [finite(x, what) for x in value]
    if n is not None and len(out) != n:
        raise traitlets.TraitError(f"{what} has {len(out)} entries; expected {n} (one per layer)")
    return out


class _Clickable(NbWidget):
    def on_click(self, callback: Callable[[dict], None], remove: bool = False) -> None:
        """Register (or remove) `callback(event)`, called after every click."""
        if remove:
            self._click_handlers.remove(callback)
        else:
            self._click_handlers.append(callback)


class HeadGrid(_Clickable):
    """Layers × heads heat map (diverging colours, 0 = white) with an optional MLP column.

    values: [L, H] numbers (tensor, array or lists), e.g. `m.head_de_clean[0]`.
    mlp: [L] numbers or None (no MLP column). selected: cell names — "L3H1" (a head),
    "attn3" (layer label: the whole attention layer), "mlp3" (an MLP cell).
    on_click(event): event = {"name", "kind": "head" | "attn" | "mlp", "layer", "head"
    (None unless a head), "additive" (shift-click), "selected" (after the click)}.
    selectable: a click updates `selected` as the Explorer does (a plain click selects that
    cell alone, or clears it if it was the only one; shift-click toggles it in the set).
    legend: colour-bar label; vmax: colour scale limit (None = the largest |value|).
    """

    _kind = traitlets.Unicode("grid").tag(sync=True)
    values = traitlets.Any([[0.0]]).tag(sync=True)
    mlp = traitlets.Any(None, allow_none=True).tag(sync=True)
    selected = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    legend = traitlets.Unicode("value").tag(sync=True)
    vmax = traitlets.Float(None, allow_none=True).tag(sync=True)
    selectable = traitlets.Bool(True)

    def __init__(self, values=None, mlp=None, on_click: Callable | None = None, **kwargs):
        if values is not None:
            kwargs["values"] = values
        super().__init__(mlp=mlp, **kwargs)
        if on_click is not None:
            self.on_click(on_click)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.values), len(self.values[0])

    @traitlets.validate("values")
    def _check_values(self, proposal):
        return _matrix(proposal["value"], "values")

    @traitlets.validate("mlp")
    def _check_mlp(self, proposal):
        if proposal["value"] is None:
            return None
        return _vector(proposal["value"], "mlp", len(self.values))

    @traitlets.validate("vmax")
    def _check_vmax(self, proposal):
        v = proposal["value"]
        if v is not None and not finite(v, "vmax") > 0:
            raise traitlets.TraitError(f"vmax must be positive, not {v}")
        return v

    @traitlets.validate("selected")
    def _check_selected(self, proposal):
        for name in proposal["value"]:
            self.parse(name)
        return list(dict.fromkeys(proposal["value"]))

    def parse(self, name: str) -> dict:
        """{"kind", "layer", "head"} of a cell name; TraitError if it is not in this grid."""
        n_layers, n_heads = self.shape
        match = _NAME.match(str(name))
        if not match:
            raise traitlets.TraitError(
                f"{name!r} is not a grid cell; use 'L<layer>H<head>', 'attn<layer>' or 'mlp<layer>'")
        if match[1] is not None:
            kind, layer, head = "head", int(match[1]), int(match[2])
        elif match[3] is not None:
            kind, layer, head = "attn", int(match[3]), None
        else:
            kind, layer, head = "mlp", int(match[4]), None
        if not 0 <= layer < n_layers:
            raise traitlets.TraitError(f"{name}: layer {layer} out of range 0..{n_layers - 1}")
        if head is not None and not 0 <= head < n_heads:
            raise traitlets.TraitError(f"{name}: head {head} out of range 0..{n_heads - 1}")
        if kind == "mlp" and self.mlp is None:
            raise traitlets.TraitError(f"{name}: this grid has no MLP column")
        return {"kind": kind, "layer": layer, "head": head}

    def click(self, name: str, additive: bool = False) -> dict:
        """Act as if the cell `name` were clicked (what the browser calls); returns the event."""
        event = {"name": name, **self.parse(name), "additive": bool(additive)}
        if self.selectable:
            self.selected = toggle(self.selected, name, additive)
        event["selected"] = list(self.selected)
        self._fire(event)
        return event

    def _clicked(self, content: dict) -> None:
        try:
            self.click(content.get("name", ""), bool(content.get("additive")))
        except traitlets.TraitError:
            pass  # a stale click from the browser after the grid changed shape


def toggle(current: list[str], name: str, additive: bool) -> list[str]:
    """The Explorer's click rule: plain click → only `name` (or nothing if it was the only
    selection); additive (shift) click → `name` toggled in the set."""
    current = list(current)
    if additive:
        return [x for x in current if x != name] if name in current else [*current, name]
    return [] if current == [name] else [name]


class TokenStrip(_Clickable):
    """A prompt as clickable tokens. on_click(event): {"position", "token"}; a click sets
    `selected` (−1 means the last token)."""

    _kind = traitlets.Unicode("tokens").tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)

    def __init__(self, tokens=(), on_click: Callable | None = None, **kwargs):
        super().__init__(tokens=list(tokens), **kwargs)
        if on_click is not None:
            self.on_click(on_click)

    @traitlets.validate("selected")
    def _check_selected(self, proposal):
        pos, n = proposal["value"], len(self.tokens)
        if not -1 <= pos < max(n, 1):
            raise traitlets.TraitError(f"selected position {pos} out of range -1..{n - 1}")
        return pos

    def click(self, position: int) -> dict:
        """Act as if token `position` were clicked; returns the event."""
        self.selected = position
        event = {"position": position, "token": self.tokens[position]}
        self._fire(event)
        return event

    def _clicked(self, content: dict) -> None:
        try:
            self.click(int(content.get("position", -1)))
        except (traitlets.TraitError, IndexError, ValueError):
            pass


class _DataPanel(NbWidget):
    """A read-only panel drawn from one JSON dict (`data`)."""

    data = traitlets.Dict().tag(sync=True)

    @classmethod
    def from_measurement(cls, m, site: int = 0, **kwargs):
        """The panel for one site of a Measurement."""
        return cls(data=cls._from_measurement(m, site), **kwargs)

    def show(self, m, site: int = 0) -> None:
        """Redraw from a Measurement."""
        self.data = self._from_measurement(m, site)

    @staticmethod
    def _from_measurement(m, site: int) -> dict:
        raise NotImplementedError


class TargetLogit(_DataPanel):
    """Target token's logit and probability, clean → ablated.

    TargetLogit(token=" Paris", clean=5.1, ablated=3.2, p_clean=0.4, p_ablated=0.1)
    """

    _kind = traitlets.Unicode("logit").tag(sync=True)

    def __init__(self, token: str | None = None, clean=None, ablated=None, p_clean=None,
                 p_ablated=None, token_id: int | None = None, **kwargs):
        if "data" not in kwargs:
            c, a = finite(clean, "clean"), finite(ablated, "ablated")
            probs = [None if p is None else finite(p, "probability") for p in (p_clean, p_ablated)]
            if any(p is not None and not 0 <= p <= 1 for p in probs):
                raise traitlets.TraitError(f"probabilities must lie in [0, 1], not {probs}")
            kwargs["data"] = {"token": token, "id": token_id, "clean": c, "ablated": a,
                              "delta": a - c, "p_clean": probs[0], "p_ablated": probs[1]}
        super().__init__(**kwargs)

    @classmethod
    def from_measurement(cls, m, site: int = 0, tokenizer=None, **kwargs):
        """Pass the Lab's `tokenizer` to show the target token."""
        token = None if tokenizer is None else tokenizer.decode([int(m.target_ids[site])])
        return cls(data=panels.logit_data(m, site, token), **kwargs)

    @staticmethod
    def _from_measurement(m, site):
        return panels.logit_data(m, site)


class Waterfall(_DataPanel):
    """Self-repair waterfall: direct effect lost, + downstream heads, + MLPs, + final norm,
    = net change ΔL (defaults to the sum of the four).

    Waterfall(de_lost=-1.2, sr_heads=0.3, sr_mlp=0.2, sr_ln=0.1)
    (sr_branch=: the branch norms' term, a bar of its own, for Gemma-style models)
    """

    _kind = traitlets.Unicode("waterfall").tag(sync=True)

    def __init__(self, de_lost=None, sr_heads=0.0, sr_mlp=0.0, sr_ln=0.0, delta_logit=None,
                 sr_branch=None, **kwargs):
        if "data" not in kwargs:
            vals = {"de_lost": finite(de_lost, "de_lost"), "sr_heads": finite(sr_heads, "sr_heads"),
                    "sr_mlp": finite(sr_mlp, "sr_mlp"), "sr_ln": finite(sr_ln, "sr_ln")}
            if sr_branch is not None:
                vals["sr_branch"] = finite(sr_branch, "sr_branch")
            vals["delta_logit"] = (sum(vals.values()) if delta_logit is None
                                   else finite(delta_logit, "delta_logit"))
            kwargs["data"] = {"steps": [{"key": k, "label": label, "value": vals[k],
                                         "total": k == "delta_logit"}
                                        for k, label in panels.WATERFALL_STEPS if k in vals]}
        super().__init__(**kwargs)

    @staticmethod
    def _from_measurement(m, site):
        return panels.waterfall_data(m, site)


class NormGauge(_DataPanel):
    """Final-norm gauge: clean scale s, ablated scale s′, s/s′ and the logit change the norm
    alone explains (sr_ln). NormGauge(s_clean=3.2, s_ablated=2.9, sr_ln=0.12)"""

    _kind = traitlets.Unicode("gauge").tag(sync=True)

    def __init__(self, s_clean=None, s_ablated=None, sr_ln=None, **kwargs):
        if "data" not in kwargs:
            s, s_abl = finite(s_clean, "s_clean"), finite(s_ablated, "s_ablated")
            if s <= 0 or s_abl <= 0:
                raise traitlets.TraitError(f"norm scales must be positive, not {s}, {s_abl}")
            kwargs["data"] = {"s_clean": s, "s_ablated": s_abl, "ratio": s / s_abl,
                              "sr_ln": None if sr_ln is None else finite(sr_ln, "sr_ln")}
        super().__init__(**kwargs)

    @staticmethod
    def _from_measurement(m, site):
        return panels.gauge_data(m, site)


class NeuronTable(_DataPanel):
    """Top MLP neurons by ΔDE (anti-erasure: clean DE < 0 and ΔDE > 0) with a sparkline of
    the ΔDE distribution.

    NeuronTable(rows=[{"layer": 5, "neuron": 12, "de_clean": -0.3, "de_ablated": -0.1}],
                distribution=all_delta_de)
    """

    _kind = traitlets.Unicode("neurons").tag(sync=True)

    def __init__(self, rows=None, distribution=None, **kwargs):
        if "data" not in kwargs:
            out = []
            for i, r in enumerate(rows or []):
                try:
                    c, a = finite(r["de_clean"], "de_clean"), finite(r["de_ablated"], "de_ablated")
                    layer, neuron = int(r["layer"]), int(r["neuron"])
                except (KeyError, TypeError) as err:
                    raise traitlets.TraitError(
                        f"row {i} needs layer, neuron, de_clean and de_ablated ({err})") from None
                out.append({"layer": layer, "neuron": neuron, "de_clean": c, "de_ablated": a,
                            "delta_de": a - c, "anti_erasure": c < 0 < a - c})
            spark = sorted((finite(x, "distribution") for x in (distribution or [])), reverse=True)
            ae = [r["delta_de"] for r in out if r["anti_erasure"]]
            kwargs["data"] = {"rows": out, "negative": [], "spark": spark,
                              "n_total": len(spark) or len(out), "n_ae": len(ae),
                              "ae_sum": sum(ae), "top_sum": sum(ae), "sr_mlp": None,
                              "share_top": None}
        super().__init__(**kwargs)

    @staticmethod
    def _from_measurement(m, site):
        return panels.neuron_data(m, site)


class LayerCurve(_DataPanel):
    """Per-layer direct effect, clean vs ablated (Hydra Fig. 1 style), ablated layers shaded.

    LayerCurve(attn_clean=[...], attn_ablated=[...], mlp_clean=[...], mlp_ablated=[...],
               marked_attn=[3])
    """

    _kind = traitlets.Unicode("layers").tag(sync=True)

    def __init__(self, attn_clean=None, attn_ablated=None, mlp_clean=None, mlp_ablated=None,
                 marked_attn=(), marked_mlp=(), scale: str = "clean", **kwargs):
        if "data" not in kwargs:
            ac = _vector(attn_clean, "attn_clean")
            n = len(ac)
            kwargs["data"] = {
                "attn_clean": ac, "attn_ablated": _vector(attn_ablated, "attn_ablated", n),
                "mlp_clean": _vector(mlp_clean if mlp_clean is not None else [], "mlp_clean"),
                "mlp_ablated": _vector(mlp_ablated if mlp_ablated is not None else [], "mlp_ablated"),
                "marked_attn": [int(x) for x in marked_attn],
                "marked_mlp": [int(x) for x in marked_mlp], "scale": scale}
            if len(kwargs["data"]["mlp_clean"]) != len(kwargs["data"]["mlp_ablated"]):
                raise traitlets.TraitError("mlp_clean and mlp_ablated differ in length")
            bad = [x for x in [*marked_attn, *marked_mlp] if not 0 <= int(x) < n]
            if bad:
                raise traitlets.TraitError(f"marked layers {bad} out of range 0..{n - 1}")
        super().__init__(**kwargs)

    @staticmethod
    def _from_measurement(m, site):
        return panels.layer_data(m, site)


class TopKPredictions(_DataPanel):
    """Top-k predictions clean vs ablated: lists of (token, probability); `target` is
    highlighted. TopKPredictions(clean=[(" Paris", .4)], ablated=[(" the", .2)], target=" Paris")
    """

    _kind = traitlets.Unicode("topk").tag(sync=True)

    def __init__(self, clean=(), ablated=(), target: str | None = None, **kwargs):
        if "data" not in kwargs:
            vocab: dict[str, int] = {}

            def rows(pairs, what):
                out = []
                for tok, p in pairs:
                    p = finite(p, f"{what} probability")
                    if not 0 <= p <= 1:
                        raise traitlets.TraitError(f"{what} probability {p} outside [0, 1]")
                    out.append({"id": vocab.setdefault(tok, len(vocab)), "token": tok, "p": p})
                return out

            data = {"clean": rows(clean, "clean"), "ablated": rows(ablated, "ablated")}
            data["target_id"] = vocab.get(target, -1) if target is not None else -1
            kwargs["data"] = data
        super().__init__(**kwargs)

    @classmethod
    def from_measurement(cls, m, site: int = 0, tokenizer=None, **kwargs):
        """Pass the Lab's `tokenizer` to show tokens (otherwise ids, "#123")."""
        return cls(data=panels.topk_data(m, _decoder(tokenizer), site), **kwargs)

    def show(self, m, site: int = 0, tokenizer=None) -> None:
        """Redraw from a Measurement."""
        self.data = panels.topk_data(m, _decoder(tokenizer), site)

    @staticmethod
    def _from_measurement(m, site):
        return panels.topk_data(m, lambda i: f"#{i}", site)


def _decoder(tokenizer):
    if tokenizer is None:
        return lambda i: f"#{i}"
    return lambda i: tokenizer.decode([i])
