"""The repair map: which downstream component repairs which ablation, over a prompt set.

    res = repair_map(lab, "nltk", n_rows=64, out="map.safetensors")          # R&N protocol
    res = repair_map(lab, protocol="hydra", out="map_hydra.safetensors")     # Hydra protocol
    res.map("condensed")            # [rows, columns] mean ΔDE (NaN: the ablated component)
    res.top_pairs(10)               # the strongest (ablated, repairer) pairs

Rows: the ablated components (every head by default; attention / MLP layers on request).
Columns, ordered by layer: each head of layer 0, MLP 0, each head of layer 1, MLP 1, ...,
then "LN" (SR_LN, the final norm's rescaling). A cell is the mean over sites of that
component's ΔDE = DE^abl − DE when the row's component is ablated; a row's cells sum to
its mean self-repair SR (SPEC §3: SR = SR_heads + SR_MLP + SR_LN).

Protocols:

* ``rn`` (Rushing & Nanda) — corpus rows of `row_len` tokens, the next token at every
  position, resample ablation with row i ← row i+1 of its batch (or mean / zero), exactly
  as `sweep_heads`. Two selections: ``condensed`` — per row, the top `top_frac` (2%) of
  sites by the ablated component's clean DE over the whole corpus (found in a first pass
  of clean runs; ties keep the earlier site, as in `sweep_heads`) — and ``all``.
* ``hydra`` — factual prompts, resample ablation at the final position from `n_sources`
  (15) other prompts (the draw of `sweep_layers`), target: the clean run's top token.
  One site per prompt; selection ``all``.

Every row's ablations go through `Lab.measure_many` in per-layer groups (prefix reuse,
batched forward passes). Results stream to a resumable, atomically written file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..ablation import METHODS
from ..components import AttnLayer, Head, MLPLayer, parse_component
from ..errors import InvalidInputError, whole_number
from ..facts import load_facts
from ..lab import SCALES
from . import store
from .common import batch_bounds, parse_heads
from .engine import Sweep, SweepResult, check_run_options, provenance, run_sweep
from .heads import check_batch_rows
from .layers import source_index
from .remote import check_remote
from .rows import corpus_rows, describe_corpus
from .topk import merge_topk, top_count

KIND = "repair_map"
PROTOCOLS = ("rn", "hydra")
SELECTIONS = ("condensed", "all")
ROW_QUANTITIES = {
    "direct_effect": "DE of the ablated component (clean run)",
    "delta_logit": "ΔL = ℓ̂_abl − ℓ̂_clean",
    "self_repair": "SR = ΔL − (DE^abl − DE) = the row's sum over the map",
    "own_delta_de": "DE^abl − DE of the ablated component itself (not repair)",
}


# --- rows and columns -------------------------------------------------------------------
def parse_rows(spec, shape) -> list:
    """Ablated components from "heads", "layers" (attention + MLP), "all", or a list / comma
    string of "9.6", "3.*", "attn3", "mlp5"; ordered by layer (heads, attention, MLP)."""
    L, H = shape.n_layers, shape.n_heads
    if isinstance(spec, str) and spec.strip() in ("heads", "layers", "all"):
        spec = spec.strip()
        out = parse_heads("all", L, H) if spec != "layers" else []
        if spec != "heads":
            out += [AttnLayer(i) for i in range(L)] + [MLPLayer(i) for i in range(L)]
        return sorted(out, key=_row_order)
    if not isinstance(spec, str | list | tuple):
        raise InvalidInputError(f"rows must be 'heads', 'layers', 'all' or a list of components "
                                f"such as ['9.6', '3.*', 'attn3', 'mlp5'], not {spec!r}")
    items = [s for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    if not items:
        raise InvalidInputError("no rows to map: name heads, 'heads', 'layers' or 'all'")
    out = []
    for item in items:
        comp = item if not isinstance(item, str) or item.strip().endswith(".*") \
            else parse_component(item)
        if isinstance(comp, AttnLayer | MLPLayer):
            if not 0 <= comp.layer < L:
                raise InvalidInputError(f"{comp}: layer out of range 0..{L - 1}")
            out.append(comp)
        elif isinstance(comp, str) or isinstance(comp, Head):
            out.extend(parse_heads([comp], L, H))
        else:
            raise InvalidInputError(f"{item!r}: map rows are heads, attention or MLP layers")
    return sorted(dict.fromkeys(out), key=_row_order)


def _row_order(c) -> tuple:
    rank = {Head: 0, AttnLayer: 1, MLPLayer: 2}[type(c)]
    return c.layer, rank, getattr(c, "head", 0)


def column_labels(n_layers: int, n_heads: int) -> list[str]:
    """["L0H0", .., "L0H{H-1}", "MLP0", "L1H0", .., "MLP{L-1}", "LN"]."""
    cols = []
    for layer in range(n_layers):
        cols += [f"L{layer}H{h}" for h in range(n_heads)] + [f"MLP{layer}"]
    return [*cols, "LN"]


def map_columns(m) -> torch.Tensor:
    """Every column's ΔDE at each site of one Measurement, [N, L·(H+1) + 1] float64 (the
    columns of `column_labels`)."""
    per_layer = torch.cat([m.head_delta_de, m.mlp_delta_de[..., None]], dim=-1)
    return torch.cat([per_layer.flatten(1), m.sr_ln[:, None]], dim=1).double()


def own_columns(comp, n_layers: int, n_heads: int) -> torch.Tensor:
    """Bool [C]: the columns of the ablated component itself (NaN in the map)."""
    own = torch.zeros(n_layers, n_heads + 1, dtype=torch.bool)
    if isinstance(comp, Head):
        own[comp.layer, comp.head] = True
    elif isinstance(comp, AttnLayer):
        own[comp.layer, :n_heads] = True
    else:
        own[comp.layer, n_heads] = True
    return torch.cat([own.flatten(), torch.zeros(1, dtype=torch.bool)])


def ablate_each(lab, prompts, comps, **options):
    """Each of `comps` ablated alone, in one `Lab.measure_many` call (shared clean run, prefix
    reuse, batched passes); the repair map's step and the Explorer's live sweep. Yields
    (component, Measurement, its map row [N, C] float64: `map_columns` with the component's
    own cells NaN)."""
    L, H = lab.n_layers, lab.n_heads
    for c, m in zip(comps, lab.measure_many(prompts, comps, **options), strict=True):
        cols = map_columns(m)
        cols[:, own_columns(c, L, H)] = float("nan")
        yield c, m, cols


def _clean_keys(m, comps) -> torch.Tensor:
    """[S, N] clean DE of each row's component (the condensed selection's key)."""
    keys = []
    for c in comps:
        if isinstance(c, Head):
            keys.append(m.head_de_clean[:, c.layer, c.head])
        elif isinstance(c, AttnLayer):
            keys.append(m.head_de_clean[:, c.layer].sum(-1))
        else:
            keys.append(m.mlp_de_clean[:, c.layer])
    return torch.stack(keys).double()


# --- the sweep --------------------------------------------------------------------------
def repair_map(lab, data=None, *, protocol: str = "rn", rows="heads", method: str = "resample",
               row_len: int = 128, n_rows: int | None = None, top_frac: float = 0.02,
               batch_rows: int = 8, mean_rows: int = 16, prepend_bos: bool = False,
               n_prompts: int | None = None, n_sources: int = 15, batch_prompts: int = 8,
               forward_rows: int = 64, scale: str = "clean", fold_value_biases: bool = True,
               out=None, overwrite: bool = False, checkpoint_every: float = 30.0,
               seed: int = 0, progress: bool = True, remote=False) -> RepairMapResult:
    """Mean ΔDE of every downstream component (columns) for every ablated component (rows).

    protocol "rn": data is a corpus (as `sweep_heads`: token rows, texts, files, "nltk"),
        cut into `n_rows` rows of `row_len` tokens; method "resample" (row i ← row i+1 of
        its batch of `batch_rows`), "mean" (first `mean_rows` rows) or "zero"; selections
        "condensed" (top `top_frac` of sites by the row's clean DE) and "all".
    protocol "hydra": data is a prompt set (as `sweep_layers`: None = the embedded facts,
        "known", a file or a list); resample at the final position from `n_sources` other
        prompts, target the clean top token, `batch_prompts` prompts per batch; "all" only.
    rows: "heads" (default), "layers", "all" or a list ("9.6", "3.*", "attn3", "mlp5").
    scale, fold_value_biases, forward_rows: as in `Lab.measure_many`.
    out / overwrite / checkpoint_every / seed / progress / remote: as in `sweep_heads`.
    Returns a `RepairMapResult`.
    """
    shape = lab.shape
    seed = check_run_options(checkpoint_every, seed)
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if scale not in SCALES:
        raise InvalidInputError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    if protocol == "hydra" and method != "resample":
        raise InvalidInputError("the hydra protocol resamples; method must be 'resample'")
    if method not in METHODS:
        raise InvalidInputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if not 0 < top_frac <= 1:
        raise InvalidInputError(f"top_frac must be in (0, 1], got {top_frac}")
    if protocol == "rn":
        check_batch_rows(batch_rows, method)
    elif whole_number(batch_prompts, "batch_prompts") < 1:
        raise InvalidInputError(f"batch_prompts must be at least 1, got {batch_prompts}")
    remote = check_remote(remote)
    comps = parse_rows(rows, shape)
    common = dict(provenance(lab), n_layers=shape.n_layers, n_heads=shape.n_heads,
                  protocol=protocol, method=method, rows=[str(c) for c in comps],
                  columns=column_labels(shape.n_layers, shape.n_heads),
                  forward_rows=forward_rows, scale=scale, fold_value_biases=fold_value_biases,
                  centred=True, seed=seed, row_quantities=ROW_QUANTITIES,
                  cell="mean over the selected sites of the column's ΔDE = DE^abl − DE "
                       "(LN: SR_LN); NaN: the ablated component itself",
                  sr_definition="SR = ΔL − (DE_abl − DE) = Σ_columns ΔDE",
                  versions=store.versions())
    if protocol == "rn":
        plan = _rn_plan(lab, data, comps, method, row_len, n_rows, top_frac, batch_rows,
                        mean_rows, prepend_bos, forward_rows, scale, fold_value_biases, seed,
                        common)
    else:
        plan = _hydra_plan(lab, data, n_prompts, n_sources, batch_prompts, forward_rows,
                           scale, fold_value_biases, seed, common)
    sweep = RepairMapSweep(plan, comps, shape, f"repair map ({lab.name}, {protocol})",
                           "row" if protocol == "rn" else "prompt")
    return run_sweep(lab, sweep, out=out, overwrite=overwrite, checkpoint_every=checkpoint_every,
                     progress=progress, remote=remote)


@dataclass
class Plan:
    """A protocol's data: the settings, the batches ([start, end) item ranges), the number
    of items, the condensed selection's k (None: no condensed selection), `batch(start, end)`
    → (the measured prompts or rows, Lab.measure_many options), and `site_id(m, start)` → a
    global id for each site of a Measurement of batch `start`."""

    settings: dict
    bounds: list
    n_items: int
    k: int | None
    batch: Callable
    site_id: Callable


class RepairMapSweep(Sweep):
    """The repair map's units: batches of rows (or prompts), every row component ablated
    alone in per-layer groups; first, for the condensed selection, a pass of clean runs."""

    def __init__(self, plan: Plan, comps, shape, label: str, unit: str):
        self.plan, self.comps, self.label, self.unit = plan, comps, label, unit
        self.settings, self.bounds, self.total = plan.settings, plan.bounds, plan.n_items
        self.groups: dict[int, list] = {}
        for c in comps:
            self.groups.setdefault(c.layer, []).append(c)
        self.own = torch.stack([own_columns(c, shape.n_layers, shape.n_heads) for c in comps])

    def empty_state(self):
        return _empty_state(len(self.comps), len(self.settings["columns"]),
                            self.settings["selections"])

    def prepare(self, lab, state):
        if "condensed" in self.settings["selections"] and not bool(state["select_done"]):
            return _select(lab, self.plan, self.comps, state)
        return None

    def step(self, lab, state, start, end):
        return _accumulate(lab, self.plan, self.comps, self.groups, self.own, state, start, end)

    def result(self, state, done, complete):
        return RepairMapResult.from_state(
            state, self.settings, RepairMapResult.progress_of(done, self.total, complete))


def _rn_plan(lab, corpus, comps, method, row_len, n_rows, top_frac, batch_rows, mean_rows,
             prepend_bos, forward_rows, scale, fold_value_biases, seed, common) -> dict:
    shape = lab.shape
    ids = corpus_rows(lab.tokenizer, corpus, row_len, n_rows, prepend_bos, shape.n_ctx)
    if int(ids.max()) >= shape.d_vocab or int(ids.min()) < 0:
        raise InvalidInputError(f"token ids outside the vocabulary 0..{shape.d_vocab - 1}")
    R, T = ids.shape
    if method == "resample" and R < 2:
        raise InvalidInputError("resample ablation needs at least two rows (row i ← row i+1)")
    n_sites = R * (T - 1)
    k = top_count(n_sites, top_frac)
    reference = ids[:mean_rows] if method == "mean" else None
    opts = dict(method=method, scale=scale, fold_value_biases=fold_value_biases,
                max_rows=forward_rows, seed=seed)
    if method == "resample":
        opts["sources"] = "shift"
        ablation = (f"resample: row i takes row i+1 of its batch of {batch_rows} rows "
                    "(wrapping), same position")
    elif method == "mean":
        opts["reference"] = reference
        ablation = (f"mean over the {int(reference.numel())} tokens of the corpus' first "
                    f"{reference.shape[0]} rows")
    else:
        ablation = "zero" + (" (heads: their value constant c_h = β₁·W_V + b_V, folded "
                             "convention)" if fold_value_biases else "")
    settings = dict(
        common, ablation=ablation, positions="all", target="next token at every position",
        corpus=describe_corpus(corpus), corpus_digest=store.tensor_digest(ids),
        n_rows=R, row_len=T, prepend_bos=prepend_bos, n_sites=n_sites, batch_rows=batch_rows,
        mean_rows=int(reference.shape[0]) if reference is not None else None,
        top_frac=top_frac, top_k=k, selections=list(SELECTIONS),
        selection=(f"condensed: per row, the top {top_frac:.2%} of (row, position) sites by "
                   f"the ablated component's clean DE over the whole corpus (k = {k}); "
                   "all: every site"))
    bounds = batch_bounds(R, batch_rows, 2 if method == "resample" else 1)
    return Plan(settings=settings, bounds=bounds, n_items=R, k=k,
                batch=lambda s, e: (ids[s:e], opts),
                site_id=lambda m, s: (m.rows + s) * (T - 1) + m.positions)


def _hydra_plan(lab, prompts, n_prompts, n_sources, batch_prompts, forward_rows, scale,
                fold_value_biases, seed, common) -> dict:
    facts = load_facts(prompts, n_prompts)
    texts = [f.prompt for f in facts]
    P = len(texts)
    if n_sources < 1 or P < n_sources + 1:
        raise InvalidInputError(
            f"n_sources={n_sources} needs at least {n_sources + 1} prompts; got {P}")
    batch = lab.tokenize(texts)  # raises for empty / over-long prompts before any forward pass
    index = source_index(P, n_sources, seed)
    settings = dict(
        common, positions="final", target="top (clean run's most likely token)",
        ablation=(f"resample at the final position from {n_sources} other prompts of the set "
                  f"(drawn per prompt with seed {seed}); effects averaged over sources"),
        n_sources=n_sources, n_prompts=P, prompts=texts,
        prompt_source=str(prompts) if prompts is not None else "nbtools.facts.FACTS",
        prompts_digest=store.tensor_digest(batch.input_ids, batch.attention_mask),
        batch_prompts=batch_prompts, selections=["all"],
        selection="all: the final position of every prompt")
    opts = dict(method="resample", positions="final", target="top", scale=scale,
                fold_value_biases=fold_value_biases, max_rows=forward_rows, seed=seed)

    def make_batch(s, e):
        sources = [[texts[j] for j in index[i]] for i in range(s, e)]
        return texts[s:e], dict(opts, sources=sources)

    return Plan(settings=settings, bounds=batch_bounds(P, batch_prompts), n_items=P, k=None,
                batch=make_batch, site_id=lambda m, s: m.rows + s)


def _empty_state(S: int, C: int, selections) -> dict[str, torch.Tensor]:
    state = {"select_done": torch.tensor(False)}
    for sel in selections:
        state[f"{sel}/n"] = torch.zeros(S, dtype=torch.long)
        state[f"{sel}/sum"] = torch.zeros(S, C, dtype=torch.float64)
        for q in ROW_QUANTITIES:
            state[f"{sel}/rowsum/{q}"] = torch.zeros(S, dtype=torch.float64)
    return state


def _select(lab, plan, comps, state) -> dict:
    """First pass (condensed selection): each row's top-k sites by clean DE, from clean
    runs alone (`Lab.measure_clean`; the clean DEs do not depend on the ablation)."""
    buf = None
    for start, end in plan.bounds:
        ids, opts = plan.batch(start, end)
        m = lab.measure_clean(ids, target="next", fold_value_biases=opts["fold_value_biases"],
                              top_k=1)
        keys = _clean_keys(m, comps)
        sites = plan.site_id(m, start).expand_as(keys)
        buf = merge_topk(buf, {"direct_effect": keys, "site": sites}, plan.k, "direct_effect")
    new = dict(state)
    new["select/site"] = buf["site"]
    new["select/direct_effect"] = buf["direct_effect"]
    new["select_done"] = torch.tensor(True)
    return new


def _accumulate(lab, plan, comps, groups, own, state, start, end) -> dict:
    """A new state with one batch folded in (per-layer groups through `measure_many`)."""
    new = {k: v.clone() if v.dim() else v for k, v in state.items()}
    ids, opts = plan.batch(start, end)
    index = {c: i for i, c in enumerate(comps)}
    for layer in sorted(groups):
        for c, m, cols in ablate_each(lab, ids, groups[layer], **opts):
            i = index[c]
            cols[:, own[i]] = 0.0
            q = {"direct_effect": m.direct_effect, "delta_logit": m.delta_logit,
                 "self_repair": m.self_repair,
                 "own_delta_de": m.direct_effect_ablated - m.direct_effect}
            masks = {"all": torch.ones(cols.shape[0], dtype=torch.bool)}
            if "select/site" in new:
                masks["condensed"] = torch.isin(plan.site_id(m, start), new["select/site"][i])
            for sel, keep in masks.items():
                new[f"{sel}/n"][i] += int(keep.sum())
                new[f"{sel}/sum"][i] += cols[keep].sum(0)
                for name, v in q.items():
                    new[f"{sel}/rowsum/{name}"][i] += v[keep].double().sum()
    return new


# --- summaries --------------------------------------------------------------------------
def summarise(state: dict, settings: dict) -> dict[str, torch.Tensor]:
    """"map/<selection>" [S, C] (NaN at the ablated component's own cells) and
    "row/<selection>/<quantity>" [S] means over the sites done so far."""
    L, H = settings["n_layers"], settings["n_heads"]
    comps = [parse_component(r) for r in settings["rows"]]
    own = torch.stack([own_columns(c, L, H) for c in comps])
    out = {}
    for sel in settings["selections"]:
        n = state[f"{sel}/n"].double()
        grid = state[f"{sel}/sum"] / n[:, None]
        grid[own] = float("nan")
        out[f"map/{sel}"] = grid
        out[f"row/{sel}/n_sites"] = n
        for q in ROW_QUANTITIES:
            out[f"row/{sel}/{q}"] = state[f"{sel}/rowsum/{q}"] / n
    return out


# --- the result object ------------------------------------------------------------------
@dataclass
class RepairMapResult(SweepResult):
    """A repair map as labelled arrays.

    stats: "map/<selection>" [S, C] mean ΔDE (rows = `rows`, columns = `columns`, NaN at
    the ablated component's own cells), "row/<selection>/<quantity>" [S] (ROW_QUANTITIES,
    n_sites). state: the streaming sums (as in the file). settings, progress (done, total,
    complete).
    """

    stats: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    settings: dict
    progress: dict = field(default_factory=dict)

    KIND, DONE_KEY, TOTAL_KEY, STAT_PREFIXES = KIND, "done", "total", ("map/", "row/")

    @classmethod
    def from_state(cls, state, settings, progress) -> RepairMapResult:
        return cls(stats=summarise(state, settings), state=state, settings=settings,
                   progress=progress)

    @property
    def rows(self) -> list[str]:
        """Labels of the ablated components (map rows), e.g. "L3H1", "attn2", "mlp4"."""
        return list(self.settings["rows"])

    @property
    def columns(self) -> list[str]:
        """Labels of the repairing components (map columns), ending with "LN"."""
        return list(self.settings["columns"])

    @property
    def selections(self) -> list[str]:
        return list(self.settings["selections"])

    @property
    def default_selection(self) -> str:
        return self.selections[0]

    @property
    def label(self) -> str:
        s = self.settings
        return f"{s['model']} · {s['protocol']} · {s['method']}"

    def selection_text(self, selection: str | None = None) -> str:
        """How sites were chosen, for captions."""
        selection = self._selection(selection)
        if selection == "condensed":
            return f"top {self.settings['top_frac']:.0%} tokens by the ablated head's clean DE"
        return "final position of each prompt" if self.settings["protocol"] == "hydra" \
            else "all tokens"

    def row_layers(self) -> list[int]:
        return [parse_component(r).layer for r in self.rows]

    def column_layers(self) -> list[int]:
        """Layer of every column (LN: n_layers)."""
        H1 = self.settings["n_heads"] + 1
        return [i // H1 for i in range(len(self.columns) - 1)] + [self.settings["n_layers"]]

    def map(self, selection: str | None = None) -> torch.Tensor:
        """[rows, columns] mean ΔDE (float64; NaN at the ablated component's own cells)."""
        return self.stats[f"map/{self._selection(selection)}"]

    def layer_map(self, selection: str | None = None) -> dict:
        """The map by layer: columns are each attention layer (its heads' ΔDE summed), each
        MLP layer, then LN, grouped by kind; rows average each layer's ablated heads ("L3
        heads"; a layer ablation keeps its own row). A row still sums to its (mean) SR.
        Returns {"map" [rows, 2L + 1] float64 (NaN: the ablated component itself), "rows",
        "columns", "row_layers"}."""
        grid = self.map(selection)
        L, H = int(self.settings["n_layers"]), int(self.settings["n_heads"])
        per_layer = grid[:, :-1].reshape(grid.shape[0], L, H + 1)
        heads = per_layer[..., :H]
        attn = heads.nansum(-1).masked_fill(heads.isnan().all(-1), float("nan"))
        by_column = torch.cat([attn, per_layer[..., H], grid[:, -1:]], dim=1)
        groups: dict[str, list[int]] = {}
        for i, label in enumerate(self.rows):
            comp = parse_component(label)
            groups.setdefault(f"L{comp.layer} heads" if isinstance(comp, Head) else str(comp),
                              []).append(i)
        rows = torch.stack([by_column[idx].nanmean(0) for idx in groups.values()])
        return {"map": rows, "rows": list(groups),
                "columns": [f"attn{i}" for i in range(L)] + [f"MLP{i}" for i in range(L)] + ["LN"],
                "row_layers": [parse_component(self.rows[idx[0]]).layer
                               for idx in groups.values()]}

    def row_stat(self, quantity: str, selection: str | None = None) -> torch.Tensor:
        """[rows] mean of a row quantity (ROW_QUANTITIES or "n_sites")."""
        if quantity not in (*ROW_QUANTITIES, "n_sites"):
            raise InvalidInputError(
                f"unknown row quantity {quantity!r}; choose from {', '.join(ROW_QUANTITIES)}, n_sites")
        return self.stats[f"row/{self._selection(selection)}/{quantity}"]

    def concentration(self, k: int = 3, selection: str | None = None,
                      over: str = "positive") -> torch.Tensor:
        """[rows] share of each row's repair carried by its top-k components (LN counted).

        over="positive": Σ top-k positive ΔDE / Σ positive ΔDE (repair only, anti-repair
        ignored); over="abs": Σ top-k |ΔDE| / Σ |ΔDE|. NaN where a row has no repair.
        """
        if over not in ("positive", "abs"):
            raise InvalidInputError(f"over must be 'positive' or 'abs', got {over!r}")
        grid = torch.nan_to_num(self.map(selection), nan=0.0)
        grid = grid.clamp(min=0) if over == "positive" else grid.abs()
        top = grid.sort(dim=1, descending=True).values[:, :k].sum(1)
        total = grid.sum(1)
        return torch.where(total > 0, top / total, torch.full_like(total, float("nan")))

    def top_pairs(self, n: int = 10, selection: str | None = None,
                  include_ln: bool = False) -> list[dict]:
        """The n (ablated, repairer) pairs with the largest mean ΔDE (strongest repair first).

        Each: ablated, repairer, delta_de, direct_effect (the ablated row's mean clean DE),
        self_repair (the row's SR) and share (delta_de / SR of the row).
        """
        grid = self.map(selection).clone()
        if not include_ln:
            grid[:, -1] = float("nan")
        flat = torch.nan_to_num(grid, nan=float("-inf")).flatten()
        order = torch.sort(flat, descending=True, stable=True).indices[:n]
        C = grid.shape[1]
        de, sr = self.row_stat("direct_effect", selection), self.row_stat("self_repair", selection)
        out = []
        for i in order.tolist():
            r, c = divmod(i, C)
            if not torch.isfinite(flat[i]):
                break
            out.append({"ablated": self.rows[r], "repairer": self.columns[c],
                        "delta_de": float(grid[r, c]), "direct_effect": float(de[r]),
                        "self_repair": float(sr[r]),
                        "share": float(grid[r, c] / sr[r]) if sr[r] != 0 else float("nan")})
        return out

    def _selection(self, selection: str | None) -> str:
        selection = selection or self.default_selection
        if selection not in self.selections:
            raise InvalidInputError(
                f"selection {selection!r} is not in this map; available: {', '.join(self.selections)}")
        return selection

    def __repr__(self) -> str:
        s = self.settings
        state = "complete" if self.complete else \
            f"partial: {self.progress.get('done')}/{self.progress.get('total')}"
        data = (f"{s['n_rows']}×{s['row_len']} tokens" if s["protocol"] == "rn"
                else f"{s['n_prompts']} prompts × {s['n_sources']} sources")
        return (f"RepairMapResult({s['model']}, {s['protocol']}, {s['method']}, "
                f"{len(self.rows)} × {len(self.columns)}, {data}, {state})")


RepairMapSweep.result_type = RepairMapResult
