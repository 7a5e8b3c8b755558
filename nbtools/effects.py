"""Direct effects as pure tensor algebra on what a measurement session brings back (no nnsight).

For a target token y the folded, centred unembedding direction is
``u = Ŵ_U[:, y] − mean_V Ŵ_U`` (``Ŵ_U = diag(γ) W_U``); for LayerNorm it is also centred over
d_model, so that ``o · u = center(o) · Ŵ_U[:, y]`` for any component vector o. A component's
direct effect with frozen scale s* is then ``DE = o · u / s*`` and the centred logit is
``ℓ̂(y) = r · u / s + b̂_U[y]`` (r the final norm's input, s its own scale).

The session (`nbtools.tracing.measure_session`) forms u where the model runs and returns only
the dot products ``o · u`` at the measured sites (`Dots`) and the site terms (`Terms`); the
algebra here and in `nbtools.repair` divides them by the right scales. `Weights` holds the
few small constants the session needs (a model's big matrices never leave it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Weights:
    """The small constants of a model (float64), read once by `tracing.constants_session`.

    gamma, beta [d_model]: final norm (γ with its offset applied; β zeros for RMSNorm);
    W_U_mean [d_model]: mean over the vocabulary of the unembedding rows; b_U_mean: of its
    bias (0-d); b_O, b_out [n_layers, d_model]: attention and MLP output biases;
    c_V [n_layers, n_heads, d_head] or None: each head's value constant c_h = (β₁·W_V + b_V)[h];
    c_V_W_O [n_layers, d_model]: Σ_h c_h W_O[h].
    """

    gamma: torch.Tensor
    beta: torch.Tensor
    W_U_mean: torch.Tensor
    b_U_mean: torch.Tensor
    b_O: torch.Tensor
    b_out: torch.Tensor
    c_V: torch.Tensor | None
    c_V_W_O: torch.Tensor

    @classmethod
    def from_session(cls, consts: dict) -> Weights:
        return cls(**{k: consts[k] for k in cls.__dataclass_fields__})

    @property
    def b_O_folded(self) -> torch.Tensor:
        """[n_layers, d_model] b_O + Σ_h c_h W_O[h] (the paper convention's attention bias)."""
        return self.b_O + self.c_V_W_O

    def attn_bias(self, fold_value_biases: bool) -> torch.Tensor:
        """The attention layer's constant [n_layers, d_model]: b_O, plus Σ_h c_h W_O[h] if folded."""
        return self.b_O_folded if fold_value_biases and self.c_V is not None else self.b_O

    def b_U_mean_hat(self) -> torch.Tensor:
        """mean_V of the folded bias b̂_U = β·W_U + b_U (0-d)."""
        return self.beta @ self.W_U_mean + self.b_U_mean


@dataclass
class Terms:
    """What is fixed per site, [N] or [N, ·] (float64): attn_bias, mlp_bias [N, L] (the layers'
    constants · u, unscaled), embed [N, E] (embeddings · u, clean run), unembed_bias [N]
    (b̂_U[y]), u_norm [N] (‖u‖, for the completeness tolerance)."""

    attn_bias: torch.Tensor
    mlp_bias: torch.Tensor
    embed: torch.Tensor
    unembed_bias: torch.Tensor
    u_norm: torch.Tensor


@dataclass
class Dots:
    """Unscaled direct effects (component · u) at N sites, with a leading run axis G.

    head [G, N, L, H], mlp [G, N, L], neuron [G, N, L, M] or None, resid [G, N] (final
    residual · u), scale [G, N] (the run's own final-norm scale). Families with sandwich
    norms also have attn_scale, mlp_scale [G, N, L]: each branch norm's scale s_b (the
    branches' dots are of their raw outputs, weighted by the branch norm's γ̃; see SPEC §7).
    """

    head: torch.Tensor
    mlp: torch.Tensor
    neuron: torch.Tensor | None
    resid: torch.Tensor
    scale: torch.Tensor
    attn_scale: torch.Tensor | None = None
    mlp_scale: torch.Tensor | None = None

    @classmethod
    def from_session(cls, got: dict, run_axis: bool = True) -> Dots:
        """Dots from a session's result for one run group (`run_axis`) or the clean run."""
        def get(name):
            x = got.get(name)
            return x if x is None or run_axis else x[None]
        return cls(head=get("head"), mlp=get("mlp"), neuron=get("neuron"), resid=get("resid"),
                   scale=get("scale"), attn_scale=get("attn_scale"), mlp_scale=get("mlp_scale"))

    def take(self, runs: slice) -> Dots:
        """The runs `runs` of the leading axis."""
        def cut(x):
            return None if x is None else x[runs]
        return Dots(head=self.head[runs], mlp=self.mlp[runs], neuron=cut(self.neuron),
                    resid=self.resid[runs], scale=self.scale[runs],
                    attn_scale=cut(self.attn_scale), mlp_scale=cut(self.mlp_scale))


def with_upstream(dots: Dots, first: int, clean: Dots, before: torch.Tensor | None) -> Dots:
    """Ablated-run dots of layers first.. completed with the clean run's layers before `first`
    (an ablation changes nothing upstream of itself), and with the clean values at the sites
    `before` [N] (bool, or None): sites before their row's suffix, which a suffix run does
    not compute."""
    G = dots.head.shape[0]

    def join(x, c):
        if x is None:
            return None
        if first > 0:
            x = torch.cat([c[:, :, :first].expand(G, *([-1] * (c.dim() - 1))), x], dim=2)
        return x

    out = Dots(head=join(dots.head, clean.head), mlp=join(dots.mlp, clean.mlp),
               neuron=join(dots.neuron, clean.neuron), resid=dots.resid, scale=dots.scale,
               attn_scale=join(dots.attn_scale, clean.attn_scale),
               mlp_scale=join(dots.mlp_scale, clean.mlp_scale))
    if before is None:
        return out

    def pick(x, c):
        if x is None:
            return None
        return torch.where(before.reshape(-1, *([1] * (x.dim() - 2))), c, x)

    return Dots(head=pick(out.head, clean.head), mlp=pick(out.mlp, clean.mlp),
                neuron=pick(out.neuron, clean.neuron), resid=pick(out.resid, clean.resid),
                scale=pick(out.scale, clean.scale),
                attn_scale=pick(out.attn_scale, clean.attn_scale),
                mlp_scale=pick(out.mlp_scale, clean.mlp_scale))


def before_suffix(rows: torch.Tensor, pos: torch.Tensor, offset: torch.Tensor | None):
    """Bool [N]: sites before their row's suffix (clean in every ablated run), or None."""
    if offset is None:
        return None
    before = pos < offset[rows]
    return before if before.any() else None
