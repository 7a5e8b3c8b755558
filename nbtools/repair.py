"""Self-repair decomposition (R&N) and compensation (Hydra) from projected activations.

Pure functions over `effects.Dots`: no model, no nnsight. See SPEC §3–4 and
`results.Measurement` for the definitions of every output.
"""

from __future__ import annotations

import torch

from .components import AttnLayer, Head, MLPLayer, Neurons
from .effects import Dots, Terms
from .shapes import Shape


def component_masks(components, shape: Shape):
    """Bool masks of the ablated set: heads [L, H], MLP layers [L], neurons [L, M]."""
    heads = torch.zeros(shape.n_layers, shape.n_heads, dtype=torch.bool)
    mlps = torch.zeros(shape.n_layers, dtype=torch.bool)
    neurons = torch.zeros(shape.n_layers, shape.d_mlp, dtype=torch.bool)
    for c in components:
        if isinstance(c, Head):
            heads[c.layer, c.head] = True
        elif isinstance(c, AttnLayer):
            heads[c.layer] = True
        elif isinstance(c, MLPLayer):
            mlps[c.layer] = True
        elif isinstance(c, Neurons):
            neurons[c.layer, list(c.neurons)] = True
    neurons[mlps] = False  # a whole ablated MLP layer already covers its neurons
    return heads, mlps, neurons


def downstream_masks(components, shape: Shape, parallel: bool):
    """Attention and MLP layers downstream of the earliest ablated component ([L] bool each).

    Attention ablated at m: attention j > m, MLP j ≥ m (j > m in parallel blocks).
    MLP (or neurons) ablated at m: attention and MLP j > m.
    """
    layers = torch.arange(shape.n_layers)
    attn_layers = [c.layer for c in components if isinstance(c, Head | AttnLayer)]
    mlp_layers = [c.layer for c in components if isinstance(c, MLPLayer | Neurons)]
    m_attn = min(attn_layers, default=shape.n_layers)
    m_mlp = min(mlp_layers, default=shape.n_layers)
    if m_attn <= m_mlp:
        first_mlp = m_attn + 1 if parallel else m_attn
        return layers > m_attn, layers >= first_mlp
    return layers > m_mlp, layers > m_mlp


