"""Layer sweep (Hydra protocol): ablate whole attention / MLP layers at the final position.

    res = sweep_layers(lab, "known", n_prompts=200, out="layers.safetensors")
    res.get("delta_unembed")                      # [P, A]  A = ablations (attn0.., mlp0..)
    res.regression("attn", scale="clean")         # slope, intercept, r2 of CE on Δunembed

Target: the clean run's top token at the final position. Each layer is resample-ablated at
the final position from `n_sources` (15) other prompts of the set — drawn once per prompt
with `seed`, the same for every layer — and the effects are averaged over sources. Both
norm-scale conventions for the ablated run's direct effects are measured (``clean``: R&N's
frozen scale; ``recomputed``: each run's own scale). Results stream to a resumable file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..components import AttnLayer, MLPLayer
from ..errors import InvalidInputError, whole_number
from ..facts import load_facts
from ..lab import SCALES
from ..repair import downstream_masks
from . import store
from .common import batch_bounds
from .engine import Sweep, SweepResult, check_run_options, provenance, run_sweep
from .remote import check_remote

KIND = "layer_sweep"
KINDS = ("attn", "mlp")
PER_SCALE = ("attn_de_ablated", "mlp_de_ablated", "compensation", "self_repair",
             "scale_ablated")


def _ablations(kinds, layers) -> list:
    make = {"attn": AttnLayer, "mlp": MLPLayer}
    return [make[k](layer) for k in kinds for layer in layers]


def source_index(n_prompts: int, n_sources: int, seed: int) -> torch.Tensor:
    """[P, K] indices of the K resample sources of every prompt (never itself), seeded."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.empty(n_prompts, n_sources, dtype=torch.long)
    for i in range(n_prompts):
        others = torch.cat([torch.arange(i), torch.arange(i + 1, n_prompts)])
        index[i] = others[torch.randperm(n_prompts - 1, generator=gen)[:n_sources]]
    return index


