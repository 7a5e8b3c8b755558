"""`Lab`: a loaded model plus the verbs researchers use — `measure`, `measure_many`,
`measure_clean`, `measure_scales`, `attention_pattern`.

A Lab validates every input before any forward pass, then runs each call as ONE nnsight
session (`nbtools.tracing`), here or on NDIF (`remote`): the clean run, the source run and
every ablated group, batched into few traced forward passes (rows ordered ablation × source ×
prompt). By default each ablated run starts at its first ablated layer from the clean
residual stream (prefix reuse) and computes only the positions an ablation can change
(suffix reuse). A local Lab keeps the clean activations and the clean run's reduced results
of a few batches, so the next call on the same prompts (an Explorer click) traces only the
ablated run; a remote one keeps nothing between calls.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

from . import ablation as abl
from .batching import Batch, ablation_positions, make_batch, measurement_sites
from .components import Neurons, check_components, parse_components
from .effects import Dots, Weights, before_suffix, with_upstream
from .errors import InterventionError, InvalidInputError, whole_number
from .lru import LRU
from .remote import (
    DEFAULT_TIMEOUT_S,
    RemoteRunError,
    backend_for,
    explain,
    load_constants,
    store_constants,
)
from .repair import completeness_gap, decompose
from .requests import (
    Group,
    Source,
    clean_dots,
    clean_terms,
    group_dots,
    measurement_job,
    model_job,
)
from .results import Measurement
from .suffix import plan_suffix
from .tracing import attention_session, constants_session, eager_attention, measure_session

SCALES = ("clean", "recomputed")
REMOTE_CHOICES = (False, True, "local")
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


def check_remote(remote) -> bool | str:
    """Validate a `remote` setting: False, True (NDIF), "local" (nnsight's serialising
    simulation of a remote run, here) or an NDIF host URL."""
    if remote is False or remote is True or remote == "local":
        return remote
    if isinstance(remote, str) and remote.startswith(("http://", "https://")):
        return remote
    raise InvalidInputError(
        f"remote={remote!r}: use False, True (NDIF), 'local' (nnsight's local simulation of "
        "the remote path) or an NDIF host URL")


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
    weights: file, quantization type; else None), `remote` (False: runs here; True / a host
    URL: every call is one request to NDIF; "local": nnsight's serialising simulation of one).
    Safe to share between threads: measurements run one at a time. `nbtools.load` builds one
    from anything a user names; `on(remote)` gives a Lab of the same model run elsewhere.
    """

    def __init__(self, model, adapter, name: str, source: dict | None = None, remote=False, *,
                 timeout: float = DEFAULT_TIMEOUT_S, on_status=None):
        self.model = model
        self.hf_model = model._module
        self.tokenizer = model.tokenizer
        self.adapter = adapter
        self.shape = adapter.shape
        self.name = name
        self.source = source
        self.remote = check_remote(remote)
        self.timeout = timeout        # seconds a remote request may take
        self.on_status = on_status    # called with (status, elapsed s) as a request proceeds
        self._weights: Weights | None = None
        self._states = LRU(_CACHE_SIZE)   # batch → the clean run's kept activations (local)
        self._clean = LRU(_CACHE_SIZE)    # batch, sites, options → the clean run's dots (local)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        s = self.shape
        where = "" if not self.remote else f", remote={self.remote!r}"
        return (f"Lab({self.name!r}: {self.adapter.family}, {s.n_layers} layers × {s.n_heads} heads, "
                f"d_model {s.d_model}, d_mlp {s.d_mlp}, vocab {s.d_vocab}, "
                f"{'parallel' if self.adapter.parallel else 'sequential'} blocks{where})")

    def on(self, remote, *, timeout: float | None = None, on_status=None) -> Lab:
        """This Lab's model run per `remote` (a new Lab with its own caches and settings; this
        one is unchanged), or this Lab itself when nothing would change."""
        remote = check_remote(remote)
        if remote == self.remote and timeout is None and on_status is None:
            return self
        if not remote and self.hf_model.device.type == "meta":
            raise InvalidInputError(f"{self.name} has no weights here (it was loaded for a "
                                    "remote run); it can only run remotely")
        lab = Lab(self.model, self.adapter, self.name, self.source, remote,
                  timeout=self.timeout if timeout is None else timeout,
                  on_status=on_status or self.on_status)
        lab._weights = self._weights
        return lab

    def clear_cache(self) -> None:
        """Forget the kept clean runs (the next call on the same prompts runs them again)."""
        with self._lock:
            self._states.clear()
            self._clean.clear()

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return self.shape.n_layers

    @property
    def n_heads(self) -> int:
        """Attention heads per layer."""
        return self.shape.n_heads

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model runs in: NDIF runs bfloat16, a local model its own."""
        return self.hf_model.dtype if self.remote in (False, "local") else torch.bfloat16

    @_one_at_a_time
    def weights(self) -> Weights:
        """The small float64 constants the algebra needs (final-norm γ and β, the unembedding's
        vocabulary mean, the layers' biases, the heads' value constants), read once from the
        model where it runs; no big matrix is copied (see `effects.Weights`)."""
        if self._weights is not None:
            return self._weights
        remote = self.remote not in (False, "local")
        consts = load_constants(self.model) if remote else None
        if consts is None:
            a, s = self.adapter, self.shape
            job = dict(paths=a.paths, conv1d=a.conv1d, n_layers=s.n_layers, n_heads=s.n_heads,
                       d_head=s.d_head, d_model=s.d_model, gamma_offset=a.gamma_offset,
                       value=a.value(), probe_ids=torch.zeros(1, 1, dtype=torch.long),
                       vocab_chunk=max(1, 2 ** 21 // s.d_model))
            consts = self._session(constants_session, job)
            if remote:
                store_constants(self.model, consts)
        self._weights = Weights.from_session(consts)
        return self._weights

    def _session(self, session, job: dict):
        """Run a session of `nbtools.tracing` here or remotely; a remote failure becomes one
        RemoteRunError that says what to do."""
        backend = backend_for(self.model, self.remote, on_status=self.on_status,
                              timeout=self.timeout)
        if self.remote in (False, "local"):
            return session(self.model, job, backend)
        try:
            return session(self.model, job, backend)
        except RemoteRunError:
            raise
        except Exception as err:  # nnsight's RemoteError, httpx / websocket errors
            raise explain(err, self.remote) from err

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
    def attention_pattern(self, prompts, layer: int, head: int | None = None):
        """The clean run's attention weights at `layer` (rows: query positions, columns: key
        positions; causal, each row sums to 1): [T, T] for `head`, else [n_heads, T, T].

        prompts: a string, a list of strings or token ids [B, T]. One prompt gives one
        tensor; several give a list, each trimmed to its prompt's own T tokens.
        """
        s = self.shape
        layer = _in_range(layer, s.n_layers, "layer")
        head = None if head is None else _in_range(head, s.n_heads, "head", " or None")
        batch = self.tokenize(prompts)
        # with the clean run's block outputs at hand (an Explorer click left them), one
        # layer is traced; else the earlier layers run too
        state = self._states.get(batch.key()) if not self.remote else None
        prefix = state["block_out"][layer - 1] if state is not None and layer > 0 else None
        job = dict(paths=self.adapter.paths, input_ids=batch.input_ids,
                   attention_mask=batch.attention_mask, layer=layer, prefix=prefix)
        run_here = self.remote in (False, "local")  # NDIF runs eager attention itself
        with eager_attention(self.hf_model) if run_here else contextlib.nullcontext():
            weights = self._session(attention_session, job).float()
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
            string or a token id, or a pair (a, b) of them for the logit difference a − b
            (the IOI metric; every quantity is linear in the target direction, so it is one
            projection onto u_a − u_b). measure_at: "all", "final" or indices (default: every
            position with a next token for "next", else the final one).
        scale: "clean" (ablated DEs use the clean final-norm scale; R&N) or "recomputed".
        fold_value_biases: fold each head's value-bias constant into the layer's bias (as
            TransformerLens and R&N do). centred: logits centred over the vocabulary.
        neurons: also compute every MLP neuron's direct effect (anti-erasure views).
        logprobs: also compute target log-probabilities and top-k predictions (full vocab).
        prefix_reuse: start ablated runs at their first ablated layer (identical results).
        suffix_reuse: compute ablated runs only from each prompt's first ablated position to
            its last measured one, attending to the clean run's keys and values of earlier
            positions (equal to the full recomputation up to float rounding).
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
        top_k, max_rows, seed = _check_options(
            dict(fold_value_biases=fold_value_biases, centred=centred, neurons=neurons,
                 logprobs=logprobs, prefix_reuse=prefix_reuse, suffix_reuse=suffix_reuse),
            top_k, max_rows, seed, self.shape.d_vocab)
        clean_only = ablations is None  # measure_clean: no ablated run at all
        if not clean_only and (isinstance(ablations, str) or not hasattr(ablations, "__iter__")):
            raise InvalidInputError("measure_many takes a list of ablations")
        specs = [] if clean_only else [parse_components(a) for a in ablations]
        if not clean_only and not specs:
            raise InvalidInputError("no ablations given")
        for spec in specs:
            check_components(spec, self.shape)
        batch = self.tokenize(prompts)
        pos_mask = ablation_positions(batch, positions)
        sites = measurement_sites(batch, target, measure_at, self.tokenizer, self.shape.d_vocab)
        neurons = neurons or any(isinstance(c, Neurons) for s in specs for c in s)
        source = self._plan_source("zero" if clean_only else method, batch, pos_mask,
                                   positions, sources, n_sources, reference, seed,
                                   fold_value_biases)
        # --- everything validated; forward passes start here ---
        suffix = (plan_suffix(batch, pos_mask, sites.rows, sites.positions)
                  if suffix_reuse and not clean_only else None)
        groups = list(self._groups(specs, source.n_sources * batch.size, max_rows))
        options = dict(fold=fold_value_biases, centred=centred, neurons=neurons,
                       logprobs=logprobs, top_k=top_k)
        clean, runs = self._run(batch, sites, pos_mask, groups, source, suffix, options,
                                prefix_reuse)
        if sites.target_ids is None:
            sites.target_ids = clean["targets"]
        settings = dict(
            model=self.name, family=self.adapter.family,
            method=None if clean_only else method,
            sources="none: the clean run alone" if clean_only else source.description,
            n_sources=source.n_sources, positions=_describe(positions),
            target=_describe(target), measure_at=_describe(measure_at), scale=None,
            fold_value_biases=fold_value_biases, centred=centred,
            dtype=str(self.dtype).replace("torch.", ""), seed=seed,
            sr_definition="SR = ΔL − (DE_abl − DE); self_repair_prime = ΔL + DE",
            logit=("raw: before the final softcap "
                   f"c·tanh(ℓ/c), c = {self.adapter.final_softcap} (capped logits: "
                   "logit_capped_clean/_ablated with logprobs=True)"
                   if self.adapter.final_softcap is not None else "raw (no final softcap)"),
            versions=dict(package_versions()))
        terms, dots_c = clean_terms(clean), clean_dots(clean)
        self._check_complete(dots_c, terms, "clean run")
        if clean_only:
            extra = _logprob_fields(clean, None, 0) if logprobs else {}
            fields = decompose((), dots_c, dots_c, terms, self.shape, self.adapter.parallel,
                               "clean")
            return {"clean": [Measurement(components=(), rows=sites.rows, positions=sites.positions,
                                          target_ids=sites.target_ids, minus_ids=sites.minus_ids,
                                          settings=settings, **fields, **extra)]}
        before = before_suffix(sites.rows, sites.positions,
                               None if suffix is None else suffix.offset)
        results: dict[str, list] = {s: [None] * len(specs) for s in scales}
        K = source.n_sources
        for group, got in zip(groups, runs, strict=True):
            dots = with_upstream(group_dots(got), group.start, dots_c, before)
            self._check_complete(dots, terms, "ablated run")
            for j, i in enumerate(group.indices):
                part = slice(j * K, (j + 1) * K)
                extra = _logprob_fields(clean, got, j, part, before) if logprobs else {}
                for s in scales:
                    fields = decompose(specs[i], dots_c, dots.take(part), terms, self.shape,
                                       self.adapter.parallel, s)
                    m = Measurement(components=specs[i], rows=sites.rows,
                                    positions=sites.positions, target_ids=sites.target_ids,
                                    minus_ids=sites.minus_ids,
                                    settings=dict(settings, scale=s), **fields, **extra)
                    results[s][i] = m
                _warn_if_no_effect(m)
        return results

    # --- helpers ----------------------------------------------------------------------
    def _run(self, batch, sites, pos_mask, groups, source, suffix, options, prefix_reuse):
        """One measurement session (here or remote); returns (the clean run's result for the
        sites, [each group's result]). A local Lab reuses and keeps clean activations and
        clean results of recent batches."""
        local = not self.remote
        kv = suffix is not None and suffix.n_cached > 0
        state = {"measured": self._state(batch, options["neurons"], kv) if local else None,
                 "source": (self._state(source.batch, options["neurons"], False)
                            if local and source.batch is not None else None)}
        key = (batch.key(), sites.rows.numpy().tobytes(), sites.positions.numpy().tobytes(),
               None if sites.target_ids is None else sites.target_ids.numpy().tobytes(),
               None if sites.minus_ids is None else sites.minus_ids.numpy().tobytes(),
               tuple(sorted(options.items())))
        cached = self._clean.get(key) if local else None
        job = measurement_job(model_job(self.adapter, self.weights()), self.weights(), batch,
                              sites, pos_mask, groups, [len(g.indices) for g in groups],
                              source, suffix, prefix_reuse=prefix_reuse, state=state,
                              clean_dots=cached, local=local, **options)
        got = self._session(measure_session, job) if job["runs"] else \
            {"clean": None, "groups": []}
        if local:
            self._states.put(batch.key(), state["measured"])
            if source.batch is not None and state["source"] is not None:
                self._states.put(source.batch.key(), state["source"])
            if cached is None:
                self._clean.put(key, got["clean"])
        return (cached if cached is not None else got["clean"]), got["groups"]

    def _state(self, batch: Batch, neurons: bool, kv: bool) -> dict | None:
        """The kept clean activations of `batch` if they hold what is needed, else None."""
        state = self._states.get(batch.key())
        if state is None or (neurons and not state["act"]) or (kv and "keys" not in state):
            return None
        return state

    def _plan_source(self, method, batch, pos_mask, positions, sources, n_sources,
                     reference, seed, fold_value_biases) -> Source:
        """Validate and tokenise where the replacement values come from (no forward pass)."""
        if method == "resample":
            pool_prompts, index, description = abl.resample_index(sources, batch, n_sources, seed)
            pool = None if pool_prompts is None else self.tokenize(pool_prompts, "source")
            src_pos = abl.source_positions(batch, batch.lengths if pool is None else pool.lengths,
                                           index, pos_mask, positions)
            return Source("resample", int(index.shape[0]), description, pool, index, src_pos)
        if method == "mean":
            if isinstance(reference, list | tuple) and not reference:
                raise InvalidInputError(
                    "reference is an empty list; give the prompts whose mean replaces the "
                    "activations, or reference=None for the measured prompts")
            pool = None if reference is None else self.tokenize(reference, "reference prompt")
            who = "the measured prompts" if pool is None else f"{pool.size} reference prompt(s)"
            n_tok = int((batch if pool is None else pool).attention_mask.sum())
            return Source("mean", 1, f"mean over {n_tok} tokens of {who}", pool)
        folded = fold_value_biases and self.weights().c_V is not None
        what = "zeros" + (" (heads: their value constant c_h = β₁·W_V + b_V, folded convention)"
                          if folded else "")
        return Source("zero", 1, what)

    def _groups(self, specs, rows_per_ablation: int, max_rows: int):
        """Ablations grouped by first ablated layer, chunked to at most max_rows rows."""
        by_start: dict[int, list[int]] = {}
        for i, spec in enumerate(specs):
            by_start.setdefault(min(c.layer for c in spec), []).append(i)
        per_chunk = max(1, max_rows // rows_per_ablation)
        for start in sorted(by_start):
            idxs = by_start[start]
            for k in range(0, len(idxs), per_chunk):
                chunk = idxs[k: k + per_chunk]
                yield Group(chunk, start, abl.edit_masks([specs[i] for i in chunk], self.shape))

    def _check_complete(self, dots: Dots, terms, what: str) -> None:
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
        gap = completeness_gap(dots, terms)
        eps = torch.finfo(self.dtype).eps
        n = 3 * self.shape.n_layers + 1
        tol = 4 * eps * n ** 0.5 * dots.scale * terms.u_norm + 1e-9 * (1 + dots.resid.abs())
        if (gap > tol).any():
            raise InterventionError(
                f"{what}: the saved components do not add up to the final residual stream "
                f"(max gap {float(gap.max()):.3g}); an intervention did not reach the model "
                "or the architecture adapter reads the wrong modules")


def _in_range(value, n: int, what: str, extra: str = "") -> int:
    """An integral `value` (int, NumPy or 0-d torch integer) in 0..n-1, else InvalidInputError."""
    try:
        index = whole_number(value, what)
    except InvalidInputError:
        index = None
    if index is None or not 0 <= index < n:
        raise InvalidInputError(f"{what} must be an integer in 0..{n - 1}{extra}; got {value!r}")
    return index


def _check_options(flags: dict, top_k, max_rows, seed, d_vocab: int) -> tuple[int, int, int]:
    """The measurement options' types and ranges (before any forward pass): the flags are
    True or False, top_k in 1..d_vocab, max_rows ≥ 1, seed an integer."""
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            raise InvalidInputError(f"{name} must be True or False, not {value!r}")
    top_k = whole_number(top_k, "top_k")
    if not 1 <= top_k <= d_vocab:
        raise InvalidInputError(f"top_k must be in 1..{d_vocab} (the vocabulary), got {top_k}")
    max_rows = whole_number(max_rows, "max_rows")
    if max_rows < 1:
        raise InvalidInputError(f"max_rows must be at least 1 (rows per traced forward pass), "
                                f"got {max_rows}")
    return top_k, max_rows, whole_number(seed, "seed")


def _logprob_fields(clean: dict, group: dict | None, j: int, part: slice | None = None,
                    before: torch.Tensor | None = None) -> dict:
    """Target log-probabilities and top-k predictions, clean and ablated (mean over sources).

    group: an ablated group's result (None: the clean run alone), j the ablation's index in
    it, part its runs; sites `before` their row's suffix are clean in every ablated run.
    """
    out = dict(logprob_clean=clean["logprob"], topk_ids_clean=clean["topk_ids"],
               topk_probs_clean=clean["topk_probs"])
    capped = "logit_capped" in clean  # a final logit softcap (Gemma 2)
    if capped:
        out["logit_capped_clean"] = clean["logit_capped"]
    if group is None:
        return dict(out, logprob_ablated=clean["logprob"], topk_ids_ablated=clean["topk_ids"],
                    topk_probs_ablated=clean["topk_probs"],
                    **({"logit_capped_ablated": clean["logit_capped"]} if capped else {}))
    logprob, ids, probs = group["logprob"][part].mean(0), group["topk_ids"][j], group["topk_probs"][j]
    logit_capped = group["logit_capped"][part].mean(0) if capped else None
    if before is not None:
        logprob = torch.where(before, clean["logprob"], logprob)
        ids = torch.where(before[:, None], clean["topk_ids"], ids)
        probs = torch.where(before[:, None], clean["topk_probs"], probs)
        if capped:
            logit_capped = torch.where(before, clean["logit_capped"], logit_capped)
    if capped:
        out["logit_capped_ablated"] = logit_capped
    return dict(out, logprob_ablated=logprob, topk_ids_ablated=ids, topk_probs_ablated=probs)


def _describe(x) -> str:
    return x if isinstance(x, str) else repr(x)


def _warn_if_no_effect(m: Measurement) -> None:
    if m.delta_logit.abs().max() == 0 and m.head_delta_de.abs().max() == 0:
        warnings.warn(f"ablating {m.label} changed nothing at the measured sites (the "
                      "replacement equals the clean activation, or every ablated position comes "
                      "after every measured one)", stacklevel=3)
