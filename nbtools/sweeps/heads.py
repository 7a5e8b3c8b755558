"""Head sweep (R&N protocol): ablate every attention head on a corpus, summarise self-repair.

    res = sweep_heads(lab, "nltk", n_rows=512, method="resample", out="heads.safetensors")
    res.stat("self_repair")                    # [L, H], condensed (top 2% by clean DE), mean
    res.stat("sr_ln", "all", "mean_clipped_ratio")

The corpus is cut into rows of `row_len` tokens; the target is the actual next token at
every position. Resample ablation pairs row i with row i+1 of its batch (wrapping), as in
R&N. For every head two selections are summarised:

* ``condensed`` — the top `top_frac` (2%) of (row, position) sites by the head's clean DE
  over the whole corpus (k = int(top_frac · sites)), kept in a bounded streaming buffer;
* ``all`` — every site, as streamed sums.

Statistics (names say which is which): ``mean``, ``median`` (condensed only),
``ratio_of_means`` = mean(q) / mean(DE_h), ``mean_clipped_ratio`` = mean of clip(q / DE_h)
(default clip [0, 1], the authors' ``percent_*_of_DE``), ``mean_ratio`` = unclipped mean of
q / DE_h. Per-token records (noise plots) and anti-erasure statistics are kept for chosen
heads. Results stream to a resumable, atomically written safetensors file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..ablation import METHODS
from ..components import Head
from ..errors import InvalidInputError, whole_number
from ..lab import SCALES
from . import store
from .common import batch_bounds, parse_heads
from .engine import Sweep, SweepResult, check_run_options, provenance, run_sweep
from .remote import check_remote
from .rows import corpus_rows, describe_corpus
from .topk import merge_topk, top_count

KIND = "head_sweep"
SELECTIONS = ("condensed", "all")

QUANTITIES = {
    "direct_effect": "DE_h: the head's direct effect on the next token, clean run",
    "direct_effect_ablated": "DE_h^abl: the head's direct effect in the ablated run",
    "delta_logit": "ΔL = ℓ̂_abl − ℓ̂_clean of the next token (total effect)",
    "self_repair": "SR = ΔL − (DE_h^abl − DE_h)",
    "sr_heads": "SR_heads = Σ_{h'≠h} ΔDE_h' (downstream heads)",
    "sr_mlp": "SR_MLP = Σ_l ΔDE_MLP_l (MLP layers)",
    "sr_ln": "SR_LN = SR − SR_heads − SR_MLP (final-norm rescaling)",
    "self_repair_prime": "SR' = ΔL + DE_h (assumes DE_h^abl = 0; not the same as SR)",
    "scale_ratio": "s/s' (clean over ablated final-norm scale)",
}
LABELS = {"direct_effect": "DE", "direct_effect_ablated": "DE$^{abl}$", "delta_logit": "ΔL",
          "self_repair": "SR", "sr_heads": "SR$_{heads}$", "sr_mlp": "SR$_{MLP}$",
          "sr_ln": "SR$_{LN}$", "self_repair_prime": "SR′", "scale_ratio": "s/s′"}
RATIO_QUANTITIES = tuple(q for q in QUANTITIES if q not in ("direct_effect", "scale_ratio"))
#: What families with branch norms (Gemma 2/3, SPEC §7) add: the branch norms' rescaling.
BRANCH_QUANTITIES = {
    "sr_branch": "SR_branch = Σ_j DE(ŵ'_j)·(ρ_j − 1) (every branch norm's rescaling)",
    "sr_ln": "SR_LN = SR − SR_heads − SR_MLP − SR_branch (final-norm rescaling)",
}


def quantities_for(branch_norms: bool) -> dict[str, str]:
    """The quantities a head sweep summarises: QUANTITIES, plus SR_branch for models with
    branch norms (where SR_LN is what remains after it)."""
    if not branch_norms:
        return dict(QUANTITIES)
    out = {}
    for name, text in QUANTITIES.items():
        if name == "sr_ln":
            out["sr_branch"] = BRANCH_QUANTITIES["sr_branch"]
        out[name] = BRANCH_QUANTITIES.get(name, text)
    return out


def _ratio_names(quantities) -> tuple[str, ...]:
    return tuple(q for q in quantities if q not in ("direct_effect", "scale_ratio"))
STATISTICS = {
    "mean": "arithmetic mean over the selected sites",
    "median": "median over the selected sites (condensed selection only)",
    "ratio_of_means": "ratio of means: mean(q) / mean(DE_h) over the selected sites",
    "mean_clipped_ratio": "mean of clipped ratios: mean over sites of clip(q / DE_h, lo, hi); "
                          "sites with DE_h = 0 left out (the authors' percent_*_of_DE)",
    "mean_ratio": "mean of unclipped ratios q / DE_h (finite values only; explodes for tiny DE)",
}
THRESHOLDS = (50.0, 10.0, 5.0, 2.5, 1.0)


# --- per-batch measurement ------------------------------------------------------------
def _site_quantities(m, names) -> dict[str, torch.Tensor]:
    """Every summarised quantity (`names`) at each site of one head's Measurement, [N] float64."""
    q = {name: getattr(m, name).double() for name in names if name != "scale_ratio"}
    q["scale_ratio"] = (m.scale_clean / m.scale_ablated).double()
    return q