def sweep_layers(lab, prompts=None, *, n_sources: int = 15, n_prompts: int | None = None,
                 layers="all", kinds=KINDS, scales=SCALES, batch_prompts: int = 8,
                 forward_rows: int = 128, examples: int = 1, fold_value_biases: bool = True,
                 out=None, overwrite: bool = False, checkpoint_every: float = 30.0,
                 seed: int = 0, progress: bool = True, remote=False) -> LayerSweepResult:
    """Resample-ablate every attention and MLP layer at the final position (Hydra protocol).

    prompts: None (the embedded factual prompts of `nbtools.facts`), "known" (the shared
        ROME known_1000.json), a path to such a file or to a text file (one prompt per
        line), or a list of strings. n_prompts: use the first n.
    n_sources: resample sources per prompt (15 in the paper), drawn from the other prompts.
    layers: "all" or a list of layer indices; kinds: ("attn", "mlp"); scales: norm-scale
        conventions for the ablated run's DEs, any of ("clean", "recomputed").
    batch_prompts: prompts per measured batch (a checkpoint follows each batch);
        forward_rows: most rows (prompt × source × ablation) per traced forward pass.
    examples: how many of the first prompts also keep every source's per-layer DEs (F1/F3).
    out / overwrite / checkpoint_every / remote / progress: as in `sweep_heads`.
    """
    shape = lab.shape
    seed = check_run_options(checkpoint_every, seed)
    if whole_number(batch_prompts, "batch_prompts") < 1:
        raise InvalidInputError(f"batch_prompts must be at least 1, got {batch_prompts}")
    if whole_number(n_sources, "n_sources") < 1:
        raise InvalidInputError(
            f"n_sources must be at least 1 (resample sources per prompt; the paper uses 15), "
            f"got {n_sources}")
    if n_prompts is not None and whole_number(n_prompts, "n_prompts") < 1:
        raise InvalidInputError(f"n_prompts must be at least 1 (or None: all), got {n_prompts}")
    facts = load_facts(prompts, n_prompts)
    texts = [f.prompt for f in facts]
    P = len(texts)
    if P < n_sources + 1:
        raise InvalidInputError(
            f"n_sources={n_sources} needs at least {n_sources + 1} prompts; got {P}")
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise InvalidInputError(f"unknown layer kind(s) {bad}; choose from {', '.join(KINDS)}")
    scales = (scales,) if isinstance(scales, str) else tuple(scales)
    if not scales or any(s not in SCALES for s in scales):
        raise InvalidInputError(f"scales must be a subset of {', '.join(SCALES)}; got {scales}")
    if isinstance(layers, str) and layers != "all":
        raise InvalidInputError(f"layers must be 'all' or a list of layer indices, not {layers!r}")
    layer_list = list(range(shape.n_layers)) if layers == "all" else sorted(
        {whole_number(x, "a layer in layers") for x in layers})
    if not layer_list or any(not 0 <= x < shape.n_layers for x in layer_list):
        raise InvalidInputError(f"layers must be within 0..{shape.n_layers - 1}; got {layers}")
    remote = check_remote(remote)
    batch = lab.tokenize(texts)  # raises for empty / over-long prompts before any forward pass
    ablations = _ablations(kinds, layer_list)
    index = source_index(P, n_sources, seed)
    examples = min(examples, P)
    settings = dict(
        provenance(lab), n_layers=shape.n_layers, parallel=lab.adapter.parallel,
        method="resample", positions="final", target="top (clean run's most likely token)",
        ablation=(f"resample at the final position from {n_sources} other prompts of the set "
                  f"(drawn per prompt with seed {seed}); effects averaged over sources"),
        n_sources=n_sources, n_prompts=P, prompts=texts,
        attributes=[f.attribute for f in facts],
        prompt_source=str(prompts) if prompts is not None else "nbtools.facts.FACTS",
        prompts_digest=store.tensor_digest(batch.input_ids, batch.attention_mask),
        kinds=list(kinds), layers=layer_list, ablations=[str(a) for a in ablations],
        scales=list(scales), batch_prompts=batch_prompts, forward_rows=forward_rows,
        examples=examples, fold_value_biases=fold_value_biases, centred=True, seed=seed,
        definitions={
            "delta_unembed": "Δunembed: DE of the ablated layer on the top token, clean run",
            "delta_ablate": "Δablate = ℓ̂_clean − ℓ̂_abl (a drop is positive)",
            "compensation": "CE = Σ_{attn j>m} ΔDE_j + Σ_{MLP j≥m} ΔDE_j (MLP ablation or "
                            "parallel blocks: MLP j>m)",
            "scale": "clean: ablated DEs use the clean final-norm scale s; recomputed: s'"},
        versions=store.versions())
    common = dict(method="resample", positions="final", target="top",
                  fold_value_biases=fold_value_biases, max_rows=forward_rows, seed=seed)
    sweep = LayerSweep(lab.tokenizer, settings, texts, ablations, scales, index, examples,
                       n_sources, common, batch_bounds(P, batch_prompts), shape.n_layers,
                       f"layer sweep ({lab.name})")
    return run_sweep(lab, sweep, out=out, overwrite=overwrite, checkpoint_every=checkpoint_every,
                     progress=progress, remote=remote)


class LayerSweep(Sweep):
    """The Hydra layer sweep's units: batches of prompts, every layer ablated alone; then
    every source kept separately for the first `examples` prompts."""

    unit = "prompt"

    def __init__(self, tokenizer, settings, texts, ablations, scales, index, examples,
                 n_sources, options, bounds, n_layers, label):
        self.tokenizer, self.settings, self.texts = tokenizer, settings, texts
        self.ablations, self.scales, self.index = ablations, scales, index
        self.examples, self.n_sources, self.options = examples, n_sources, options
        self.bounds, self.n_layers, self.label = bounds, n_layers, label
        self.total = len(texts)

    def empty_state(self):
        return _empty_state(self.total, len(self.ablations), self.n_layers, self.scales,
                            self.index, self.examples, self.n_sources)

    def step(self, lab, state, start, end):
        sources = [[self.texts[j] for j in self.index[i]] for i in range(start, end)]
        return _fill(state, start, end, lab.measure_scales(
            self.texts[start:end], self.ablations, self.scales, sources=sources,
            **self.options))

    def finish(self, lab, state):
        for e in range(int(state["examples_done"]), self.examples):
            state = _fill_example(state, e, lab.measure_scales(
                [self.texts[e]] * self.n_sources, self.ablations, self.scales,
                sources=[[self.texts[j]] for j in self.index[e]], **self.options))
            yield state

    def result(self, state, done, complete):
        return LayerSweepResult.from_state(
            state, self.settings, LayerSweepResult.progress_of(done, self.total, complete),
            self.tokenizer)


