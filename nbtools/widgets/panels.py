"""Measurement → compact JSON for each panel (pure functions, no widgets, no model).

Every panel of the Explorer and every standalone widget draws one of these dicts, and the
matplotlib export reads the same dicts, so the browser, the figure and the static fallback
always show the same numbers. `site` indexes the Measurement's sites (0 for the Explorer,
which measures one position).
"""

from __future__ import annotations

import math

import torch

from ..components import AttnLayer, Head, MLPLayer, Neurons

#: Waterfall steps: (key, label). The first is the ablated components' own change in DE (its
#: label follows the sign, see `de_change_label`), the last the net change in the target
#: logit; the bars in between are the self-repair terms.
WATERFALL_STEPS = (
    ("de_lost", "direct effect lost"),
    ("sr_heads", "downstream heads"),
    ("sr_mlp", "MLPs"),
    ("sr_branch", "branch-norm rescaling"),  # only for families with branch norms (Gemma)
    ("sr_ln", "final-norm rescaling"),
    ("delta_logit", "net change ΔL"),
)
#: Families whose branches are normalised before they join the residual stream (SPEC §7).
BRANCH_NORM_FAMILIES = ("gemma",)


def num(x) -> float | None:
    """A JSON-safe float (None for NaN or ±inf)."""
    x = float(x)
    return x if math.isfinite(x) else None


def nums(t) -> list:
    """A nested list of JSON-safe floats from a tensor or nested sequence."""
    if isinstance(t, torch.Tensor):
        t = t.detach().double().tolist()
    if isinstance(t, list | tuple):
        return [nums(x) for x in t]
    return num(t)


def grid_data(m, site: int = 0) -> dict:
    """Head grid values for every colour mode: clean DE, ablated DE and ΔDE of each head
    [L][H], and the same for each MLP layer [L] and whole attention layer [L]."""
    return {
        "de": nums(m.head_de_clean[site]),
        "de_ablated": nums(m.head_de_ablated[site]),
        "delta": nums(m.head_delta_de[site]),
        "mlp_de": nums(m.mlp_de_clean[site]),
        "mlp_de_ablated": nums(m.mlp_de_ablated[site]),
        "mlp_delta": nums(m.mlp_delta_de[site]),
        "attn_de": nums(m.attn_de_clean[site]),
        "attn_delta": nums(m.attn_delta_de[site]),
    }


def logit_data(m, site: int = 0, token: str | None = None) -> dict:
    """Target logit (centred unless settings say otherwise) and probability, clean → ablated."""
    out = {
        "token": token, "id": int(m.target_ids[site]),
        "clean": num(m.logit_clean[site]), "ablated": num(m.logit_ablated[site]),
        "delta": num(m.delta_logit[site]), "p_clean": None, "p_ablated": None,
        "centred": bool(m.settings.get("centred", True)),
    }
    if m.logprob_clean is not None:
        out["p_clean"] = num(m.logprob_clean[site].exp())
        out["p_ablated"] = num(m.logprob_ablated[site].exp())
    return out


def de_change_label(change: float, de: float) -> str:
    """Words for the ablated components' DE^abl − DE: a loss, or (DE < 0) an opposing push
    removed, or a gain."""
    if change <= 0:
        return "direct effect lost"
    return "negative DE removed" if de < 0 else "direct effect gained"


def waterfall_data(m, site: int = 0) -> dict:
    """Self-repair waterfall: DE change (DE^abl − DE), + downstream heads, + MLPs, (+ branch
    norms, for families that have them), + final norm, = ΔL. The bars add up exactly:
    ΔL = (DE^abl − DE) + SR_heads + SR_MLP + SR_branch + SR_LN."""
    values = {
        "de_lost": float(m.direct_effect_ablated[site] - m.direct_effect[site]),
        "sr_heads": float(m.sr_heads[site]), "sr_mlp": float(m.sr_mlp[site]),
        "sr_branch": float(m.sr_branch[site]), "sr_ln": float(m.sr_ln[site]),
        "delta_logit": float(m.delta_logit[site]),
    }
    labels = dict(WATERFALL_STEPS)
    labels["de_lost"] = de_change_label(values["de_lost"], float(m.direct_effect[site]))
    shown = [k for k, _ in WATERFALL_STEPS
             if k != "sr_branch" or m.settings.get("family") in BRANCH_NORM_FAMILIES]
    return {
        "steps": [{"key": k, "label": labels[k], "value": num(values[k]),
                   "total": k == "delta_logit"} for k in shown],
        "direct_effect": num(m.direct_effect[site]),
        "direct_effect_ablated": num(m.direct_effect_ablated[site]),
        "self_repair": num(m.self_repair[site]),
    }