def _neuron_columns(m, layer: int, n_top: int) -> dict[str, torch.Tensor]:
    """Top-n neurons of one MLP layer by ΔDE at every site: delta, index, de_clean [N, n_top]."""
    clean = m.neuron_de_clean[:, layer].double()
    delta = m.neuron_de_ablated[:, layer].double() - clean
    order = torch.sort(delta, dim=-1, descending=True, stable=True).indices[:, :n_top]
    return {"delta": delta.gather(1, order), "index": order,
            "de_clean": clean.gather(1, order), "all_de_clean": clean, "all_delta": delta}


def _ratio_parts(q: torch.Tensor, de: torch.Tensor, clip: tuple[float, float]):
    """Sums and counts of clipped and unclipped ratios q / de along the last axis."""
    ratio = q / de
    nonzero = de != 0
    finite = torch.isfinite(ratio)
    clipped = torch.where(nonzero, ratio.clamp(*clip), torch.zeros_like(ratio))
    return (clipped.sum(-1), nonzero.sum(-1), torch.where(finite, ratio, 0.0).sum(-1),
            finite.sum(-1))


def _ae_parts(delta, index, de_h, sr_mlp, d_mlp: int, thresholds, clip):
    """Anti-erasure accumulators over sites (axis 1) for A heads.

    delta, index [A, N, n_top] (neurons sorted by ΔDE), de_h, sr_mlp [A, N].
    exceed [A, n_top, X]: sites with DE_h > 0 where the j-th neuron's ΔDE > x% of DE_h;
    n_pos [A]: sites with DE_h > 0; top5 / sr_mlp sums and clipped-ratio parts; recurrence
    [A, M]: how often each neuron is among the top 10.
    """
    pos = de_h > 0
    th = torch.tensor(thresholds, dtype=torch.float64) / 100
    above = delta[..., None] > th * de_h[..., None, None]          # [A, N, n_top, X]
    exceed = (above & pos[..., None, None]).sum(1)
    top5 = delta[..., :5].sum(-1)
    c_sum, c_n, _, _ = _ratio_parts(top5, sr_mlp, clip)
    rec = torch.zeros(delta.shape[0], d_mlp, dtype=torch.long)
    top10 = index[..., :10].reshape(delta.shape[0], -1)
    rec.scatter_add_(1, top10, torch.ones_like(top10))
    return {"exceed": exceed, "n_pos": pos.sum(1), "top5_sum": top5.sum(1),
            "sr_mlp_sum": sr_mlp.sum(1), "top5_clip_sum": c_sum, "top5_clip_n": c_n,
            "recurrence": rec, "n": torch.full((delta.shape[0],), delta.shape[1])}


def _add(state: dict, prefix: str, parts: dict) -> None:
    for name, value in parts.items():
        key = f"{prefix}{name}"
        state[key] = state[key] + value if key in state else value


