"""Labelled result objects: what one ablation did, at every measured site.

A *site* is one (prompt row, position) pair with a target token; every per-site array has
the sites on its first axis (N). Layer axes are L, heads H, MLP neurons M, embeddings E.
Ablated-run quantities are averaged over resample sources (effects are averaged, not
activations, as in the Hydra paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

SUMMARY_FIELDS = ("direct_effect", "direct_effect_ablated", "delta_logit", "self_repair",
                  "sr_heads", "sr_mlp", "sr_branch", "sr_ln", "sr_ln_closed", "self_repair_prime",
                  "delta_unembed", "delta_ablate", "compensation")


@dataclass
class Measurement:
    """One ablation's effect and self-repair decomposition (SPEC §3–4), per site.

    Sites: rows, positions, target_ids [N] (row = prompt index in the batch, position = the
    token position whose next-token logit is read). minus_ids [N]: for a logit-difference
    target, the subtracted token (every logit and DE is then of target − minus; log-probs and
    top-k are of the target token); None otherwise. `components` is empty for
    `Lab.measure_clean` (nothing ablated).
    Logits are centred over the vocabulary unless settings["centred"] is False.

    Direct effects (scale per settings["scale"]: ablated-run DEs use the clean scale s
    when "clean", the ablated run's own s' when "recomputed"):
      head_de_clean/_ablated [N, L, H], attn_de_clean/_ablated [N, L] (whole attention layer
      incl. its constant), mlp_de_clean/_ablated [N, L], neuron_de_clean/_ablated
      [N, L, M] (if neurons were requested), attn_bias_de, mlp_bias_de [N, L] (constants,
      clean scale), embed_de [N, E], unembed_bias [N] (b̂_U[y]).
    Totals, [N]:
      delta_logit = ΔL = ℓ̂_abl − ℓ̂_clean; direct_effect / direct_effect_ablated = DE of the
      ablated components; self_repair = ΔL − (DE^abl − DE); sr_heads, sr_mlp (downstream
      heads and MLP layers, ablated components excluded); sr_branch (sandwich-norm families,
      SPEC §7: the branch norms' rescaling Σ_j DE(ŵ'_j)(ρ_j − 1); its per-layer parts
      sr_branch_attn, sr_branch_mlp [N, L]; exactly 0 for families without branch norms);
      sr_ln = SR − sr_heads − sr_mlp − sr_branch (the final-norm residual) and
      sr_ln_closed = (1 − s'/s)(ℓ̂_abl − b̂_U[y]) (equal to sr_ln with scale="clean"; with
      "recomputed", sr_ln keeps only the rescaling of the embeddings and attention output
      biases);
      self_repair_prime = ΔL + DE (the variant that assumes DE^abl = 0).
    With logprobs=True: logprob_clean/_ablated [N] of the target (ablated: mean over sources),
      topk_ids/_probs_clean/_ablated [N, k] (ablated: of the source-averaged distribution);
      for models with a final logit softcap (Gemma 2: ℓ = c·tanh(ℓ_raw/c)) also
      logit_capped_clean/_ablated [N], the target's capped logit (not centred; every other
      logit, DE and SR is of the raw logit, where the decomposition is exact: SPEC §7,
      settings["logit"] says which); delta_logit_capped is their difference.
    Hydra (SPEC §4): delta_unembed = DE (clean), delta_ablate = −ΔL, compensation = CE
      (Σ ΔDE of components downstream of the earliest ablated one).
    """

    components: tuple
    rows: torch.Tensor
    positions: torch.Tensor
    target_ids: torch.Tensor
    logit_clean: torch.Tensor
    logit_ablated: torch.Tensor
    scale_clean: torch.Tensor
    scale_ablated: torch.Tensor
    head_de_clean: torch.Tensor
    head_de_ablated: torch.Tensor
    attn_de_clean: torch.Tensor
    attn_de_ablated: torch.Tensor
    mlp_de_clean: torch.Tensor
    mlp_de_ablated: torch.Tensor
    attn_bias_de: torch.Tensor
    mlp_bias_de: torch.Tensor
    embed_de: torch.Tensor
    unembed_bias: torch.Tensor
    direct_effect: torch.Tensor
    direct_effect_ablated: torch.Tensor
    delta_logit: torch.Tensor
    self_repair: torch.Tensor
    self_repair_prime: torch.Tensor
    sr_heads: torch.Tensor
    sr_mlp: torch.Tensor
    sr_branch: torch.Tensor
    sr_branch_attn: torch.Tensor
    sr_branch_mlp: torch.Tensor
    sr_ln: torch.Tensor
    sr_ln_closed: torch.Tensor
    delta_unembed: torch.Tensor
    delta_ablate: torch.Tensor
    compensation: torch.Tensor
    minus_ids: torch.Tensor | None = None
    neuron_de_clean: torch.Tensor | None = None
    neuron_de_ablated: torch.Tensor | None = None
    logprob_clean: torch.Tensor | None = None
    logprob_ablated: torch.Tensor | None = None
    topk_ids_clean: torch.Tensor | None = None
    topk_probs_clean: torch.Tensor | None = None
    topk_ids_ablated: torch.Tensor | None = None
    topk_probs_ablated: torch.Tensor | None = None
    logit_capped_clean: torch.Tensor | None = None
    logit_capped_ablated: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)

    @property
    def n_sites(self) -> int:
        return int(self.rows.numel())

    @property
    def label(self) -> str:
        return "+".join(str(c) for c in self.components) or "clean run"

    @property
    def delta_logit_capped(self) -> torch.Tensor | None:
        """ΔL of the capped logit [N] (softcapped models with logprobs=True), else None."""
        if self.logit_capped_clean is None:
            return None
        return self.logit_capped_ablated - self.logit_capped_clean

    @property
    def head_delta_de(self) -> torch.Tensor:
        """ΔDE of every head [N, L, H] ("who repaired")."""
        return self.head_de_ablated - self.head_de_clean

    @property
    def attn_delta_de(self) -> torch.Tensor:
        """ΔDE of every attention layer [N, L] (Hydra: per downstream layer)."""
        return self.attn_de_ablated - self.attn_de_clean

    @property
    def mlp_delta_de(self) -> torch.Tensor:
        """ΔDE of every MLP layer [N, L] (negative clean DE + positive ΔDE: erasure relaxing)."""
        return self.mlp_de_ablated - self.mlp_de_clean

    @property
    def neuron_delta_de(self) -> torch.Tensor:
        """ΔDE of every MLP neuron [N, L, M]; needs neurons=True at measurement time."""
        if self.neuron_de_clean is None:
            raise ValueError("neuron direct effects were not computed; measure with neurons=True")
        return self.neuron_de_ablated - self.neuron_de_clean

    @property
    def scale_ratio(self) -> torch.Tensor:
        """s / s' [N]: how much the final norm scales every surviving logit up."""
        return self.scale_clean / self.scale_ablated

    def site(self, row: int = 0, position: int | None = None) -> int:
        """Index of the site at (row, position); position None = the row's last site."""
        idx = (self.rows == row).nonzero().flatten()
        if position is not None:
            idx = idx[self.positions[idx] == position]
        if idx.numel() == 0:
            raise KeyError(f"no measured site at row {row}, position {position}")
        return int(idx[-1])

    def top_neurons(self, k: int = 10, site: int | None = None, layer: int | None = None):
        """Top-k MLP neurons by ΔDE (anti-erasure candidates), at one site or averaged over sites.

        Returns a list of dicts: layer, neuron, delta_de, de_clean, de_ablated.
        """
        delta, clean, abl = self.neuron_delta_de, self.neuron_de_clean, self.neuron_de_ablated
        if site is None:
            delta, clean, abl = delta.mean(0), clean.mean(0), abl.mean(0)
        else:
            delta, clean, abl = delta[site], clean[site], abl[site]
        if layer is not None:
            mask = torch.full_like(delta, float("-inf"))
            mask[layer] = 0
            delta = delta + mask
        values, flat = delta.flatten().topk(min(k, delta.numel()))
        n = delta.shape[-1]
        return [{"layer": int(i) // n, "neuron": int(i) % n, "delta_de": float(v),
                 "de_clean": float(clean.flatten()[i]), "de_ablated": float(abl.flatten()[i])}
                for v, i in zip(values, flat, strict=True)]

    def summary(self) -> dict[str, float]:
        """Means over all sites of the scalar quantities (statistic: plain mean)."""
        return {name: float(getattr(self, name).mean()) for name in SUMMARY_FIELDS}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor field by name (for saving, e.g. with safetensors)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)}

    def __repr__(self) -> str:
        s = self.summary()
        return (f"Measurement({self.label}, {self.n_sites} sites, method={self.settings.get('method')}, "
                f"ΔL={s['delta_logit']:+.4f}, DE={s['direct_effect']:+.4f}, SR={s['self_repair']:+.4f} "
                f"[heads {s['sr_heads']:+.4f}, MLP {s['sr_mlp']:+.4f}, LN {s['sr_ln']:+.4f}])")
