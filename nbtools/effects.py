"""Direct effects as pure tensor algebra (no nnsight): fold the unembedding, project onto targets.

For a target token y the folded, centred unembedding direction is
``u = Ŵ_U[:, y] − mean_V Ŵ_U`` (``Ŵ_U = diag(γ) W_U``); for LayerNorm it is also centred over
d_model, so that ``o · u = center(o) · Ŵ_U[:, y]`` for any component vector o. A component's
direct effect with frozen scale s* is then ``DE = o · u / s*`` and the centred logit is
``ℓ̂(y) = r · u / s + b̂_U[y]`` (r the final norm's input, s its own scale).
All algebra is float64 (activations are gathered at the measured sites first, so this is
cheap), whatever dtype the model runs in. No float64 (or float32) copy of a big matrix is
kept: `Weights` holds only vectors and per-layer constants, and reads W_U, W_O and W_out from
the model's own parameters, casting only the target columns of W_U, one layer of W_O / W_out
at a time, or the vocabulary a chunk at a time (`cast_each`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .tracing import Activations

if TYPE_CHECKING:
    from .models.adapters import Adapter

CHUNK_ELEMENTS = 2 ** 21  # elements of W_U cast at a time (16 MB in float64)


def cast_each(mats: Iterable[torch.Tensor], dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """Each of `mats` (one shape and layout, the last dim possibly shorter after the first) cast
    to `dtype` into one reused buffer, so each is valid only until the next is drawn.

    A fresh allocation per matrix is several times slower (the allocator hands big blocks back
    to the system and faults them in again). Matrices already in `dtype` pass through.
    """
    buffer = None
    for W in mats:
        if W.dtype == dtype:
            yield W
            continue
        if buffer is None:
            buffer = torch.empty_like(W, dtype=dtype)
        yield buffer[..., :W.shape[-1]].copy_(W)


def vocab_chunks(W_U: torch.Tensor, dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """W_U [d_model, d_vocab] as `dtype` [d_model, ≤ CHUNK_ELEMENTS / d_model] pieces (whole if
    no cast)."""
    if W_U.dtype == dtype:
        return iter([W_U])
    step = max(1, CHUNK_ELEMENTS // W_U.shape[0])
    return cast_each((W_U[:, i:i + step] for i in range(0, W_U.shape[1], step)), dtype)


@dataclass
class Weights:
    """What the algebra needs of the model's weights, family-independent (see models.adapters).

    Kept in float64: the small vectors below. The big matrices (W_U [d_model, d_vocab],
    W_O [n_heads, d_head, d_model] and W_out [d_mlp, d_model] per layer) stay the model's own
    parameters, read through `adapter` in its dtype and cast where they are used
    (`target_directions`, `project_targets`, `full_logits`).
    """

    adapter: Adapter = field(repr=False)
    gamma: torch.Tensor      # [d_model] final norm γ
    W_U_mean: torch.Tensor   # [d_model] mean_V diag(γ) W_U if `centred`, else zeros
    b_U: torch.Tensor        # [d_vocab] folded β·W_U + b_U, centred over vocab if `centred`
    b_O: torch.Tensor        # [n_layers, d_model]
    b_O_folded: torch.Tensor  # [n_layers, d_model] b_O + Σ_h c_h W_O[h] (b_O if c_V is None)
    c_V: torch.Tensor | None  # [n_layers, n_heads, d_head] value constant c_h = (β₁·W_V + b_V)[h]
    b_out: torch.Tensor      # [n_layers, d_model]
    norm: str                # "layernorm" | "rmsnorm"
    eps: float
    centred: bool

    @classmethod
    def from_adapter(cls, adapter, centred: bool = True) -> Weights:
        f64 = torch.float64
        gamma, beta = (x.double() for x in adapter.gamma_beta())
        W_U = adapter.W_U()
        b_U = torch.cat([beta @ w for w in vocab_chunks(W_U, f64)]) + adapter.b_U().double()
        W_U_mean = torch.zeros_like(gamma)
        if centred:
            W_U_mean = gamma * sum(w.sum(1) for w in vocab_chunks(W_U, f64)) / W_U.shape[1]
            b_U = b_U - b_U.mean()
        b_O = adapter.b_O().double()
        c_V = adapter.value_constant()
        c_V = None if c_V is None else c_V.double()
        W_O = cast_each((adapter.W_O(i) for i in range(adapter.shape.n_layers)), f64)
        b_O_folded = b_O if c_V is None else b_O + torch.stack(
            [torch.einsum("he,hed->d", c, W) for c, W in zip(c_V, W_O, strict=True)])
        return cls(adapter=adapter, gamma=gamma, W_U_mean=W_U_mean, b_U=b_U, b_O=b_O,
                   b_O_folded=b_O_folded, c_V=c_V, b_out=adapter.b_out().double(),
                   norm=adapter.norm, eps=adapter.norm_eps(), centred=centred)

    def target_directions(self, targets: torch.Tensor) -> torch.Tensor:
        """u [N, d_model] float64: the folded (centred) unembedding columns of token ids [N]."""
        u = self.gamma * self.adapter.W_U()[:, targets].T.double() - self.W_U_mean
        if self.norm == "layernorm":
            u = u - u.mean(-1, keepdim=True)
        return u

    def attn_bias(self, fold_value_biases: bool) -> torch.Tensor:
        """The attention layer's constant [n_layers, d_model]: b_O, plus Σ_h c_h W_O[h] if folded.

        c_h = (β₁·W_V + b_V)[h] is head h's value constant (see models.adapters).
        """
        return self.b_O_folded if fold_value_biases else self.b_O


def norm_scale(resid: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Final-norm scale s(r) [...] of residual vectors [..., d_model], in float64."""
    r = resid.double()
    if norm == "rmsnorm":
        return torch.sqrt(r.pow(2).mean(-1) + eps)
    return torch.sqrt(r.var(-1, unbiased=False) + eps)