# --- the sweep --------------------------------------------------------------------------
def sweep_heads(lab, corpus=None, *, method: str = "resample", row_len: int = 128,
                n_rows: int | None = None, heads="all", top_frac: float = 0.02,
                per_token=None, anti_erasure=None, anti_erasure_layer: int = -1,
                n_top_neurons: int = 50, thresholds=THRESHOLDS, clip=(0.0, 1.0),
                batch_rows: int = 8, forward_rows: int = 64, ae_batch_rows: int = 2,
                mean_rows: int = 16,
                scale: str = "clean", fold_value_biases: bool = True, prepend_bos: bool = False,
                out=None, overwrite: bool = False, checkpoint_every: float = 30.0, seed: int = 0,
                progress: bool = True, remote=False) -> HeadSweepResult:
    """Ablate attention heads over a corpus (R&N protocol) and summarise self-repair per head.

    corpus: token rows [R, T] (used as given), or texts / text files / "nltk" (see
        `nbtools.sweeps.rows.iter_texts`) cut into rows of `row_len` tokens; n_rows caps them.
    method: "resample" (row i ← row i+1 of its batch of `batch_rows` rows), "mean" (mean
        over the first `mean_rows` rows' tokens), or "zero".
    heads: "all", a list such as ["9.6", "L10H7"], "3.*", or None (only the per_token and
        anti_erasure heads; every swept head is in the summaries). per_token: heads whose every
        site is recorded. anti_erasure: heads whose MLP neurons in `anti_erasure_layer`
        (default: the last layer) are tracked (top `n_top_neurons` by ΔDE per site; 50, as
        far as R&N's sparsity curves go).
    top_frac: the condensed selection (top 2% of sites by the head's clean DE).
    clip: bounds for the mean of clipped ratios. scale, fold_value_biases: as in
        `Lab.measure_many`. forward_rows: most batch rows per traced forward pass.
        ae_batch_rows: anti-erasure heads are measured this many rows at a time (every
        neuron's DE is [sites, layers, d_mlp]; the pairing of rows is unchanged).
    out: result file (safetensors + JSON header), written atomically every
        `checkpoint_every` seconds and at the end; an existing file from the same settings
        is resumed (a finished one is returned as is), else InvalidInputError unless overwrite.
        The file is locked for the whole run: a second sweep writing it fails at once.
    remote: False, True (NDIF) or "local" (nnsight's local simulation of the remote path).
    Returns a `HeadSweepResult`.
    """
    shape = lab.shape
    seed = check_run_options(checkpoint_every, seed)
    _check_options(method, scale, n_rows, top_frac, clip, batch_rows)
    remote = check_remote(remote)
    chosen = parse_heads(heads, shape.n_layers, shape.n_heads)
    tok_heads = parse_heads(per_token, shape.n_layers, shape.n_heads)
    ae_heads = parse_heads(anti_erasure, shape.n_layers, shape.n_heads)
    all_heads = sorted(set(chosen) | set(tok_heads) | set(ae_heads))
    if not all_heads:
        raise InvalidInputError("no heads to sweep")
    ae_layer = _layer_index(anti_erasure_layer, shape.n_layers, "anti_erasure_layer")
    n_top = min(n_top_neurons, shape.d_mlp)
    rows = _rows(lab, corpus, row_len, n_rows, prepend_bos, method)
    R, T = rows.shape
    n_sites = R * (T - 1)
    k = top_count(n_sites, top_frac)
    reference = rows[:mean_rows] if method == "mean" else None
    settings = _settings(
        lab, rows, reference, dict(
            method=method, corpus=describe_corpus(corpus), prepend_bos=prepend_bos,
            batch_rows=batch_rows, forward_rows=forward_rows, ae_batch_rows=ae_batch_rows,
            heads=all_heads, per_token=tok_heads, anti_erasure=ae_heads,
            anti_erasure_layer=ae_layer, n_top_neurons=n_top, thresholds=thresholds,
            top_frac=top_frac, top_k=k, n_sites=n_sites, clip=clip, scale=scale,
            fold_value_biases=fold_value_biases, seed=seed))
    opts = dict(method=method, scale=scale, fold_value_biases=fold_value_biases,
                max_rows=forward_rows, seed=seed)
    if method == "resample":
        opts["sources"] = "shift"
    if method == "mean":
        opts["reference"] = reference
    sweep = HeadSweep(settings, rows, all_heads, tok_heads, ae_heads, ae_layer, n_top,
                      ae_batch_rows, opts, batch_bounds(R, batch_rows, 2 if method == "resample"
                                                         else 1), f"head sweep ({lab.name}, {method})")
    return run_sweep(lab, sweep, out=out, overwrite=overwrite, checkpoint_every=checkpoint_every,
                     progress=progress, remote=remote)


def _check_options(method, scale, n_rows, top_frac, clip, batch_rows) -> None:
    """InvalidInputError for a sweep option out of its range (before any forward pass)."""
    if method not in METHODS:
        raise InvalidInputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if scale not in SCALES:
        raise InvalidInputError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    if n_rows is not None and whole_number(n_rows, "n_rows") < 1:
        raise InvalidInputError(
            f"n_rows must be at least 1 (or None: every row of the corpus), got {n_rows}")
    if not 0 < top_frac <= 1:
        raise InvalidInputError(f"top_frac must be in (0, 1], got {top_frac}")
    if len(clip) != 2 or clip[0] > clip[1]:
        raise InvalidInputError(f"clip must be (low, high) with low ≤ high, got {clip}")
    check_batch_rows(batch_rows, method)


def _layer_index(layer: int, n_layers: int, name: str) -> int:
    """A layer index (negative from the end) as 0..n_layers−1, else InvalidInputError."""
    if not -n_layers <= layer < n_layers:
        raise InvalidInputError(f"{name} {layer} out of range 0..{n_layers - 1}")
    return layer % n_layers


def _rows(lab, corpus, row_len, n_rows, prepend_bos, method) -> torch.Tensor:
    """The corpus as token rows [R, T], checked against the model and the method."""
    shape = lab.shape
    rows = corpus_rows(lab.tokenizer, corpus, row_len, n_rows, prepend_bos, shape.n_ctx)
    if rows.shape[1] > shape.n_ctx:  # token rows given as they are
        raise InvalidInputError(f"rows of {rows.shape[1]} tokens exceed the context of {shape.n_ctx}")
    if int(rows.max()) >= shape.d_vocab or int(rows.min()) < 0:
        raise InvalidInputError(f"token ids outside the vocabulary 0..{shape.d_vocab - 1}")
    R = rows.shape[0]
    if method == "resample" and R < 2:
        raise InvalidInputError(
            f"resample ablation needs at least two rows (row i ← row i+1); the corpus gave {R}")
    return rows