def headline_data(m, site: int = 0) -> dict:
    """The numbers papers quote: SR, the ablated components' clean DE, SR/DE (R&N's share of
    the direct effect that was repaired), ΔL, and SR′ = ΔL + DE (the variant that assumes
    DE^abl = 0) with its share SR′/DE. Shares are None when |DE| < 1e-9."""
    sr, de = float(m.self_repair[site]), float(m.direct_effect[site])
    prime = float(m.self_repair_prime[site])
    share = (lambda x: num(x / de)) if abs(de) >= 1e-9 else (lambda x: None)
    return {"sr": num(sr), "de": num(de), "de_ablated": num(m.direct_effect_ablated[site]),
            "delta_logit": num(m.delta_logit[site]), "sr_prime": num(prime),
            "sr_share": share(sr), "sr_prime_share": share(prime)}


def gauge_data(m, site: int = 0) -> dict:
    """Final-norm gauge: clean scale s, ablated s', s/s' and the logit change it alone explains."""
    s, s_abl = float(m.scale_clean[site]), float(m.scale_ablated[site])
    return {"s_clean": num(s), "s_ablated": num(s_abl), "ratio": num(s / s_abl),
            "sr_ln": num(m.sr_ln[site]), "sr_ln_closed": num(m.sr_ln_closed[site])}


def neuron_data(m, site: int = 0, k: int = 8, spark_points: int = 96,
                n_negative: int = 3) -> dict:
    """Anti-erasure neurons: those that pushed against the target on the clean run (DE < 0)
    and pushed less under the ablation (ΔDE > 0), the top k by ΔDE; the `n_negative` neurons
    with the most negative ΔDE (they worked against the repair); the totals the footer
    quotes; and a sparkline of every neuron's ΔDE (sorted descending, `spark_points` long)."""
    empty = {"rows": [], "negative": [], "spark": [], "n_total": 0, "n_ae": 0, "ae_sum": None,
             "top_sum": None, "sr_mlp": None, "share_top": None}
    if m.neuron_de_clean is None:
        return empty
    clean = m.neuron_de_clean[site].double()
    abl = m.neuron_de_ablated[site].double()
    delta = (abl - clean).flatten()
    clean, abl = clean.flatten(), abl.flatten()
    n_mlp = m.neuron_de_clean.shape[-1]
    ae = (clean < 0) & (delta > 0)

    def rows(idx):
        return [{"layer": int(i) // n_mlp, "neuron": int(i) % n_mlp, "delta_de": num(delta[i]),
                 "de_clean": num(clean[i]), "de_ablated": num(abl[i]),
                 "anti_erasure": bool(ae[i])} for i in idx.tolist()]

    n_ae = int(ae.sum())
    top = torch.where(ae, delta, torch.tensor(float("-inf"), dtype=delta.dtype))
    top_idx = top.topk(min(k, n_ae)).indices if n_ae else torch.empty(0, dtype=torch.long)
    neg_vals, neg_idx = delta.topk(min(n_negative, delta.numel()), largest=False)
    ordered = delta.sort(descending=True).values
    n = ordered.numel()
    if n > spark_points:
        # keep the extremes exactly; sample the middle evenly
        ordered = ordered[torch.linspace(0, n - 1, spark_points).round().long()]
    sr_mlp = float(m.sr_mlp[site])
    top_sum = float(delta[top_idx].sum())
    return {"rows": rows(top_idx), "negative": rows(neg_idx[neg_vals < 0]),
            "spark": nums(ordered), "n_total": int(n), "n_ae": n_ae,
            "ae_sum": num(delta[ae].sum()), "top_sum": num(top_sum), "sr_mlp": num(sr_mlp),
            "share_top": num(top_sum / sr_mlp) if abs(sr_mlp) > 1e-12 else None}