def _empty_state(P, A, L, scales, index, examples, K) -> dict[str, torch.Tensor]:
    nan = float("nan")
    state = {"sources": index, "target": torch.full((P,), -1, dtype=torch.long),
             "logit_clean": torch.full((P,), nan, dtype=torch.float64),
             "scale_clean": torch.full((P,), nan, dtype=torch.float64),
             "attn_de_clean": torch.full((P, L), nan, dtype=torch.float64),
             "mlp_de_clean": torch.full((P, L), nan, dtype=torch.float64),
             "delta_unembed": torch.full((P, A), nan, dtype=torch.float64),
             "delta_ablate": torch.full((P, A), nan, dtype=torch.float64),
             "examples_done": torch.tensor(0)}
    for s in scales:
        for name in ("attn_de_ablated", "mlp_de_ablated"):
            state[f"{s}/{name}"] = torch.full((P, A, L), nan, dtype=torch.float64)
            state[f"examples/{s}/{name}"] = torch.full((examples, K, A, L), nan, dtype=torch.float64)
        for name in ("compensation", "self_repair", "scale_ablated"):
            state[f"{s}/{name}"] = torch.full((P, A), nan, dtype=torch.float64)
    return state


def _fill(state, start, end, by_scale: dict) -> dict:
    """A new state with prompts [start, end) filled in from {scale: [Measurement per ablation]}."""
    new = {k: v.clone() if k != "sources" else v for k, v in state.items()}
    sl = slice(start, end)
    for s, ms in by_scale.items():
        m0 = ms[0]
        if not torch.equal(m0.rows, torch.arange(end - start)):
            raise RuntimeError("expected one measured site per prompt (the final position)")
        new["target"][sl] = m0.target_ids
        new["logit_clean"][sl] = m0.logit_clean
        new["scale_clean"][sl] = m0.scale_clean
        new["attn_de_clean"][sl] = m0.attn_de_clean
        new["mlp_de_clean"][sl] = m0.mlp_de_clean
        for a, m in enumerate(ms):
            new["delta_unembed"][sl, a] = m.delta_unembed
            new["delta_ablate"][sl, a] = m.delta_ablate
            new[f"{s}/attn_de_ablated"][sl, a] = m.attn_de_ablated
            new[f"{s}/mlp_de_ablated"][sl, a] = m.mlp_de_ablated
            new[f"{s}/compensation"][sl, a] = m.compensation
            new[f"{s}/self_repair"][sl, a] = m.self_repair
            new[f"{s}/scale_ablated"][sl, a] = m.scale_ablated
    return new


def _fill_example(state, e, by_scale: dict) -> dict:
    new = dict(state)
    for s, ms in by_scale.items():
        for name in ("attn_de_ablated", "mlp_de_ablated"):
            key = f"examples/{s}/{name}"
            t = new[key].clone()
            for a, m in enumerate(ms):
                t[e, :, a] = getattr(m, name)
            new[key] = t
    new["examples_done"] = torch.tensor(e + 1)
    return new