def check_batch_rows(batch_rows, method: str) -> int:
    """Rows per batch: a whole number ≥ 1, ≥ 2 for resample ablation (row i ← row i+1)."""
    if whole_number(batch_rows, "batch_rows") < (2 if method == "resample" else 1):
        need = "2 for resample ablation (row i takes row i+1 of its batch)" \
            if method == "resample" else "1"
        raise InvalidInputError(f"batch_rows must be at least {need}, got {batch_rows}")
    return int(batch_rows)


class HeadSweep(Sweep):
    """The R&N head sweep's units: batches of corpus rows, every head ablated alone."""

    unit = "row"

    def __init__(self, settings, rows, all_heads, tok_heads, ae_heads, ae_layer, n_top,
                 ae_batch_rows, opts, bounds, label):
        self.settings, self.rows, self.bounds, self.label = settings, rows, bounds, label
        self.total = int(rows.shape[0])
        self.all_heads, self.tok_heads, self.ae_heads = all_heads, tok_heads, ae_heads
        self.ae_layer, self.n_top, self.ae_batch_rows, self.opts = ae_layer, n_top, \
            ae_batch_rows, opts
        self.main_groups: dict[int, list[Head]] = {}
        for h in all_heads:
            if h not in ae_heads:
                self.main_groups.setdefault(h.layer, []).append(h)

    def empty_state(self):
        return _empty_state(self.all_heads, self.tok_heads, self.ae_heads)

    def step(self, lab, state, start, end):
        measured = _measure_batch(lab, self.rows[start:end], self.main_groups, self.ae_heads,
                                  self.ae_layer, self.n_top, self.ae_batch_rows, self.opts,
                                  list(self.settings["quantities"]))
        s = self.settings
        return _updated(state, measured, start, self.all_heads, self.tok_heads, self.ae_heads,
                        s["top_k"], tuple(s["clip"]), s["thresholds"], s["d_mlp"])

    def result(self, state, done, complete):
        return HeadSweepResult.from_state(state, self.settings, self.rows,
                                          HeadSweepResult.progress_of(done, self.total, complete))


def _settings(lab, rows, reference, a: dict) -> dict:
    """Everything that determines the numbers (a resumed run must match it exactly)."""
    if a["method"] == "resample":
        ablation = (f"resample: row i takes row i+1 of its batch of {a['batch_rows']} rows "
                    "(wrapping), same position")
    elif a["method"] == "mean":
        ablation = (f"mean over the {int(reference.numel())} tokens of the corpus' first "
                    f"{reference.shape[0]} rows")
    else:
        ablation = "zero" + (" (heads: their value constant c_h = β₁·W_V + b_V, folded convention)"
                             if a["fold_value_biases"] else "")
    k = a["top_k"]
    return dict(
        provenance(lab), n_layers=lab.shape.n_layers, n_heads=lab.shape.n_heads,
        d_mlp=lab.shape.d_mlp, method=a["method"], ablation=ablation, positions="all",
        target="next token at every position", corpus=a["corpus"],
        corpus_digest=store.tensor_digest(rows), n_rows=int(rows.shape[0]),
        row_len=int(rows.shape[1]), prepend_bos=a["prepend_bos"], n_sites=a["n_sites"],
        batch_rows=a["batch_rows"], forward_rows=a["forward_rows"],
        ae_batch_rows=a["ae_batch_rows"],
        mean_rows=int(reference.shape[0]) if reference is not None else None,
        heads=[str(h) for h in a["heads"]], per_token=[str(h) for h in a["per_token"]],
        anti_erasure=[str(h) for h in a["anti_erasure"]],
        anti_erasure_layer=a["anti_erasure_layer"], n_top_neurons=a["n_top_neurons"],
        thresholds=[float(x) for x in a["thresholds"]], top_frac=a["top_frac"], top_k=k,
        selection=(f"condensed: top {a['top_frac']:.2%} of (row, position) sites by the "
                   f"head's clean DE over the whole corpus (k = int(top_frac · sites) = {k}); "
                   "all: every site"),
        clip=[float(c) for c in a["clip"]], scale=a["scale"],
        fold_value_biases=a["fold_value_biases"], centred=True, seed=a["seed"],
        quantities=quantities_for(lab.adapter.paths["attn_branch"] is not None),
        statistics=STATISTICS,
        sr_definition="SR = ΔL − (DE_abl − DE); self_repair_prime = SR' = ΔL + DE",
        versions=store.versions(),
    )


def _empty_state(all_heads, tok_heads, ae_heads) -> dict[str, torch.Tensor]:
    def ids(hs):
        return torch.tensor([[h.layer, h.head] for h in hs], dtype=torch.long).reshape(-1, 2)
    return {"heads": ids(all_heads), "tok/heads": ids(tok_heads), "ae/heads": ids(ae_heads)}