def marked_layers(components) -> dict:
    """Which attention / MLP layers an ablation touches (for the per-layer curve)."""
    attn = sorted({c.layer for c in components if isinstance(c, Head | AttnLayer)})
    mlp = sorted({c.layer for c in components if isinstance(c, MLPLayer | Neurons)})
    return {"attn": attn, "mlp": mlp}


def layer_data(m, site: int = 0) -> dict:
    """Per-layer direct effect, clean vs ablated, for attention and MLP layers (Hydra Fig. 1)."""
    marks = marked_layers(m.components)
    return {"attn_clean": nums(m.attn_de_clean[site]), "attn_ablated": nums(m.attn_de_ablated[site]),
            "mlp_clean": nums(m.mlp_de_clean[site]), "mlp_ablated": nums(m.mlp_de_ablated[site]),
            "marked_attn": marks["attn"], "marked_mlp": marks["mlp"],
            "scale": m.settings.get("scale", "clean")}


def topk_data(m, decode, site: int = 0) -> dict:
    """Top-k next-token predictions, clean and ablated; `decode(id) -> str`."""
    if m.topk_ids_clean is None:
        return {"clean": [], "ablated": [], "target_id": int(m.target_ids[site])}

    def rows(ids, probs):
        return [{"id": int(i), "token": decode(int(i)), "p": num(p)}
                for i, p in zip(ids[site].tolist(), probs[site].tolist(), strict=True)]

    return {"clean": rows(m.topk_ids_clean, m.topk_probs_clean),
            "ablated": rows(m.topk_ids_ablated, m.topk_probs_ablated),
            "target_id": int(m.target_ids[site])}


def measurement_view(m, decode, site: int = 0, top_neurons: int = 8) -> dict:
    """Every panel's data for one site of a Measurement."""
    token = decode(int(m.target_ids[site]))
    return {
        "grid": grid_data(m, site),
        "logit": logit_data(m, site, token),
        "headline": headline_data(m, site),
        "waterfall": waterfall_data(m, site),
        "gauge": gauge_data(m, site),
        "neurons": neuron_data(m, site, top_neurons),
        "layers": layer_data(m, site),
        "topk": topk_data(m, decode, site),
        "ablated": [str(c) for c in m.components],
        "settings": {k: v for k, v in m.settings.items() if k != "versions"},
    }


def sweep_grid(measurements, n_layers: int, n_heads: int, site: int = 0) -> dict:
    """Self-repair of each head (and each MLP layer) ablated alone, from a sweep.

    `measurements`: per layer, Head(l, 0..H−1) then MLPLayer(l) (layer-major, H + 1 per
    layer). Returns {"heads": [L][H] SR, "mlp": [L] SR}.
    """
    per = n_heads + 1
    heads = [[num(measurements[layer * per + h].self_repair[site]) for h in range(n_heads)]
             for layer in range(n_layers)]
    mlp = [num(measurements[layer * per + n_heads].self_repair[site])
           for layer in range(n_layers)]
    return {"heads": heads, "mlp": mlp}


#: Prompts longer than this send only the measured position's attention row, not T × T.
ATTENTION_FULL_MAX = 48


def attention_data(pattern, tokens, position: int, layer: int, head: int,
                   full_max: int = ATTENTION_FULL_MAX) -> dict:
    """One head's clean attention pattern [T, T] (rows: query positions, columns: keys) for
    the attention panel: the measured position's row, and the whole matrix up to
    `full_max` tokens (else None; the panel then draws the row as a strip over tokens)."""
    return {"layer": layer, "head": head, "position": position, "tokens": list(tokens),
            "row": nums(pattern[position]),
            "matrix": nums(pattern) if pattern.shape[0] <= full_max else None}


# --- colour scales (the same numbers as static/core.js; a test runs both) ------------------