def decompose(components, clean: Dots, ablated: Dots, terms: Terms, shape: Shape,
              parallel: bool, scale: str) -> dict[str, torch.Tensor]:
    """Every Measurement field for one ablation, averaged over the K ablated runs.

    clean: Dots with one run (G=1); ablated: Dots with K runs (one per resample source);
    terms: the sites' fixed terms. scale: "clean" (frozen s) or "recomputed" (s').
    Sandwich-norm families (Dots with branch scales, SPEC §7): every branch write is taken at
    its clean branch scale s_b, and the branch norms' rescaling is the term sr_branch.
    """
    head_set, mlp_set, neuron_set = component_masks(components, shape)
    ablated = _upstream_from_clean(ablated, clean, components, shape, parallel)
    s = clean.scale[0]                                     # [N]
    s_abl = ablated.scale                                  # [K, N]
    s_used = s.expand_as(s_abl) if scale == "clean" else s_abl
    w = _writes(clean, ablated, terms, s, s_used)
    head_c, head_a, mlp_c, mlp_a = w["head_c"], w["head_a"], w["mlp_c"], w["mlp_a"]
    bias_c, bias_a, neuron_c, neuron_a = w["bias_c"], w["bias_a"], w["neuron_c"], w["neuron_a"]
    attn_c = head_c.sum(-1) + bias_c
    attn_a = head_a.sum(-1) + bias_a
    out = {}
    if neuron_c is not None:
        out["neuron_de_clean"] = neuron_c
        out["neuron_de_ablated"] = neuron_a.mean(0)
    direct_c = _ablated_sum(head_c, mlp_c, neuron_c, head_set, mlp_set, neuron_set)
    direct_a = _ablated_sum(head_a, mlp_a, neuron_a, head_set, mlp_set, neuron_set)

    logit_c = clean.resid[0] / s + terms.unembed_bias
    logit_a = ablated.resid / s_abl + terms.unembed_bias
    delta = logit_a - logit_c
    self_repair = delta - (direct_a - direct_c)

    head_free = (head_a - head_c) * ~head_set              # [K, N, L, H]
    mlp_free = (mlp_a - mlp_c) * ~mlp_set                  # [K, N, L]
    if neuron_set.any():
        mlp_free = mlp_free - ((neuron_a - neuron_c) * neuron_set).sum(-1)
    sr_heads = head_free.sum((-1, -2))
    sr_mlp = mlp_free.sum(-1)
    sr_branch_attn, sr_branch_mlp = _branch_rescaling(clean, ablated, attn_a, mlp_a)
    sr_branch = sr_branch_attn.sum(-1) + sr_branch_mlp.sum(-1)
    attn_down, mlp_down = downstream_masks(components, shape, parallel)
    compensation = ((head_free.sum(-1) + bias_a - bias_c) * attn_down).sum(-1) \
        + (mlp_free * mlp_down).sum(-1)

    out.update(
        logit_clean=logit_c,
        logit_ablated=logit_a.mean(0),
        scale_clean=s,
        scale_ablated=s_abl.mean(0),
        head_de_clean=head_c,
        head_de_ablated=head_a.mean(0),
        attn_de_clean=attn_c,
        attn_de_ablated=attn_a.mean(0),
        mlp_de_clean=mlp_c,
        mlp_de_ablated=mlp_a.mean(0),
        attn_bias_de=bias_c,
        mlp_bias_de=w["mlp_bias_c"],
        embed_de=w["embed_c"],
        unembed_bias=terms.unembed_bias,
        direct_effect=direct_c,
        direct_effect_ablated=direct_a.mean(0),
        delta_logit=delta.mean(0),
        self_repair=self_repair.mean(0),
        self_repair_prime=(delta + direct_c).mean(0),
        sr_heads=sr_heads.mean(0),
        sr_mlp=sr_mlp.mean(0),
        sr_branch=sr_branch.mean(0),
        sr_branch_attn=sr_branch_attn.mean(0),
        sr_branch_mlp=sr_branch_mlp.mean(0),
        sr_ln=(self_repair - sr_heads - sr_mlp - sr_branch).mean(0),
        sr_ln_closed=((1 - s_abl / s) * (logit_a - terms.unembed_bias)).mean(0),
        delta_unembed=direct_c,
        delta_ablate=-delta.mean(0),
        compensation=compensation.mean(0),
    )
    return out


def _writes(clean: Dots, ablated: Dots, terms: Terms, s, s_used) -> dict:
    """Each write's direct effect: "head_c" [N, L, H] / "head_a" [K, N, L, H], "mlp_*",
    "bias_*" (the attention biases, per layer), "neuron_*" (None without neurons) and the clean
    "mlp_bias_c", "embed_c"; clean writes over s, ablated ones over `s_used`, each branch write
    at its clean branch scale s_b (sandwich norms, SPEC §7)."""
    b_attn = 1.0 if clean.attn_scale is None else clean.attn_scale[0]   # [N, L] clean s_b
    b_mlp = 1.0 if clean.mlp_scale is None else clean.mlp_scale[0]

    def per_site(x, sc, trailing):  # divide [.., N, *trailing] by a scale [.., N]
        return x / sc.reshape(*sc.shape, *([1] * trailing))

    def heads_of(x):  # a branch write at the clean branch scale: [.., N, L, H] / s_b
        return x if clean.attn_scale is None else x / b_attn[..., None]

    w = dict(head_c=per_site(heads_of(clean.head[0]), s, 2),
             head_a=per_site(heads_of(ablated.head), s_used, 2),
             mlp_c=per_site(clean.mlp[0] / b_mlp, s, 1),
             mlp_a=per_site(ablated.mlp / b_mlp, s_used, 1),
             bias_c=per_site(terms.attn_bias / b_attn, s, 1),
             bias_a=per_site(terms.attn_bias / b_attn, s_used, 1),
             mlp_bias_c=per_site(terms.mlp_bias / b_mlp, s, 1),
             embed_c=per_site(terms.embed, s, 1), neuron_c=None, neuron_a=None)
    if clean.neuron is not None:
        b_neuron = b_mlp if clean.mlp_scale is None else b_mlp[..., None]
        w["neuron_c"] = per_site(clean.neuron[0] / b_neuron, s, 2)
        w["neuron_a"] = per_site(ablated.neuron / b_neuron, s_used, 2)
    return w