def _measure_batch(lab, ids, main_groups, ae_heads, ae_layer, n_top, ae_rows, opts,
                   names) -> dict:
    """Quantities [N] per head (and neuron columns for anti-erasure heads) for one batch."""
    per_head: dict[Head, dict] = {}
    sites = None
    for layer in sorted(main_groups):
        heads = main_groups[layer]
        for h, m in zip(heads, lab.measure_many(ids, heads, **opts), strict=True):
            per_head[h] = _site_quantities(m, names)
            sites = sites or (m.rows, m.positions, m.target_ids)
    neurons: dict[Head, dict] = {}
    for h in ae_heads:
        parts = [_measure_neurons(lab, ids, h, start, end, ae_layer, n_top, opts, names)
                 for start, end in batch_bounds(ids.shape[0], ae_rows)]
        per_head[h] = {q: torch.cat([p[0][q] for p in parts]) for q in parts[0][0]}
        neurons[h] = {n: torch.cat([p[1][n] for p in parts]) for n in parts[0][1]}
        sites = sites or tuple(torch.cat([p[2][i] for p in parts]) for i in range(3))
    return {"q": per_head, "neurons": neurons, "sites": sites}


def _measure_neurons(lab, ids, head, start, end, ae_layer, n_top, opts, names):
    """One anti-erasure head on rows [start, end) of a batch, with the batch's pairing of rows
    (resample: row i still takes row i+1 of the whole batch, given as explicit sources)."""
    opts = dict(opts)
    if opts.get("sources") == "shift":
        nxt = [(i + 1) % ids.shape[0] for i in range(start, end)]
        opts["sources"] = [[ids[j].tolist()] for j in nxt]
    m = lab.measure_many(ids[start:end], [head], neurons=True, **opts)[0]
    cols = _neuron_columns(m, ae_layer, n_top)
    cols = {n: cols[n] for n in ("delta", "index", "de_clean", "all_de_clean", "all_delta")}
    return _site_quantities(m, names), cols, (m.rows + start, m.positions, m.target_ids)


def _updated(state, measured, row0, all_heads, tok_heads, ae_heads, k, clip, thresholds,
             d_mlp) -> dict:
    """A new state with one batch folded in (the old state is left untouched)."""
    new = dict(state)
    rows, positions, targets = measured["sites"]
    rows = rows + row0
    names = list(measured["q"][all_heads[0]])
    q = {name: torch.stack([measured["q"][h][name] for h in all_heads]) for name in names}
    S, N = q["direct_effect"].shape
    de = q["direct_effect"]
    _add(new, "all/", {"n": torch.full((S,), N, dtype=torch.long)})
    _add(new, "all/sum/", {name: v.sum(1) for name, v in q.items()})
    for name in _ratio_names(names):
        c_sum, c_n, r_sum, r_n = _ratio_parts(q[name], de, clip)
        _add(new, "all/", {f"clip_sum/{name}": c_sum, f"clip_n/{name}": c_n,
                           f"ratio_sum/{name}": r_sum, f"ratio_n/{name}": r_n})
    site_cols = {"row": rows, "position": positions, "target": targets}
    cols = {**{n: v.expand(S, N) for n, v in site_cols.items()}, **q}
    top = merge_topk(_prefixed(state, "top/"), cols, k, key="direct_effect")
    new.update({f"top/{n}": v for n, v in top.items()})
    if tok_heads:
        idx = torch.tensor([all_heads.index(h) for h in tok_heads])
        for name, v in site_cols.items():
            new[f"tok/{name}"] = _cat(state.get(f"tok/{name}"), v, 0)
        for name, v in q.items():
            new[f"tok/{name}"] = _cat(state.get(f"tok/{name}"), v[idx], 1)
    if ae_heads:
        nc = {name: torch.stack([measured["neurons"][h][name] for h in ae_heads])
              for name in ("delta", "index", "de_clean")}
        a_idx = torch.tensor([all_heads.index(h) for h in ae_heads])
        de_a, srm_a = de[a_idx], q["sr_mlp"][a_idx]
        _add(new, "ae/all/", _ae_parts(nc["delta"], nc["index"], de_a, srm_a, d_mlp, thresholds,
                                       clip))
        full = {name: torch.stack([measured["neurons"][h][name] for h in ae_heads])
                for name in ("all_de_clean", "all_delta")}
        _add(new, "ae/all/", {"neuron_de_clean_sum": full["all_de_clean"].sum(1),
                              "neuron_de_ablated_sum": (full["all_de_clean"]
                                                        + full["all_delta"]).sum(1)})
        ae_cols = {"direct_effect": de_a, "sr_mlp": srm_a, **nc}
        ae_top = merge_topk(_prefixed(state, "ae/top/"), ae_cols, k, key="direct_effect")
        new.update({f"ae/top/{n}": v for n, v in ae_top.items()})
    return new