@dataclass
class Projection:
    """Target directions for N measurement sites, shared by the clean and every ablated run.

    u           [N, d_model]            folded unembedding direction of each site's target
    head        [N, n_layers, n_heads, d_head]   W_O[l, h] @ u
    neuron      [N, n_layers, d_mlp] or None     W_out[l] @ u
    attn_bias   [N, n_layers]           attention constant · u (unscaled)
    mlp_bias    [N, n_layers]           MLP output bias · u (unscaled)
    unembed_bias [N]                    b̂_U[y]
    """

    u: torch.Tensor
    head: torch.Tensor
    neuron: torch.Tensor | None
    attn_bias: torch.Tensor
    mlp_bias: torch.Tensor
    unembed_bias: torch.Tensor


def project_targets(weights: Weights, targets: torch.Tensor, fold_value_biases: bool,
                    neurons: bool, minus: torch.Tensor | None = None) -> Projection:
    """Precompute every component's target direction for token ids `targets` [N]; with
    `minus` [N], of the logit difference targets − minus (every quantity is linear in u)."""
    adapter, f64 = weights.adapter, torch.float64
    layers = range(adapter.shape.n_layers)
    u = weights.target_directions(targets)
    unembed_bias = weights.b_U[targets]
    if minus is not None:
        u = u - weights.target_directions(minus)
        unembed_bias = unembed_bias - weights.b_U[minus]
    W_O = cast_each((adapter.W_O(i) for i in layers), f64)
    head = torch.stack([torch.einsum("hed,nd->nhe", W, u) for W in W_O], dim=1)
    neuron = None
    if neurons:
        W_out = cast_each((adapter.W_out(i) for i in layers), f64)
        neuron = torch.stack([u @ W.T for W in W_out], dim=1)
    return Projection(
        u=u,
        head=head,
        neuron=neuron,
        attn_bias=u @ weights.attn_bias(fold_value_biases).T,
        mlp_bias=u @ weights.b_out.T,
        unembed_bias=unembed_bias,
    )


@dataclass
class Dots:
    """Unscaled direct effects (component · u) at N sites, with a leading run axis G.

    head [G, N, L, H], mlp [G, N, L], neuron [G, N, L, M] or None,
    resid [G, N] (final residual · u) and scale [G, N] (the run's own final-norm scale).
    """

    head: torch.Tensor
    mlp: torch.Tensor
    neuron: torch.Tensor | None
    resid: torch.Tensor
    scale: torch.Tensor


def site_values(x: torch.Tensor, n_runs: int, rows: torch.Tensor, pos: torch.Tensor,
                offset: torch.Tensor | None = None) -> torch.Tensor:
    """Gather run-major [n_runs * B, T, ...] at sites (rows, pos [N]) → [n_runs, N, ...].

    With a suffix `offset` [B] (see `nbtools.suffix`) position t of row b is read from slot
    t - offset[b]; a site before its row's offset reads slot 0 and must be replaced by the
    clean value (`before_suffix`).
    """
    x = x.reshape(n_runs, -1, *x.shape[1:])
    if offset is not None:
        pos = (pos - offset[rows]).clamp(min=0)
    return x[:, rows, pos]


