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

#: Waterfall steps: (key, label). The first is the ablated components' own change in DE, the
#: last the net change in the target logit; the bars in between are the self-repair terms.
WATERFALL_STEPS = (
    ("de_lost", "direct effect lost"),
    ("sr_heads", "downstream heads"),
    ("sr_mlp", "MLPs"),
    ("sr_ln", "final-norm rescaling"),
    ("delta_logit", "net change ΔL"),
)


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


def waterfall_data(m, site: int = 0) -> dict:
    """Self-repair waterfall: DE lost (DE^abl − DE), + downstream heads, + MLPs, + final norm,
    = ΔL. The bars add up exactly: ΔL = (DE^abl − DE) + SR_heads + SR_MLP + SR_LN."""
    values = {
        "de_lost": float(m.direct_effect_ablated[site] - m.direct_effect[site]),
        "sr_heads": float(m.sr_heads[site]), "sr_mlp": float(m.sr_mlp[site]),
        "sr_ln": float(m.sr_ln[site]), "delta_logit": float(m.delta_logit[site]),
    }
    return {
        "steps": [{"key": k, "label": label, "value": num(values[k]),
                   "total": k == "delta_logit"} for k, label in WATERFALL_STEPS],
        "direct_effect": num(m.direct_effect[site]),
        "direct_effect_ablated": num(m.direct_effect_ablated[site]),
        "self_repair": num(m.self_repair[site]),
    }


def gauge_data(m, site: int = 0) -> dict:
    """Final-norm gauge: clean scale s, ablated s', s/s' and the logit change it alone explains."""
    s, s_abl = float(m.scale_clean[site]), float(m.scale_ablated[site])
    return {"s_clean": num(s), "s_ablated": num(s_abl), "ratio": num(s / s_abl),
            "sr_ln": num(m.sr_ln[site]), "sr_ln_closed": num(m.sr_ln_closed[site])}


def neuron_data(m, site: int = 0, k: int = 8, spark_points: int = 96) -> dict:
    """Top-k neurons by ΔDE (anti-erasure: clean DE < 0 and ΔDE > 0) and a sparkline of the
    ΔDE distribution (every neuron's ΔDE sorted descending, downsampled to `spark_points`)."""
    if m.neuron_de_clean is None:
        return {"rows": [], "spark": [], "n_total": 0, "share_top": None}
    rows = m.top_neurons(k, site=site)
    for r in rows:
        r["anti_erasure"] = r["de_clean"] < 0 < r["delta_de"]
        for key in ("delta_de", "de_clean", "de_ablated"):
            r[key] = num(r[key])
    delta = m.neuron_delta_de[site].flatten().double()
    ordered = delta.sort(descending=True).values
    n = ordered.numel()
    if n > spark_points:
        # keep the extremes exactly; sample the middle evenly
        idx = torch.linspace(0, n - 1, spark_points).round().long()
        ordered = ordered[idx]
    total = float(m.sr_mlp[site])
    top = sum(r["delta_de"] or 0.0 for r in rows[:5])
    return {"rows": rows, "spark": nums(ordered), "n_total": int(n),
            "share_top": num(top / total) if abs(total) > 1e-12 else None}


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