def _prefixed(state: dict, prefix: str) -> dict | None:
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return out or None


def _cat(old, new, dim):
    return new if old is None else torch.cat([old, new], dim=dim)


# --- summaries --------------------------------------------------------------------------
def summarise(state: dict, settings: dict) -> dict[str, torch.Tensor]:
    """Summary arrays from a sweep state: "stat/<selection>/<quantity>/<statistic>" → [L, H].

    Heads that were not swept are NaN. Also "stat/<selection>/n_sites" [L, H] and the
    anti-erasure summaries "ae/<selection>/..." per anti-erasure head (see `anti_erasure`).
    """
    L, H = settings["n_layers"], settings["n_heads"]
    heads = state["heads"]
    out: dict[str, torch.Tensor] = {}
    if "all/n" not in state:
        return out
    clip = tuple(settings["clip"])

    def grid(values: torch.Tensor) -> torch.Tensor:
        g = torch.full((L, H), float("nan"), dtype=torch.float64)
        g[heads[:, 0], heads[:, 1]] = values.double()
        return g

    n_all = state["all/n"].double()
    names = list(settings["quantities"])
    means_all = {q: state[f"all/sum/{q}"] / n_all for q in names}
    top = {q: state[f"top/{q}"] for q in names}
    means_top = {q: v.mean(1) for q, v in top.items()}
    out["stat/all/n_sites"] = grid(n_all)
    out["stat/condensed/n_sites"] = grid(torch.full_like(n_all, top["direct_effect"].shape[1]))
    for q in names:
        out[f"stat/all/{q}/mean"] = grid(means_all[q])
        out[f"stat/condensed/{q}/mean"] = grid(means_top[q])
        out[f"stat/condensed/{q}/median"] = grid(top[q].median(1).values)
    for q in _ratio_names(names):
        out[f"stat/all/{q}/ratio_of_means"] = grid(means_all[q] / means_all["direct_effect"])
        out[f"stat/all/{q}/mean_clipped_ratio"] = grid(
            state[f"all/clip_sum/{q}"] / state[f"all/clip_n/{q}"])
        out[f"stat/all/{q}/mean_ratio"] = grid(state[f"all/ratio_sum/{q}"] / state[f"all/ratio_n/{q}"])
        c_sum, c_n, r_sum, r_n = _ratio_parts(top[q], top["direct_effect"], clip)
        out[f"stat/condensed/{q}/ratio_of_means"] = grid(means_top[q] / means_top["direct_effect"])
        out[f"stat/condensed/{q}/mean_clipped_ratio"] = grid(c_sum / c_n)
        out[f"stat/condensed/{q}/mean_ratio"] = grid(r_sum / r_n)
    if state["ae/heads"].shape[0] and "ae/all/n" in state:
        t = {n: state[f"ae/top/{n}"] for n in ("delta", "index", "direct_effect", "sr_mlp")}
        parts = {"all": {n[7:]: v for n, v in state.items() if n.startswith("ae/all/")},
                 "condensed": _ae_parts(t["delta"], t["index"], t["direct_effect"], t["sr_mlp"],
                                        settings["d_mlp"], settings["thresholds"], clip)}
        for sel, p in parts.items():
            out[f"ae/{sel}/curves"] = p["exceed"].double() / p["n_pos"].clamp(min=1)[:, None, None]
            out[f"ae/{sel}/top5_share/ratio_of_means"] = p["top5_sum"] / p["sr_mlp_sum"]
            out[f"ae/{sel}/top5_share/mean_clipped_ratio"] = p["top5_clip_sum"] / p["top5_clip_n"].double()
            out[f"ae/{sel}/recurrence"] = p["recurrence"].double() / p["n"][:, None]
            out[f"ae/{sel}/n_sites"] = p["n"].double()
            out[f"ae/{sel}/n_positive"] = p["n_pos"].double()
        out["ae/all/neuron_de_clean/mean"] = state["ae/all/neuron_de_clean_sum"] / \
            state["ae/all/n"][:, None]
        out["ae/all/neuron_de_ablated/mean"] = state["ae/all/neuron_de_ablated_sum"] / \
            state["ae/all/n"][:, None]
    return out