def _ablated_sum(heads, mlps, neurons, head_set, mlp_set, neuron_set):
    """The ablated components' total direct effect [.., N] from per-component DEs."""
    total = (heads * head_set).sum((-1, -2)) + (mlps * mlp_set).sum(-1)
    if neuron_set.any():
        total = total + (neurons * neuron_set).sum((-1, -2))
    return total


def _branch_rescaling(clean: Dots, ablated: Dots, attn_a: torch.Tensor, mlp_a: torch.Tensor):
    """Per layer, SR_branch's parts [K, N, L]: DE(ŵ'_j) · (ρ_j − 1), ρ_j = s_b,j / s'_b,j, for
    the attention and the MLP branches (zeros for families without branch norms).

    attn_a, mlp_a [K, N, L]: each branch's ablated DE at the clean branch scale (DE(ŵ'_j)).
    """
    if clean.attn_scale is None:
        return torch.zeros_like(attn_a), torch.zeros_like(mlp_a)
    rho_attn = clean.attn_scale / ablated.attn_scale
    rho_mlp = clean.mlp_scale / ablated.mlp_scale
    return attn_a * (rho_attn - 1), mlp_a * (rho_mlp - 1)


def _upstream_from_clean(ablated: Dots, clean: Dots, components, shape: Shape,
                         parallel: bool) -> Dots:
    """Ablated-run dots with every component that is neither ablated nor downstream of the
    earliest ablated one (e.g. the other heads of its layer) taken from the clean run: they
    are the same computation, which a suffix run does in other tensor shapes (rounding)."""
    head_set, mlp_set, neuron_set = component_masks(components, shape)
    attn_down, mlp_down = downstream_masks(components, shape, parallel)
    heads_up = ~attn_down[:, None] & ~head_set
    mlp_up = ~mlp_down & ~mlp_set & ~neuron_set.any(-1)  # an MLP with ablated neurons changes
    neuron = ablated.neuron
    if neuron is not None:
        neuron = torch.where(~mlp_down[:, None] & ~neuron_set, clean.neuron, neuron)
    attn_scale, mlp_scale = ablated.attn_scale, ablated.mlp_scale
    if attn_scale is not None:  # a branch norm changes only where its branch does
        attn_up = ~attn_down & ~head_set.any(-1)
        attn_scale = torch.where(attn_up, clean.attn_scale, attn_scale)
        mlp_scale = torch.where(mlp_up, clean.mlp_scale, mlp_scale)
    return Dots(head=torch.where(heads_up, clean.head, ablated.head),
                mlp=torch.where(mlp_up, clean.mlp, ablated.mlp), neuron=neuron,
                resid=ablated.resid, scale=ablated.scale, attn_scale=attn_scale,
                mlp_scale=mlp_scale)


def completeness_gap(dots: Dots, terms: Terms) -> torch.Tensor:
    """|Σ_c (o_c · u) − r · u| per run and site [G, N]: zero when the dots account for r.

    (MLP dots are of the whole MLP output, so its bias is already included; a branch write
    counts at its own run's branch scale.) Used to check that every intervention really
    reached the model: if a write were silently dropped, the saved (ablated) activations
    would not sum to the final residual.
    """
    attn = dots.head.sum(-1) + terms.attn_bias
    mlp = dots.mlp
    if dots.attn_scale is not None:
        attn, mlp = attn / dots.attn_scale, mlp / dots.mlp_scale
    total = attn.sum(-1) + mlp.sum(-1) + terms.embed.sum(-1)
    return (total - dots.resid).abs()
