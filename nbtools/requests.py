"""What a measurement asks of the model, as plain data, and what comes back, as `Dots`.

`measurement_job` turns validated inputs (a batch, its sites, the ablation groups, where the
replacement values come from, the suffix layout) into the job dict that
`nbtools.tracing.measure_session` runs — tensors, numbers, strings, bools and lists/dicts of
them only, so that it can be sent to NDIF as it is. Nothing big travels: masks are per
ablation and per position, the constants are vectors, activations stay where the model runs
(`state`, filled only by local runs). `clean_terms` and `group_dots` read the result.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from .batching import Batch, Sites
from .effects import Dots, Terms, Weights
from .models.adapters import Adapter
from .suffix import Suffix


@dataclass
class Source:
    """Where replacement values come from (validated, tokenised; no forward pass yet).

    method: "zero" | "mean" | "resample"; batch: the source / reference prompts, or None for
    the measured prompts themselves; index [K, B], src_pos [K, B, T] (resample: source row and
    position for every source k, prompt row b, position t); description: recorded on results.
    """

    method: str
    n_sources: int
    description: str
    batch: Batch | None = None
    index: torch.Tensor | None = None
    src_pos: torch.Tensor | None = None


@dataclass
class Group:
    """Ablations run together in one traced forward pass: `indices` into the call's list,
    `start` (the earliest ablated layer) and per-layer masks (`ablation.edit_masks`)."""

    indices: list[int]
    start: int
    masks: dict


def cache_argument(hf_model) -> str:
    """The forward argument that takes a key-value cache ("cache" from transformers 5.2x)."""
    params = inspect.signature(hf_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _nonzero(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None or not x.any() else x


def model_job(adapter: Adapter, weights: Weights) -> dict:
    """The parts of every job that describe the model (paths, sizes, conventions, constants)."""
    s = adapter.shape
    return dict(paths=adapter.paths, conv1d=adapter.conv1d, n_layers=s.n_layers,
                n_heads=s.n_heads, d_head=s.d_head, d_model=s.d_model, d_mlp=s.d_mlp,
                layernorm=adapter.norm == "layernorm", eps=adapter.norm_eps(),
                gamma_offset=adapter.gamma_offset, branch_offset=adapter.gamma_offset,
                branch_eps=adapter.branch_eps,
                softcap=adapter.final_softcap, windows=adapter.attention_windows(),
                cache_arg=cache_argument(adapter.hf_model), beta=weights.beta,
                W_U_mean=weights.W_U_mean, b_U_mean_hat=weights.b_U_mean_hat())


def measurement_job(model: dict, weights: Weights, batch: Batch, sites: Sites,
                    pos_mask: torch.Tensor, groups: list[Group], n_ablations: list[int],
                    source: Source, suffix: Suffix | None, *, fold: bool, centred: bool,
                    neurons: bool, logprobs: bool, top_k: int, prefix_reuse: bool,
                    state: dict, clean_dots: dict | None, local: bool) -> dict:
    """The job of one `measure_session` (see `nbtools.tracing`).

    model: `model_job(...)`. groups: the ablated groups, n_ablations[i] ablations in group i.
    state: {"measured": kept clean activations of `batch` or None, "source": of the source
    batch or None} (local runs; remote: both None). clean_dots: the clean run's reduced
    result for these sites (local cache) or None. Runs, in order: the clean run of the
    measured batch when its activations or its dots are missing, the clean run of the source
    batch when needed, then each group (rows: ablation × source × prompt row).
    """
    K = source.n_sources
    kv = suffix is not None and suffix.n_cached > 0
    runs = []
    if state["measured"] is None or clean_dots is None:
        runs.append(dict(kind="clean", batch="measured", start=0, n_runs=1, offset=None,
                         kv=kv, edits={}))
    pool = "measured" if source.batch is None else "source"
    if source.method in ("mean", "resample") and pool == "source" and state["source"] is None:
        runs.append(dict(kind="clean", batch="source", start=0, n_runs=1, offset=None,
                         kv=False, edits={}))
    for group, A in zip(groups, n_ablations, strict=True):
        runs.append(dict(kind="ablated", batch="measured", start=group.start, n_runs=A * K,
                         offset=None if suffix is None else suffix.offset, kv=False,
                         edits=group.masks))
    batches = {"measured": (batch.input_ids, batch.attention_mask)}
    if source.batch is not None:
        batches["source"] = (source.batch.input_ids, source.batch.attention_mask)
    pool_mask = None
    if source.method == "mean":
        pool_mask = (batch if source.batch is None else source.batch).attention_mask.bool()
    zero_heads = weights.c_V if fold else None
    replace = dict(method=source.method, n_sources=K, pool=pool, index=source.index,
                   src_pos=source.src_pos, pool_mask=pool_mask, zero_heads=zero_heads)
    suffix_job = None if suffix is None else dict(
        index=suffix.index, input_ids=suffix.input_ids, position_ids=suffix.position_ids,
        attention_mask=suffix.attention_mask, n_cached=suffix.n_cached)
    return dict(model, sites=dict(rows=sites.rows, pos=sites.positions, targets=sites.target_ids,
                                  minus=sites.minus_ids),
                batches=batches, runs=runs, pos_mask=pos_mask, replace=replace,
                suffix=suffix_job, kv=kv, prefix_reuse=prefix_reuse, fold=fold,
                centred=centred, neurons=neurons, logprobs=logprobs, top_k=top_k,
                c_V=_nonzero(weights.c_V) if fold else None,
                attn_const=_nonzero(weights.attn_bias(fold)),
                mlp_const=_nonzero(weights.b_out), state=state, clean_dots=clean_dots,
                return_u=local)


def clean_terms(clean: dict) -> Terms:
    """The sites' fixed terms from a session's clean result."""
    return Terms(attn_bias=clean["attn_bias"], mlp_bias=clean["mlp_bias"], embed=clean["embed"],
                 unembed_bias=clean["unembed_bias"], u_norm=clean["u_norm"])


def clean_dots(clean: dict) -> Dots:
    """The clean run's Dots (G = 1) from a session's clean result."""
    return Dots.from_session(clean, run_axis=False)


def group_dots(group: dict) -> Dots:
    """One ablated group's Dots [A·K, N, layers start.., ...] from a session's result."""
    return Dots.from_session(group)