# --- the result object ------------------------------------------------------------------
@dataclass
class HeadSweepResult(SweepResult):
    """A head sweep's summaries as labelled arrays, plus its raw state and settings.

    stats: "stat/<selection>/<quantity>/<statistic>" → [n_layers, n_heads] (NaN: not swept);
    selection ∈ {"condensed", "all"}, quantity ∈ QUANTITIES, statistic ∈ STATISTICS.
    state: the streaming accumulators and buffers (as in the file). rows: token rows [R, T].
    settings: model, method, ablation, selection rule, statistics, versions, seed, ...
    progress: rows_done, n_rows, complete.
    """

    stats: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    rows: torch.Tensor
    settings: dict
    progress: dict = field(default_factory=dict)

    dims = ("layer", "head")
    KIND, DONE_KEY, TOTAL_KEY, STAT_PREFIXES = KIND, "rows_done", "n_rows", ("stat/", "ae/")

    @classmethod
    def from_state(cls, state, settings, rows, progress) -> HeadSweepResult:
        return cls(stats=summarise(state, settings), state=state, rows=rows, settings=settings,
                   progress=progress)

    @classmethod
    def from_file(cls, tensors, header) -> HeadSweepResult:
        stats = {k: v for k, v in tensors.items() if k.startswith(cls.STAT_PREFIXES)}
        return cls(stats=stats, state=store.saved_state(tensors), rows=tensors["rows"].long(),
                   settings=header["settings"], progress=header["progress"])

    def arrays(self) -> dict[str, torch.Tensor]:
        return {**super().arrays(), "rows": self.rows.to(torch.int32)}

    # --- facts about the sweep ------------------------------------------------------
    @property
    def quantities(self) -> list[str]:
        """The summarised quantities (QUANTITIES; with branch norms also "sr_branch")."""
        return list(self.settings.get("quantities", QUANTITIES))

    @property
    def n_layers(self) -> int:
        return int(self.settings["n_layers"])

    @property
    def n_heads(self) -> int:
        return int(self.settings["n_heads"])

    @property
    def heads(self) -> list[Head]:
        return [Head(int(a), int(b)) for a, b in self.state["heads"].tolist()]

    @property
    def label(self) -> str:
        s = self.settings
        return f"{s['model']} · {s['method']}"

    def selection_text(self, selection: str = "condensed") -> str:
        """How sites were chosen, for figure captions."""
        if selection == "condensed":
            return f"top {self.settings['top_frac']:.0%} tokens by clean DE"
        return "all tokens"

    # --- arrays ---------------------------------------------------------------------
    def stat(self, quantity: str, selection: str = "condensed", statistic: str = "mean"):
        """Summary array [n_layers, n_heads] (float64; NaN where a head was not swept)."""
        if quantity not in self.quantities:
            raise InvalidInputError(
                f"unknown quantity {quantity!r}; choose from {', '.join(self.quantities)}")
        if selection not in SELECTIONS:
            raise InvalidInputError(f"unknown selection {selection!r}; choose from {', '.join(SELECTIONS)}")
        key = f"stat/{selection}/{quantity}/{statistic}"
        if key not in self.stats:
            valid = sorted({k.split("/")[3] for k in self.stats
                            if k.startswith(f"stat/{selection}/{quantity}/")})
            raise InvalidInputError(
                f"no statistic {statistic!r} for {quantity} ({selection}); available: {', '.join(valid)}")
        return self.stats[key]

    def interval(self, quantity: str, statistic: str = "mean", per: str = "head", *,
                 B: int = 1000, seed: int = 0, level: float = 0.95):
        """A 95 % bootstrap interval of a condensed statistic, corpus rows resampled (seeded:
        a figure redraws the same bars). Rows are the unit because a row's sites share its
        context; the condensed sites stay those chosen on the whole corpus.

        statistic: "mean", "ratio_of_means" (of `quantity` over DE), "mean_clipped_ratio" or
        "mean_ratio" (mean of the finite ratios).
        per: "head" → (low, high) [n_layers, n_heads] (NaN: not swept); "layer" → of the
        mean over each layer's swept heads, [n_layers] (one draw of rows serves all heads).
        A ratio of means whose DE interval contains 0 has NaN bounds (no interval worth
        drawing). Only the condensed selection keeps its sites ("all" keeps only sums).
        """
        from ..stats import bounds, draws

        self.stat(quantity, "condensed", statistic)  # a clear error for an unknown one
        if per not in ("head", "layer"):
            raise InvalidInputError(f"unknown per={per!r}; choose from head, layer")
        v, de = self.state[f"top/{quantity}"].double(), self.state["top/direct_effect"].double()
        rows = self.state["top/row"].long()                             # [S, k]
        n_rows = int(self.progress.get("rows_done") or int(rows.max()) + 1)
        w = draws(n_rows, B, seed)[:, rows]                             # [B, S, k]
        n = w.sum(-1)                                                   # [B, S]
        if statistic == "mean":
            samples = (w * v).sum(-1) / n
        elif statistic == "ratio_of_means":
            samples = (w * v).sum(-1) / (w * de).sum(-1)
        elif statistic == "mean_clipped_ratio":
            low, high = self.settings["clip"]
            clipped = torch.where(de != 0, (v / de).clamp(low, high), torch.zeros_like(v))
            samples = (w * clipped).sum(-1) / (w * (de != 0)).sum(-1)
        else:  # mean_ratio
            ratio = v / de
            finite = torch.isfinite(ratio)
            samples = (w * torch.where(finite, ratio, 0.0)).sum(-1) / (w * finite).sum(-1)
        L, H, heads = self.n_layers, self.n_heads, self.state["heads"]
        grid = torch.full((B, L, H), float("nan"), dtype=torch.float64)
        grid[:, heads[:, 0], heads[:, 1]] = samples
        if statistic == "ratio_of_means":  # undefined where the DE's own interval holds 0
            de_grid = torch.full((B, L, H), float("nan"), dtype=torch.float64)
            de_grid[:, heads[:, 0], heads[:, 1]] = (w * de).sum(-1) / n
            if per == "layer":
                de_grid = de_grid.nanmean(-1)
            d_lo, d_hi = bounds(de_grid, level)
        lo, hi = bounds(grid if per == "head" else grid.nanmean(-1), level)
        if statistic == "ratio_of_means":
            undefined = (d_lo <= 0) & (d_hi >= 0)
            lo, hi = lo.masked_fill(undefined, float("nan")), hi.masked_fill(undefined, float("nan"))
        return lo, hi

    def table(self, selection: str = "condensed", statistic: str = "mean") -> list[dict]:
        """Tidy rows, one per swept head: layer, head, relative depth and every quantity."""
        rows = []
        for h in self.heads:
            row = {"layer": h.layer, "head": h.head, "depth": h.layer / max(1, self.n_layers - 1)}
            for q in self.quantities:
                key = f"stat/{selection}/{q}/{statistic}"
                if key in self.stats:
                    row[q] = float(self.stats[key][h.layer, h.head])
            rows.append(row)
        return rows

    def per_token(self, head) -> dict[str, torch.Tensor]:
        """Every site of a per-token head: row, position, target [n] and each quantity [n]."""
        i = self._index("tok/heads", head, "per_token")
        out = {n: self.state[f"tok/{n}"] for n in ("row", "position", "target")}
        out.update({q: self.state[f"tok/{q}"][i] for q in self.quantities})
        return out

    def condensed(self, head) -> dict[str, torch.Tensor]:
        """The condensed sites of a head (sorted by clean DE): row, position, target, quantities [k]."""
        i = self._index("heads", head, "heads")
        return {n: self.state[f"top/{n}"][i]
                for n in ("row", "position", "target", *self.quantities)}

    def anti_erasure(self, head, selection: str = "condensed") -> dict:
        """Anti-erasure summaries for one head (neurons of layer `settings['anti_erasure_layer']`).

        curves [n_top, X]: fraction of sites (with DE_h > 0) where the N-th neuron's ΔDE
        exceeds x% of DE_h, x in `thresholds`; top5_share_ratio_of_means and
        top5_share_mean_clipped_ratio: share of SR_MLP carried by the top-5 neurons;
        recurrence [M]: fraction of sites where each neuron is in the top 10. For the
        condensed selection also top_delta / top_index / top_de_clean [k, n_top] (per site),
        for "all" the mean clean / ablated DE of every neuron [M].
        """
        i = self._index("ae/heads", head, "anti_erasure")
        out = {"layer": self.settings["anti_erasure_layer"],
               "thresholds": list(self.settings["thresholds"]),
               "curves": self.stats[f"ae/{selection}/curves"][i],
               "top5_share_ratio_of_means": float(self.stats[f"ae/{selection}/top5_share/ratio_of_means"][i]),
               "top5_share_mean_clipped_ratio": float(
                   self.stats[f"ae/{selection}/top5_share/mean_clipped_ratio"][i]),
               "recurrence": self.stats[f"ae/{selection}/recurrence"][i],
               "n_sites": int(self.stats[f"ae/{selection}/n_sites"][i]),
               "selection": self.selection_text(selection)}
        if selection == "condensed":
            out.update(top_delta=self.state["ae/top/delta"][i],
                       top_index=self.state["ae/top/index"][i],
                       top_de_clean=self.state["ae/top/de_clean"][i])
        else:
            out.update(neuron_de_clean=self.stats["ae/all/neuron_de_clean/mean"][i],
                       neuron_de_ablated=self.stats["ae/all/neuron_de_ablated/mean"][i])
        return out

    def _index(self, key: str, head, what: str) -> int:
        from ..components import parse_component

        h = parse_component(head)
        ids = [tuple(x) for x in self.state[key].tolist()]
        if (h.layer, h.head) not in ids:
            listed = ", ".join(f"L{a}H{b}" for a, b in ids) or "none"
            raise InvalidInputError(f"{h} was not recorded for {what}; recorded: {listed}")
        return ids.index((h.layer, h.head))

    def __repr__(self) -> str:
        s = self.settings
        state = "complete" if self.complete else f"partial: {self.progress.get('rows_done')} rows"
        return (f"HeadSweepResult({s['model']}, {s['method']}, {len(self.heads)} heads, "
                f"{s['n_rows']}×{s['row_len']} tokens, top {s['top_frac']:.0%} = {s['top_k']} "
                f"sites, {state})")


HeadSweep.result_type = HeadSweepResult