def before_suffix(rows: torch.Tensor, pos: torch.Tensor, offset: torch.Tensor | None):
    """Bool [N]: sites before their row's suffix (clean in every ablated run), or None."""
    if offset is None:
        return None
    before = pos < offset[rows]
    return before if before.any() else None


def dot_components(acts: Activations, n_runs: int, rows: torch.Tensor, pos: torch.Tensor,
                   proj: Projection, weights: Weights, fold_value_biases: bool,
                   upstream: Dots | None = None) -> Dots:
    """Project a run's activations at sites (rows [N], pos [N]) onto the target directions.

    `acts` tensors are [n_runs * B, T, ...], run-major. Layers before `acts.first_layer`,
    and sites before a suffix run's offset, are taken from `upstream` (the clean run's
    Dots, broadcast over runs).
    """

    def split(x):
        return site_values(x, n_runs, rows, pos, acts.offset).double()

    first = acts.first_layer
    heads, mlps, neurons = [], [], []
    for i, layer in enumerate(range(first, first + len(acts.z))):
        z = split(acts.z[i])
        if fold_value_biases and weights.c_V is not None:
            z = z - weights.c_V[layer]
        heads.append(torch.einsum("gnhe,nhe->gnh", z, proj.head[:, layer]))
        mlps.append(torch.einsum("gnd,nd->gn", split(acts.mlp_out[i]), proj.u))
        if proj.neuron is not None and acts.neurons:
            neurons.append(split(acts.neurons[i]) * proj.neuron[:, layer])
    head = torch.stack(heads, dim=2)
    mlp = torch.stack(mlps, dim=2)
    neuron = torch.stack(neurons, dim=2) if neurons else None
    if first > 0:
        assert upstream is not None, "an ablated run needs the clean run's upstream dots"
        head = torch.cat([upstream.head[:, :, :first].expand(n_runs, -1, -1, -1), head], dim=2)
        mlp = torch.cat([upstream.mlp[:, :, :first].expand(n_runs, -1, -1), mlp], dim=2)
        if neuron is not None:
            neuron = torch.cat(
                [upstream.neuron[:, :, :first].expand(n_runs, -1, -1, -1), neuron], dim=2)
    resid = split(acts.resid_final)
    dots = Dots(head=head, mlp=mlp, neuron=neuron,
                resid=torch.einsum("gnd,nd->gn", resid, proj.u),
                scale=norm_scale(resid, weights.norm, weights.eps))
    before = before_suffix(rows, pos, acts.offset)
    if before is not None:
        dots = _clean_at(dots, upstream, before)
    return dots


def _clean_at(dots: Dots, clean: Dots, before: torch.Tensor) -> Dots:
    """`dots` with the sites `before` [N] taken from the clean run's Dots."""

    def pick(x, c):
        if x is None:
            return None
        return torch.where(before.reshape(-1, *([1] * (x.dim() - 2))), c, x)

    return Dots(head=pick(dots.head, clean.head), mlp=pick(dots.mlp, clean.mlp),
                neuron=pick(dots.neuron, clean.neuron), resid=pick(dots.resid, clean.resid),
                scale=pick(dots.scale, clean.scale))


def embedding_dots(acts: Activations, rows, pos, proj: Projection) -> torch.Tensor:
    """Unscaled direct effects of the embedding components [N, E] (clean run)."""
    return torch.stack([torch.einsum("nd,nd->n", e[rows, pos].double(), proj.u)
                        for e in acts.embeddings], dim=-1)


def full_logits(resid: torch.Tensor, weights: Weights, dtype=torch.float64) -> torch.Tensor:
    """Logits over the whole vocabulary [..., d_vocab] from final residuals [..., d_model].

    Centred over the vocabulary if the weights are; softmax is unaffected by that.
    γ is applied to the normalised residual x, not to W_U: ``(x ⊙ γ) W_U − x · mean_V Ŵ_U + b̂_U``.
    dtype: float64 (the clean run, once per prompt batch; W_U cast a chunk at a time) or
    float32 (ablated runs: the full-vocabulary product is the expensive part, and only
    log-probabilities use it).
    """
    r = resid.to(dtype)
    if weights.norm == "layernorm":
        r = r - r.mean(-1, keepdim=True)
    x = r / norm_scale(resid, weights.norm, weights.eps).to(dtype)[..., None]
    xg = x * weights.gamma.to(dtype)
    parts = [xg @ w for w in vocab_chunks(weights.adapter.W_U(), dtype)]
    logits = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
    return logits - (x @ weights.W_U_mean.to(dtype))[..., None] + weights.b_U.to(dtype)