# --- summaries --------------------------------------------------------------------------
def regression(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """Least-squares slope, intercept and R² of y on x (1-D; NaN entries dropped)."""
    keep = torch.isfinite(x) & torch.isfinite(y)
    x, y = x[keep].double(), y[keep].double()
    if x.numel() < 2:
        return float("nan"), float("nan"), float("nan")
    xm, ym = x - x.mean(), y - y.mean()
    sxx, syy, sxy = (xm * xm).sum(), (ym * ym).sum(), (xm * ym).sum()
    slope = sxy / sxx if sxx > 0 else torch.tensor(float("nan"))
    r2 = sxy * sxy / (sxx * syy) if sxx > 0 and syy > 0 else torch.tensor(float("nan"))
    return float(slope), float(y.mean() - slope * x.mean()), float(r2)


def summarise(state: dict, settings: dict) -> dict[str, torch.Tensor]:
    """Per-ablation summaries over the prompts done so far ("stat/..." → [A] or [A, L])."""
    done = torch.isfinite(state["delta_unembed"][:, 0])
    out: dict[str, torch.Tensor] = {"stat/n_prompts": torch.tensor(int(done.sum()))}
    if not done.any():
        return out
    du, da = state["delta_unembed"][done], state["delta_ablate"][done]
    A = du.shape[1]
    out["stat/delta_unembed/mean"] = du.mean(0)
    out["stat/delta_ablate/mean"] = da.mean(0)
    out["stat/share_unembed_gt_ablate"] = (du > da).double().mean(0)
    out["stat/corr_unembed_ablate"] = torch.tensor(
        [regression(du[:, a], da[:, a])[2] ** 0.5 * _sign(du[:, a], da[:, a]) for a in range(A)],
        dtype=torch.float64)
    out["stat/attn_de_clean/mean"] = state["attn_de_clean"][done].mean(0)
    out["stat/mlp_de_clean/mean"] = state["mlp_de_clean"][done].mean(0)
    for s in settings["scales"]:
        ce = state[f"{s}/compensation"][done]
        fits = torch.tensor([regression(du[:, a], ce[:, a]) for a in range(A)], dtype=torch.float64)
        out[f"stat/{s}/compensation/mean"] = ce.mean(0)
        out[f"stat/{s}/ce_slope"] = fits[:, 0]
        out[f"stat/{s}/ce_intercept"] = fits[:, 1]
        out[f"stat/{s}/ce_r2"] = fits[:, 2]
        for name in ("attn", "mlp"):
            delta = state[f"{s}/{name}_de_ablated"][done] - state[f"{name}_de_clean"][done][:, None]
            out[f"stat/{s}/{name}_delta_de/mean"] = delta.mean(0)
    return out


def _sign(x, y) -> float:
    keep = torch.isfinite(x) & torch.isfinite(y)
    x, y = x[keep], y[keep]
    return 1.0 if ((x - x.mean()) * (y - y.mean())).sum() >= 0 else -1.0


# --- the result object ------------------------------------------------------------------
@dataclass
class LayerSweepResult(SweepResult):
    """A layer sweep as labelled arrays.

    Per prompt p and ablation a (a indexes `ablations`, e.g. ["attn0", .., "mlp0", ..]):
    delta_unembed, delta_ablate [P, A]; per scale s: "<s>/compensation", "<s>/self_repair",
    "<s>/scale_ablated" [P, A], "<s>/attn_de_ablated", "<s>/mlp_de_ablated" [P, A, L].
    Clean run: attn_de_clean, mlp_de_clean [P, L], logit_clean, scale_clean, target [P].
    examples/<s>/attn_de_ablated [E, K, A, L]: every source separately, first E prompts.
    stats: per-ablation summaries (see `summarise`). settings: prompts, scales, seed, ...
    """

    state: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]
    settings: dict
    progress: dict = field(default_factory=dict)
    target_tokens: list = field(default_factory=list)

    KIND, DONE_KEY, TOTAL_KEY, STAT_PREFIXES = KIND, "prompts_done", "n_prompts", ("stat/",)

    @classmethod
    def from_state(cls, state, settings, progress, tokenizer=None) -> LayerSweepResult:
        tokens = []
        if tokenizer is not None:
            tokens = [tokenizer.decode([t]) if t >= 0 else None
                      for t in state["target"].tolist()]
        return cls(state=state, stats=summarise(state, settings), settings=settings,
                   progress=progress, target_tokens=tokens)

    @classmethod
    def from_file(cls, tensors, header) -> LayerSweepResult:
        res = cls(state=store.saved_state(tensors), settings=header["settings"],
                  stats={k: v for k, v in tensors.items() if k.startswith(cls.STAT_PREFIXES)},
                  progress=header["progress"], target_tokens=header.get("target_tokens", []))
        return res

    def header(self) -> dict:
        return {**super().header(), "target_tokens": self.target_tokens}

    @property
    def ablations(self) -> list[str]:
        return list(self.settings["ablations"])

    @property
    def n_layers(self) -> int:
        return int(self.settings["n_layers"])

    @property
    def scales(self) -> list[str]:
        return list(self.settings["scales"])

    @property
    def prompts(self) -> list[str]:
        return list(self.settings["prompts"])

    @property
    def done(self) -> torch.Tensor:
        """Bool [P]: prompts measured so far."""
        return torch.isfinite(self.state["delta_unembed"][:, 0])

    def index(self, kind: str, layer: int) -> int:
        """Position of the ablation (kind, layer) on the ablation axis."""
        label = f"{kind}{layer}"
        if label not in self.ablations:
            raise InvalidInputError(f"{label} was not swept; swept: {', '.join(self.ablations)}")
        return self.ablations.index(label)

    def layers_of(self, kind: str) -> list[int]:
        return [int(a[len(kind):]) for a in self.ablations if a.startswith(kind)]

    def get(self, name: str, scale: str | None = None, kind: str | None = None) -> torch.Tensor:
        """An array over the prompts done: [P, A(, L)], or [P, n_layers of kind(, L)] with kind."""
        key = name if scale is None else f"{scale}/{name}"
        if key not in self.state:
            if name in PER_SCALE and scale is None:
                raise InvalidInputError(f"{name} depends on the norm scale: pass scale= one of {self.scales}")
            raise InvalidInputError(f"no array {key!r}; available: {', '.join(sorted(self.state))}")
        x = self.state[key][self.done] if self.state[key].shape[0] == self.done.shape[0] \
            else self.state[key]
        if kind is not None:
            x = x[:, [self.index(kind, layer) for layer in self.layers_of(kind)]]
        return x

    def compensation_split(self, scale: str = "clean", kind: str = "attn"):
        """CE split into downstream attention and MLP parts, each [P, n_layers of kind]."""
        from ..shapes import Shape

        L = self.n_layers
        shape = Shape(L, 1, 1, 1, 1, 1, 1, 1)
        attn_parts, mlp_parts = [], []
        for layer in self.layers_of(kind):
            a = self.index(kind, layer)
            comp = AttnLayer(layer) if kind == "attn" else MLPLayer(layer)
            attn_down, mlp_down = downstream_masks([comp], shape, self.settings["parallel"])
            d_attn = self.get("attn_de_ablated", scale)[:, a] - self.get("attn_de_clean")
            d_mlp = self.get("mlp_de_ablated", scale)[:, a] - self.get("mlp_de_clean")
            if kind == "mlp":
                d_mlp[:, layer] = 0
            attn_parts.append((d_attn * attn_down).sum(-1))
            mlp_parts.append((d_mlp * mlp_down).sum(-1))
        return torch.stack(attn_parts, 1), torch.stack(mlp_parts, 1)

    def gap_split(self, kind: str = "attn", scale: str = "clean") -> dict[str, torch.Tensor]:
        """SPEC §4 (T4): per prompt and ablated layer [P, n_layers of kind], the gap between
        importance by unembedding and by ablation split into its parts, exactly:

            gap = Δunembed − Δablate = DE^abl + CE + SR_LN

        DE^abl: the ablated layer's own DE in the ablated run (the resampled output still
        writing the token: not repair); CE: the downstream components' repair; SR_LN: the
        final norm's (the remainder; with branch norms it also holds SR_branch). Each is the
        mean over the prompt's sources (every part is linear in them). Also "layers"."""
        if kind not in KINDS:
            raise InvalidInputError(f"unknown layer kind {kind!r}; choose from {', '.join(KINDS)}")
        layers = self.layers_of(kind)
        at = torch.arange(len(layers)), torch.tensor(layers)
        own = self.get(f"{kind}_de_ablated", scale, kind)[:, at[0], at[1]]  # [P, n]
        unembed = self.get("delta_unembed", kind=kind)
        # a layer's DE arrays include its constant (bias) term, Δunembed does not: remove it,
        # at the ablated run's scale (the clean one unless scale="recomputed")
        constant = self.get(f"{kind}_de_clean")[:, at[1]] - unembed
        if scale != "clean":
            constant = constant * self.get("scale_clean")[:, None] / self.get(
                "scale_ablated", scale, kind)
        de_abl = own - constant
        gap = unembed - self.get("delta_ablate", kind=kind)
        ce = self.get("compensation", scale, kind)
        return {"layers": torch.tensor(layers), "gap": gap, "de_ablated": de_abl,
                "compensation": ce, "sr_ln": gap - de_abl - ce}

    def gap_table(self, kind: str = "attn", scale: str = "clean", B: int = 1000,
                  seed: int = 0) -> list[dict]:
        """One row per ablated layer: the mean over prompts of each part of `gap_split`, with
        its 95 % bootstrap interval over prompts (seeded), and n (prompts)."""
        from ..stats import interval

        split = self.gap_split(kind, scale)
        rows = []
        for i, layer in enumerate(split["layers"].tolist()):
            row = {"layer": f"{kind}{layer}", "n": int(split["gap"].shape[0])}
            for part in ("gap", "de_ablated", "compensation", "sr_ln"):
                x = split[part][:, i]
                lo, hi = interval(x, torch.ones_like(x), B=B, seed=seed)  # prompts resampled
                row[part] = (float(x.mean()), float(lo), float(hi))
            rows.append(row)
        return rows

    def regression(self, kind: str = "attn", scale: str = "clean") -> dict[str, torch.Tensor]:
        """Per ablated layer: slope, intercept, r2 of CE on Δunembed across prompts."""
        idx = [self.index(kind, layer) for layer in self.layers_of(kind)]
        return {"layers": torch.tensor(self.layers_of(kind)),
                **{n: self.stats[f"stat/{scale}/ce_{n}"][idx] for n in ("slope", "intercept", "r2")}}

    def interval(self, name: str, scale: str | None = None, kind: str = "attn", *,
                 B: int = 1000, seed: int = 0, level: float = 0.95):
        """A 95 % bootstrap interval (prompts resampled, seeded) of the mean over prompts of
        `name` (an array of `get`, e.g. "delta_ablate", or "compensation" with a scale), per
        ablated layer of `kind`: (low, high), each [n_layers of kind]."""
        from ..stats import interval

        x = self.get(name, scale, kind).double()
        if x.dim() != 2:
            raise InvalidInputError(f"{name} is not one number per prompt and layer")
        return interval(x, torch.ones_like(x), B=B, seed=seed, level=level)

    def regression_interval(self, kind: str = "attn", scale: str = "clean", *, B: int = 1000,
                            seed: int = 0, level: float = 0.95) -> dict[str, tuple]:
        """95 % bootstrap intervals (prompts resampled, seeded) of `regression`'s "slope" and
        "r2" per ablated layer of `kind`: {"slope": (low, high), "r2": (low, high)}, each
        [n_layers of kind] — a slope at R² ≈ 0 spans both signs."""
        from ..stats import fit_intervals

        fits = fit_intervals(self.get("delta_unembed", kind=kind),
                             self.get("compensation", scale, kind), B=B, seed=seed, level=level)
        return {"slope": fits["slope"], "r2": fits["r2"]}

    def __repr__(self) -> str:
        s = self.settings
        state = "complete" if self.complete else f"partial: {self.progress.get('prompts_done')} prompts"
        return (f"LayerSweepResult({s['model']}, {s['n_prompts']} prompts × {len(s['ablations'])} "
                f"layer ablations, {s['n_sources']} sources, scales {s['scales']}, {state})")


def hydra_sources(lab, prompt: str, ablation, sources: list[str], *, scale: str = "clean",
                  fold_value_biases: bool = True):
    """One layer ablation of one prompt, one site per resample source (F1/F3 "each resample").

    Returns a Measurement whose N = len(sources) sites are the same prompt's final position,
    each ablated with one source; its mean over sites equals the source-averaged effect.
    """
    return lab.measure([prompt] * len(sources), ablation, method="resample",
                       sources=[[s] for s in sources], positions="final", target="top",
                       scale=scale, fold_value_biases=fold_value_biases)


LayerSweep.result_type = LayerSweepResult
