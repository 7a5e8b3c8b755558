"""`Lab`: a loaded model plus the verbs researchers use — `measure`, `measure_many`, `run`.

A Lab validates every input before any forward pass, computes the clean run once per
prompt batch (cached), batches many ablations into few traces (rows ordered ablation ×
source × prompt) and, by default, starts each ablated run at its first ablated layer from
the cached clean residual stream (prefix reuse; upstream of an ablation nothing changes).
"""

from __future__ import annotations

import functools
import threading
import warnings
from importlib.metadata import PackageNotFoundError, version

import torch

from . import ablation as abl
from .batching import Batch, ablation_positions, make_batch, measurement_sites
from .components import Neurons, check_components, parse_components
from .effects import (
    Dots,
    Weights,
    before_suffix,
    dot_components,
    embedding_dots,
    full_logits,
    project_targets,
    site_values,
)
from .errors import InterventionError, InvalidInputError
from .lru import LRU
from .repair import completeness_gap, decompose
from .results import Measurement
from .suffix import clean_cache, plan_suffix, suffix_edits, take_positions
from .tracing import Activations, run_ablated, run_attention, run_clean

SCALES = ("clean", "recomputed")
_CACHE_SIZE = 8


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for pkg in ("nbtools", "torch", "transformers", "nnsight"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _one_at_a_time(method):
    """Run a Lab method under the Lab's lock: its caches are shared by every thread that
    uses the Lab (the Explorer's worker, a Compare in the notebook's own thread)."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Lab:
    """A model ready for ablation experiments.

    Attributes: `model` (the nnsight TransformersModel), `hf_model`, `tokenizer`,
    `adapter` (architecture knowledge), `shape` (sizes), `name`, `source` (GGUF-derived
    weights: file, quantization type; else None). Safe to share between threads:
    measurements run one at a time. `nbtools.load` builds one from anything a user names.
    """

    def __init__(self, model, adapter, name: str, source: dict | None = None):
        self.model = model
        self.hf_model = model._module
        self.tokenizer = model.tokenizer
        self.adapter = adapter
        self.shape = adapter.shape
        self.name = name
        self.source = source
        self._weights: dict[bool, Weights] = {}
        self._clean_cache = LRU(_CACHE_SIZE)
        self._effects_cache = LRU(_CACHE_SIZE)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        s = self.shape
        return (f"Lab({self.name!r}: {self.adapter.family}, {s.n_layers} layers × {s.n_heads} heads, "
                f"d_model {s.d_model}, d_mlp {s.d_mlp}, vocab {s.d_vocab}, "
                f"{'parallel' if self.adapter.parallel else 'sequential'} blocks)")

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return self.shape.n_layers

    @property
    def n_heads(self) -> int:
        """Attention heads per layer."""
        return self.shape.n_heads

    @_one_at_a_time
    def weights(self, centred: bool = True) -> Weights:
        """The folded (by default vocabulary-centred) float64 constants the algebra needs, computed
        once; the big matrices stay the model's own (see `effects.Weights`)."""
        if centred not in self._weights:
            self._weights[centred] = Weights.from_adapter(self.adapter, centred=centred)
        return self._weights[centred]

    def tokenize(self, prompts, what: str = "prompt") -> Batch:
        """A right-padded batch; raises InvalidInputError for empty or over-long prompts
        (naming them `what`: "prompt", "source", "reference prompt")."""
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id or 0
        return make_batch(prompts, self.tokenizer, self.shape.n_ctx, self.shape.d_vocab, pad,
                          what)

    def to_str_tokens(self, prompt) -> list[str]:
        """The prompt's tokens as strings (what the Explorer shows)."""
        batch = self.tokenize([prompt] if isinstance(prompt, str) else prompt)
        ids = batch.input_ids[0, : int(batch.lengths[0])].tolist()
        return [self.tokenizer.decode([i]) for i in ids]

    # --- runs -------------------------------------------------------------------------
    @_one_at_a_time
    def clean_run(self, batch: Batch, neurons: bool = False, kv: bool = False) -> Activations:
        """The clean run's activations (with neuron activations / the key-value cache if
        asked), cached per batch (an LRU of a few batches)."""
        key = batch.key()
        cached = self._clean_cache.get(key)
        if cached is not None and (cached.neurons or not neurons) and (cached.keys or not kv):
            return cached
        if cached is not None:  # what was cached stays included
            neurons, kv = neurons or bool(cached.neurons), kv or bool(cached.keys)
        acts = run_clean(self.model, self.adapter, batch.input_ids, batch.attention_mask,
                         neurons=neurons, kv=kv)
        self._clean_cache.put(key, acts)
        return acts

    @_one_at_a_time
    def attention_pattern(self, prompts, layer: int, head: int | None = None):
        """The clean run's attention weights at `layer` (rows: query positions, columns: key
        positions; causal, each row sums to 1): [T, T] for `head`, else [n_heads, T, T].

        prompts: a string, a list of strings or token ids [B, T]. One prompt gives one
        tensor; several give a list, each trimmed to its prompt's own T tokens.
        """
        s = self.shape
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < s.n_layers:
            raise InvalidInputError(
                f"layer must be an integer in 0..{s.n_layers - 1}; got {layer!r}")
        if head is not None and (isinstance(head, bool) or not isinstance(head, int)
                                 or not 0 <= head < s.n_heads):
            raise InvalidInputError(
                f"head must be an integer in 0..{s.n_heads - 1} or None; got {head!r}")
        batch = self.tokenize(prompts)
        # the earlier layers' outputs come from the (cached) clean run: one layer is traced
        prefix = self.clean_run(batch).block_out[:layer]
        weights = run_attention(self.model, self.adapter, batch.input_ids,
                                batch.attention_mask, layer, prefix).float()
        if head is not None:
            weights = weights[:, head]
        out = [w[..., :n, :n].clone() for w, n in zip(weights, batch.lengths.tolist(),
                                                       strict=True)]
        return out[0] if len(out) == 1 else out

    # --- measurement ------------------------------------------------------------------
    def measure(self, prompts, ablate, **options) -> Measurement:
        """Ablate one component (or a set, ablated together) and measure self-repair.

        `ablate`: Head(l, h), AttnLayer(l), MLPLayer(l), Neurons(l, [n...]), a string such as
        "9.6" / "attn3" / "mlp5" / "mlp5:12,40", or a list of them (one set).
        Options as in `measure_many`.
        """
        return self.measure_many(prompts, [ablate], **options)[0]

    def measure_many(self, prompts, ablations, *, scale: str = "clean",
                     **options) -> list[Measurement]:
        """Measure several independent ablations of the same prompts, sharing the clean run.

        prompts: a string, a list of strings, or token ids [B, T].
        method: "zero" | "mean" | "resample".
        sources (resample): "shift" (row i ← row i+1, R&N), "others" (n_sources other rows
            per prompt, default 15, Hydra), a list of prompts (each used for every row), or
            one list of prompts per row. Effects are averaged over sources.
        reference (mean): prompts whose non-padding tokens define the mean (default: the
            measured prompts).
        positions: where to ablate — "all", "final" or a list of indices.
        target: "next" (actual next token, R&N), "top" (clean argmax, Hydra), a single-token
            string or a token id. measure_at: "all", "final" or indices (default: every
            position with a next token for "next", else the final one).
        scale: "clean" (ablated DEs use the clean final-norm scale; R&N) or "recomputed".
        fold_value_biases: fold each head's value-bias constant into the layer's bias (as
            TransformerLens and R&N do). centred: logits centred over the vocabulary.
        neurons: also compute every MLP neuron's direct effect (anti-erasure views).
        logprobs: also compute target log-probabilities and top-k predictions (full vocab).
        prefix_reuse: start ablated runs at their first ablated layer (identical results).
        suffix_reuse: compute ablated runs only from each prompt's first ablated position to
            its last measured one, attending to the clean run's cached keys and values of
            earlier positions (equal to the full recomputation up to float rounding).
        max_rows: the most batch rows per traced forward pass.
        seed: draws of sources="others".
        """
        if scale not in SCALES:
            raise InvalidInputError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
        return self._measure(prompts, ablations, (scale,), **options)[scale]

    def measure_clean(self, prompts, *, target="top", measure_at=None,
                      fold_value_biases: bool = True, centred: bool = True,
                      neurons: bool = False, logprobs: bool = True,
                      top_k: int = 5) -> Measurement:
        """The clean run alone, as a Measurement with nothing ablated (`components` is empty):
        its logits, log-probabilities and top-k predictions, and every component's direct
        effect; each ablated field equals its clean one (ΔL = SR = 0). Options as in
        `measure_many`.
        """
        return self._measure(prompts, None, ("clean",), target=target, measure_at=measure_at,
                             fold_value_biases=fold_value_biases, centred=centred,
                             neurons=neurons, logprobs=logprobs, top_k=top_k)["clean"][0]

    def measure_scales(self, prompts, ablations, scales=SCALES,
                       **options) -> dict[str, list[Measurement]]:
        """`measure_many` for several norm-scale conventions from the same forward passes.

        Returns {scale: [Measurement per ablation]}; only the algebra differs per scale.
        """
        scales = tuple(scales)
        if not scales or any(s not in SCALES for s in scales):
            raise InvalidInputError(f"scales must be a subset of {', '.join(SCALES)}; got {scales}")
        return self._measure(prompts, ablations, scales, **options)

    @_one_at_a_time
    def _measure(self, prompts, ablations, scales, *, method: str = "zero", sources=None,
                 n_sources: int | None = None, reference=None, positions="all",
                 target="next", measure_at=None, fold_value_biases: bool = True,
                 centred: bool = True, neurons: bool = False, logprobs: bool = False,
                 top_k: int = 5, prefix_reuse: bool = True, suffix_reuse: bool = True,
                 max_rows: int = 64, seed: int = 0) -> dict[str, list[Measurement]]:
        if method not in abl.METHODS:
            raise InvalidInputError(f"unknown method {method!r}; choose from {', '.join(abl.METHODS)}")
        clean_only = ablations is None  # measure_clean: no ablated run at all
        if not clean_only and (isinstance(ablations, str) or not hasattr(ablations, "__iter__")):
            raise InvalidInputError("measure_many takes a list of ablations")
        specs = [()] if clean_only else [parse_components(a) for a in ablations]
        if not specs:
            raise InvalidInputError("no ablations given")
        for spec in specs:
            check_components(spec, self.shape)
        batch = self.tokenize(prompts)
        pos_mask = ablation_positions(batch, positions)
        sites = measurement_sites(batch, target, measure_at, self.tokenizer, self.shape.d_vocab)
        neurons = neurons or any(isinstance(c, Neurons) for s in specs for c in s)
        plan = self._plan_replacement(method, batch, pos_mask, positions, sources, n_sources,
                                      reference, seed)
        # --- everything validated; forward passes start here ---
        suffix = (plan_suffix(batch, pos_mask, sites.rows, sites.positions)
                  if suffix_reuse and not clean_only else None)
        weights = self.weights(centred)
        needs_kv = suffix is not None and suffix.n_cached > 0
        clean = self.clean_run(batch, neurons=neurons, kv=needs_kv)
        if sites.target_ids is None:
            sites.target_ids = self._clean_logits(batch, clean, sites, weights)[0].argmax(-1)
        repl = self._replacement(plan, batch, clean, fold_value_biases, neurons)
        proj, clean_dots, embed = self._clean_effects(batch, clean, sites, weights,
                                                      fold_value_biases, neurons)

        settings = dict(
            model=self.name, family=self.adapter.family, method=method,
            sources=repl.description, n_sources=repl.n_sources, positions=_describe(positions),
            target=_describe(target), measure_at=_describe(measure_at), scale=None,
            fold_value_biases=fold_value_biases, centred=centred,
            dtype=str(self.hf_model.dtype).replace("torch.", ""), seed=seed,
            sr_definition="SR = ΔL − (DE_abl − DE); self_repair_prime = ΔL + DE",
            versions=dict(package_versions()))
        if clean_only:
            settings.update(method=None, sources="none: the clean run alone")
            extra = {}
            if logprobs:
                extra = self._logprob_fields(batch, clean, sites, weights,
                                             self._clean_logits(batch, clean, sites, weights)[0][None],
                                             top_k)
            fields = decompose((), clean_dots, clean_dots, embed, proj, self.shape,
                               self.adapter.parallel, "clean")
            return {"clean": [Measurement(components=(), rows=sites.rows,
                                          positions=sites.positions, target_ids=sites.target_ids,
                                          minus_ids=sites.minus_ids, settings=settings,
                                          **fields, **extra)]}
        results: dict[str, list] = {s: [None] * len(specs) for s in scales}
        for idxs, start in self._groups(specs, repl.n_sources * batch.size, max_rows):
            group = [specs[i] for i in idxs]
            edits = abl.build_edits(group, self.shape, pos_mask, repl)
            n_runs = len(group) * repl.n_sources
            acts = self._run_group(batch, clean, edits, start, n_runs, suffix, prefix_reuse,
                                   neurons)
            dots = dot_components(acts, n_runs, sites.rows, sites.positions, proj, weights,
                                  fold_value_biases, upstream=clean_dots)
            self._check_complete(dots, embed, proj, "ablated run")
            logits_abl = None
            if logprobs:
                resid = site_values(acts.resid_final, n_runs, sites.rows, sites.positions,
                                    acts.offset)
                before = before_suffix(sites.rows, sites.positions, acts.offset)
                if before is not None:
                    clean_resid = clean.resid_final[sites.rows, sites.positions]
                    resid = torch.where(before[:, None], clean_resid, resid)
                logits_abl = full_logits(resid, weights, torch.float32)
            for j, i in enumerate(idxs):
                part = slice(j * repl.n_sources, (j + 1) * repl.n_sources)
                extra = {}
                if logprobs:
                    extra = self._logprob_fields(batch, clean, sites, weights, logits_abl[part],
                                                 top_k)
                for s in scales:
                    fields = decompose(specs[i], clean_dots, _take(dots, part), embed, proj,
                                       self.shape, self.adapter.parallel, s)
                    m = Measurement(components=specs[i], rows=sites.rows,
                                    positions=sites.positions, target_ids=sites.target_ids,
                                    minus_ids=sites.minus_ids,
                                    settings=dict(settings, scale=s), **fields, **extra)
                    results[s][i] = m
                _warn_if_no_effect(m)
        return results

    # --- helpers ----------------------------------------------------------------------
    def _run_group(self, batch, clean, edits, start, n_runs, suffix, prefix_reuse,
                   neurons) -> Activations:
        """One traced forward of `n_runs` ablated copies of the batch (rows run-major).

        prefix_reuse: layers before `start` are skipped (their clean outputs fed in).
        suffix: only each row's suffix positions are computed, on the clean key-value cache.
        """
        if suffix is None:
            ids, mask, position_ids, cache = batch.input_ids, batch.attention_mask, None, None
        else:
            ids, mask, position_ids = suffix.input_ids, suffix.attention_mask, suffix.position_ids
            edits = suffix_edits(edits, suffix.index.repeat(n_runs, 1))
            cache = clean_cache(clean, suffix.n_cached, n_runs) if suffix.n_cached else None
        prefix = None
        if prefix_reuse and start > 0:
            last = clean.block_out[start - 1]
            if suffix is not None:
                last = take_positions(last, suffix.index)
            prefix = [last.repeat(n_runs, 1, 1)] * start  # only the last one is ever read
        acts = run_ablated(self.model, self.adapter, ids.repeat(n_runs, 1),
                           mask.repeat(n_runs, 1), edits, prefix, neurons,
                           None if position_ids is None else position_ids.repeat(n_runs, 1),
                           cache)
        if suffix is not None:
            acts.offset = suffix.offset
        return acts

    def _clean_effects(self, batch, clean, sites, weights, fold_value_biases, neurons):
        """Target projections and the clean run's direct effects, cached with the clean run."""
        minus = None if sites.minus_ids is None else sites.minus_ids.numpy().tobytes()
        key = (batch.key(), sites.rows.numpy().tobytes(), sites.positions.numpy().tobytes(),
               sites.target_ids.numpy().tobytes(), minus, fold_value_biases, weights.centred,
               neurons)
        cached = self._effects_cache.get(key)
        if cached is not None and cached[0] is clean:
            return cached[1]
        proj = project_targets(weights, sites.target_ids, fold_value_biases, neurons,
                               sites.minus_ids)
        clean_dots = dot_components(clean, 1, sites.rows, sites.positions, proj, weights,
                                    fold_value_biases)
        embed = embedding_dots(clean, sites.rows, sites.positions, proj)
        self._check_complete(clean_dots, embed, proj, "clean run")
        self._effects_cache.put(key, (clean, (proj, clean_dots, embed)))
        return proj, clean_dots, embed

    def _plan_replacement(self, method, batch, pos_mask, positions, sources, n_sources,
                          reference, seed) -> dict:
        """Validate and tokenise what the replacement values will come from (no forward pass)."""
        if method == "resample":
            pool_prompts, index, description = abl.resample_index(sources, batch, n_sources, seed)
            pool = batch if pool_prompts is None else self.tokenize(pool_prompts, "source")
            src_pos = abl.source_positions(batch, pool.lengths, index, pos_mask, positions)
            return dict(pool=pool, index=index, src_pos=src_pos, description=description)
        if method == "mean":
            if isinstance(reference, list | tuple) and not reference:
                raise InvalidInputError(
                    "reference is an empty list; give the prompts whose mean replaces the "
                    "activations, or reference=None for the measured prompts")
            return dict(pool=batch if reference is None
                        else self.tokenize(reference, "reference prompt"))
        return {}

    def _replacement(self, plan, batch, clean, fold_value_biases, neurons) -> abl.Replacement:
        """Replacement values; runs the clean pass of source / reference prompts if needed."""
        pool = plan.get("pool")
        pool_acts = None
        if pool is not None:
            pool_acts = clean if pool is batch else self.clean_run(pool, neurons=neurons)
        if "index" in plan:
            return abl.Replacement("resample", plan["index"].shape[0], plan["description"],
                                   self.shape, pool=pool_acts, index=plan["index"],
                                   src_pos=plan["src_pos"])
        if pool is not None:
            who = "the measured prompts" if pool is batch else f"{pool.size} reference prompt(s)"
            n_tok = int(pool.attention_mask.sum())
            return abl.Replacement("mean", 1, f"mean over {n_tok} tokens of {who}", self.shape,
                                   means=abl.token_means(pool_acts, pool.attention_mask))
        zero_heads = self.weights(True).c_V if fold_value_biases else None
        what = "zeros" + (" (heads: their value constant c_h = β₁·W_V + b_V, folded convention)"
                          if zero_heads is not None else "")
        return abl.Replacement("zero", 1, what, self.shape, zero_heads=zero_heads)

    @staticmethod
    def _groups(specs, rows_per_ablation: int, max_rows: int):
        """Ablation indices grouped by first ablated layer, chunked to at most max_rows rows."""
        by_start: dict[int, list[int]] = {}
        for i, spec in enumerate(specs):
            by_start.setdefault(min(c.layer for c in spec), []).append(i)
        per_chunk = max(1, max_rows // rows_per_ablation)
        for start in sorted(by_start):
            idxs = by_start[start]
            for k in range(0, len(idxs), per_chunk):
                yield idxs[k: k + per_chunk], start

    def _check_complete(self, dots: Dots, embed, proj, what: str) -> None:
        """Raise if, at some site, the saved components do not add up to the final residual.

        The model adds n = 3·n_layers + 1 vectors rounded to its dtype (machine epsilon ε) into
        the residual stream: the embeddings, and per layer the attention output, its residual
        add and the MLP's add. Rounding a vector y moves its dot with u by about
        ε/√12 · ‖y‖‖u‖/√d; with ‖y‖ at most about the final residual's norm √d·s, the n
        roundings give σ ≈ 0.3·ε·√n·s‖u‖. The tolerance is 4·ε·√n·s‖u‖ (≈ 13σ; correct runs
        of random and trained models stay below 1.7 in these units in fp32, fp16 and bf16)
        plus float64 slack. A dropped write leaves out a whole component's dot: in bf16 one
        head's write is then about 3 tolerances off.
        """
        gap = completeness_gap(dots, embed, proj)
        eps = torch.finfo(self.hf_model.dtype).eps
        n = 3 * self.shape.n_layers + 1
        tol = 4 * eps * n ** 0.5 * dots.scale * proj.u.norm(dim=-1) + 1e-9 * (1 + dots.resid.abs())
        if (gap > tol).any():
            raise InterventionError(
                f"{what}: the saved components do not add up to the final residual stream "
                f"(max gap {float(gap.max()):.3g}); an intervention did not reach the model "
                "or the architecture adapter reads the wrong modules")

    def _clean_logits(self, batch, clean, sites, weights) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean run's logits and log-probabilities at the sites [N, V] (float64), cached
        with the clean run (every click of the Explorer reuses them)."""
        key = ("logits", batch.key(), sites.rows.numpy().tobytes(),
               sites.positions.numpy().tobytes(), weights.centred)
        cached = self._effects_cache.get(key)
        if cached is not None and cached[0] is clean:
            return cached[1]
        logits = full_logits(clean.resid_final[sites.rows, sites.positions], weights)
        value = (logits, logits.log_softmax(-1))
        self._effects_cache.put(key, (clean, value))
        return value

    def _logprob_fields(self, batch, clean, sites, weights, logits_abl, top_k) -> dict:
        """Target log-probabilities and top-k predictions, clean and ablated (mean over sources).

        logits_abl [K, N, V] (float32); results are float64.
        """
        logprobs_c = self._clean_logits(batch, clean, sites, weights)[1]
        logprobs_a = logits_abl.log_softmax(-1)                   # [K, N, V]
        tgt = sites.target_ids[:, None]
        top_c = logprobs_c.exp().topk(top_k, dim=-1)
        top_a = logprobs_a.exp().mean(0).topk(top_k, dim=-1)
        per_source = logprobs_a.gather(-1, tgt[None].expand(logprobs_a.shape[0], -1, -1))
        return dict(logprob_clean=logprobs_c.gather(-1, tgt)[:, 0],
                    logprob_ablated=per_source[..., 0].double().mean(0),
                    topk_ids_clean=top_c.indices, topk_probs_clean=top_c.values,
                    topk_ids_ablated=top_a.indices, topk_probs_ablated=top_a.values.double())


def _take(dots: Dots, part: slice) -> Dots:
    return Dots(head=dots.head[part], mlp=dots.mlp[part],
                neuron=None if dots.neuron is None else dots.neuron[part],
                resid=dots.resid[part], scale=dots.scale[part])


def _describe(x) -> str:
    return x if isinstance(x, str) else repr(x)


def _warn_if_no_effect(m: Measurement) -> None:
    if m.delta_logit.abs().max() == 0 and m.head_delta_de.abs().max() == 0:
        warnings.warn(f"ablating {m.label} changed nothing at the measured sites (the "
                      "replacement equals the clean activation, or every ablated position comes "
                      "after every measured one)", stacklevel=3)