#: Diverging colour stops from white (0) to the darkest blue (negative) / red (positive).
NEG_STOPS = ((247, 247, 247), (209, 229, 240), (146, 197, 222), (67, 147, 195), (33, 102, 172),
             (5, 48, 97))
POS_STOPS = ((247, 247, 247), (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43),
             (103, 0, 31))
MISSING_RGB = (238, 238, 238)


def _ramp(stops, t: float) -> tuple[int, int, int]:
    x = min(1.0, max(0.0, t)) * (len(stops) - 1)
    i = min(len(stops) - 2, int(math.floor(x)))
    f = x - i
    return tuple(int(math.floor(a + f * (b - a) + 0.5)) for a, b in zip(stops[i], stops[i + 1],
                                                                         strict=True))


def diverging_rgb(v, vmax: float) -> tuple[int, int, int]:
    """(r, g, b) of value v on the symmetric scale [−vmax, vmax]: the square root of |v|/vmax
    picks the shade (small values stay visible), the sign picks red or blue."""
    if v is None or not vmax > 0 or not math.isfinite(v):
        return MISSING_RGB
    t = math.sqrt(min(1.0, abs(v) / vmax)) * 0.92
    return _ramp(NEG_STOPS if v < 0 else POS_STOPS, t)


def robust_vmax(values, outlier: float = 3.0) -> float:
    """A symmetric colour-scale limit for a column of values: the largest |value|, unless it
    is more than `outlier` × the next largest (e.g. MLP0 of many models); then 1.25 × that
    next one, so one layer does not wash out the rest (its cell shows as clipped)."""
    mags = sorted((abs(v) for v in values if v is not None and math.isfinite(v)), reverse=True)
    if not mags or mags[0] == 0:
        return 0.0
    if len(mags) > 1 and mags[1] > 0 and mags[0] > outlier * mags[1]:
        return 1.25 * mags[1]
    return mags[0]


# --- the repair map (who repairs whom) ----------------------------------------------------

def map_row_labels(n_layers: int, n_heads: int) -> list[str]:
    """The live map's rows, in the self-repair sweep's order: each head of layer 0, mlp0, ..."""
    rows = []
    for layer in range(n_layers):
        rows += [str(Head(layer, h)) for h in range(n_heads)] + [str(MLPLayer(layer))]
    return rows


def map_data(rows: list[str], columns: list[str], values: list, row_layers: list[int],
             column_layers: list[int], clip: float = 0.99, **extra) -> dict:
    """The map panel's JSON: row and column labels, values [rows][columns] (a row not yet
    computed is None), each row's and column's layer (the boundaries; LN: n_layers) and the
    colour limit: the `clip` quantile of |ΔDE| over every finite cell (a few large cells, such
    as an MLP0 row, show as clipped instead of washing out the rest)."""
    mags = sorted(abs(v) for row in values if row is not None for v in row
                  if v is not None and math.isfinite(v))
    vmax = mags[min(len(mags) - 1, int(clip * len(mags)))] if mags else 0.0
    return {"rows": rows, "columns": columns, "values": values, "row_layers": row_layers,
            "column_layers": column_layers, "vmax": num(vmax), **extra}


def live_map_data(values: list, n_layers: int, n_heads: int, **extra) -> dict:
    """map_data for the Explorer's live map (rows: `map_row_labels`)."""
    from ..sweeps.repair_map import column_labels

    per = n_heads + 1
    layers = [i // per for i in range(n_layers * per)]
    return map_data(map_row_labels(n_layers, n_heads), column_labels(n_layers, n_heads), values,
                    layers, [*layers, n_layers], source="live", **extra)


def result_map_data(result, selection: str | None = None) -> dict:
    """map_data for a saved `RepairMapResult` (a distribution-level map; rows in the
    Explorer's names, "L3H1" / "attn3" / "mlp3")."""
    from ..components import parse_component

    sel = selection or result.default_selection
    rows = [str(parse_component(r)) for r in result.rows]
    return map_data(rows, result.columns, nums(result.map(sel)), result.row_layers(),
                    result.column_layers(), source="result",
                    label=f"{result.label} · {result.selection_text(sel)}",
                    done=len(rows), total=len(rows), key=f"result:{sel}")
