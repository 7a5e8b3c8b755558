"""Self-consistency checks of the plain-PyTorch reference (tests/reference.py) against itself
and against the models' real logits. These must pass before the reference is used to judge
the nnsight engine."""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from reference import (  # noqa: E402
    make_gpt2,
    make_llama,
    make_neox,
    reference_measure,
    value_constants,
)

TOL = 1e-4
FAMILIES = ["gpt2", "neox_par", "neox_seq", "llama_gqa", "llama_bias"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: intra-op threading only adds overhead (and thrashes on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    return {
        "gpt2": make_gpt2(),
        "neox_par": make_neox(parallel=True),
        "neox_seq": make_neox(parallel=False),
        "llama_gqa": make_llama(gqa=True, bias=False),
        "llama_bias": make_llama(gqa=True, bias=True),
    }


def _batch(seed: int = 0, B: int = 3, T: int = 10):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 512, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0  # right padding
    mask[2, 5:] = 0
    targets = torch.full((B, T), -1, dtype=torch.long)
    for b in range(B):
        n = int(mask[b].sum())
        targets[b, : n - 1] = ids[b, 1:n]  # next token at every real position but the last
    return ids, mask, targets


IDS, MASK, TARGETS = _batch(0)
SRC, SRC_MASK, _ = _batch(1)
REF, REF_MASK, _ = _batch(2, B=4, T=8)

ABLATIONS = {
    "head": [("head", 1, 2)],
    "two_heads": [("head", 0, 1), ("head", 2, 3)],
    "attn": [("attn", 1)],
    "mlp": [("mlp", 1)],
    "neurons": [("neurons", 2, [3, 17, 200])],
}


_CACHE: dict = {}


def _run(model, targets, method, measure=None, **kw):
    """reference_measure on the shared batch; results cached (tests only read them)."""
    measure = TARGETS if measure is None else measure
    key = (id(model), repr(targets), method, repr(sorted(kw.items())), id(measure))
    if key not in _CACHE:
        extra = {}
        if method == "resample":
            extra = {"source_ids": SRC, "source_mask": SRC_MASK}
        elif method == "mean":
            extra = {"mean_ids": REF, "mean_mask": REF_MASK}
        _CACHE[key] = reference_measure(model, IDS, MASK, measure, targets, method, **extra, **kw)
    return _CACHE[key]


def _close(a, b, tol=TOL):
    assert torch.allclose(a.double(), b.double(), atol=tol, rtol=0), (a - b).abs().max()


def _clean_total(r):
    return (
        r["head_de_clean"].sum(dim=(1, 2))
        + r["attn_bias_de"].sum(dim=1)
        + r["mlp_de_clean"].sum(dim=1)
        + r["embed_de"].sum(dim=1)
        + r["unembed_bias"]
    )


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_completeness_clean(models, family, fold):
    r = _run(models[family], ABLATIONS["head"], "resample", fold_value_biases=fold)
    _close(_clean_total(r), r["logit_clean"])
    # the whole attention layer = its heads + its constant
    _close(r["head_de_clean"].sum(dim=2) + r["attn_bias_de"], r["attn_de_clean"])
    # neurons + out bias = MLP layer, in both runs
    _close(r["neuron_de_clean"].sum(dim=2) + r["mlp_bias_de"], r["mlp_de_clean"])
    _close(r["neuron_de_ablated"].sum(dim=2) + r["mlp_bias_de"], r["mlp_de_ablated"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("ablation", "fold"), [("head", True), ("head", False), ("mlp", True), ("neurons", False)]
)
def test_completeness_ablated_recomputed(models, family, fold, ablation):
    r = _run(
        models[family], ABLATIONS[ablation], "resample", fold_value_biases=fold, scale="recomputed"
    )
    ratio = r["scale_clean"] / r["scale_ablated"]  # constants are stored at the clean scale
    total = (
        r["head_de_ablated"].sum(dim=(1, 2))
        + r["attn_bias_de"].sum(dim=1) * ratio
        + r["mlp_de_ablated"].sum(dim=1)
        + r["embed_de"].sum(dim=1) * ratio
        + r["unembed_bias"]
    )
    _close(total, r["logit_ablated"])
    # neurons + bias = MLP output, except in a layer whose whole output was replaced
    kept = [layer for layer in range(4) if ("mlp", layer) not in ABLATIONS[ablation]]
    neurons = r["neuron_de_ablated"].sum(dim=2) + r["mlp_bias_de"] * ratio[:, None]
    _close(neurons[:, kept], r["mlp_de_ablated"][:, kept])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("method", "ablation"),
    [("zero", "attn"), ("mean", "neurons"), ("resample", "two_heads"), ("resample", "mlp")],
)
def test_sr_ln_closed_form(models, family, method, ablation):
    r = _run(models[family], ABLATIONS[ablation], method)
    _close(r["sr_ln"], r["sr_ln_closed"])
    _close(r["self_repair"], r["sr_heads"] + r["sr_mlp"] + r["sr_ln"])


@pytest.mark.parametrize(
    ("family", "positions"),
    [(f, "all") for f in FAMILIES] + [("gpt2", [2, 3]), ("neox_seq", [1]), ("llama_bias", [0, 4])],
)
def test_upstream_heads_unchanged_and_logits_move(models, family, positions):
    layer, head = 2, 1
    r = _run(models[family], [("head", layer, head)], "resample", positions=positions)
    d_head = r["head_de_ablated"] - r["head_de_clean"]
    # upstream layers and the other heads of the same layer: exactly no change
    assert d_head[:, :layer].abs().max() <= 1e-6
    others = [h for h in range(d_head.shape[2]) if h != head]
    assert d_head[:, layer, others].abs().max() <= 1e-6
    assert (r["mlp_de_ablated"] - r["mlp_de_clean"])[:, :layer].abs().max() <= 1e-6
    # the intervention changed something at the ablated sites
    assert d_head[:, layer, head].abs().max() > 1e-4
    assert (r["logit_ablated"] - r["logit_clean"]).abs().max() > 1e-4


@pytest.mark.parametrize("family", ["gpt2", "neox_par", "llama_bias"])
@pytest.mark.parametrize("scale", ["clean", "recomputed"])
def test_hydra_final_position(models, family, scale):
    """Hydra set-up: attention layer ablated at the final token only, measured on the clean
    run's maximum-likelihood token there."""
    model = models[family]
    last = MASK.sum(dim=1) - 1
    rows = torch.arange(IDS.shape[0])
    with torch.no_grad():
        logits = model(input_ids=IDS, attention_mask=MASK).logits
    measure = torch.full_like(IDS, -1)
    measure[rows, last] = logits[rows, last].argmax(dim=-1)
    r = _run(model, [("attn", 1)], "resample", measure=measure, positions="final", scale=scale)
    assert r["logit_clean"].shape == (IDS.shape[0],)
    _close(r["logit_clean"], logits[rows, last].max(-1).values - logits[rows, last].mean(-1))
    # layer 0 is upstream: its output is unchanged, only the scale may differ
    ratio = r["scale_clean"] / r["scale_ablated"] if scale == "recomputed" else 1.0
    _close(r["attn_de_ablated"][:, 0], r["attn_de_clean"][:, 0] * ratio, 1e-6)
    assert (r["attn_de_ablated"] - r["attn_de_clean"])[:, 1].abs().max() > 1e-4
    if scale == "clean":
        _close(r["sr_ln"], r["sr_ln_closed"])
        _close(r["compensation"], r["sr_heads"] + r["sr_mlp"])
    else:  # the constants' DE changes with the recomputed scale and counts in the layer ΔDE
        d_attn = r["attn_de_ablated"] - r["attn_de_clean"]
        d_mlp = r["mlp_de_ablated"] - r["mlp_de_clean"]
        mlp_from = 2 if family == "neox_par" else 1
        _close(r["compensation"], d_attn[:, 2:].sum(1) + d_mlp[:, mlp_from:].sum(1))


def test_final_positions_only_touch_final(models):
    r = _run(models["gpt2"], [("head", 0, 0)], "resample", positions="final")
    # targets never include a row's final real token, and ablating at the final token cannot
    # reach earlier positions (causal attention): nothing measured changes
    assert r["delta_logit"].abs().max() <= 1e-6


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ablation", ["attn", "mlp", "neurons"])
def test_zero_ablation_folded_has_no_ablated_de(models, family, ablation):
    r = _run(models[family], ABLATIONS[ablation], "zero", fold_value_biases=True)
    assert r["direct_effect_ablated"].abs().max() <= 1e-6
    assert r["direct_effect"].abs().max() > 1e-4
    _close(r["self_repair_prime"], r["self_repair"])  # SR' = SR when DE^abl = 0


@pytest.mark.parametrize("family", ["gpt2", "neox_par", "llama_bias"])
@pytest.mark.parametrize("method", ["mean", "resample"])
def test_fold_convention_invariants(models, family, method):
    a = _run(models[family], ABLATIONS["head"], method, fold_value_biases=True)
    b = _run(models[family], ABLATIONS["head"], method, fold_value_biases=False)
    for key in ["delta_logit", "self_repair", "sr_heads", "sr_mlp", "sr_ln", "logit_ablated"]:
        _close(a[key], b[key], 1e-5)
    # DE itself depends on the convention when a value bias exists
    assert (a["direct_effect"] - b["direct_effect"]).abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_last_layer_head_exact_zeros(models, family):
    r = _run(models[family], [("head", 3, 0)], "resample")
    assert r["sr_heads"].abs().max() <= 1e-6
    if family == "neox_par":  # parallel block: the last MLP is not downstream
        assert r["sr_mlp"].abs().max() <= 1e-6
    else:
        assert r["sr_mlp"].abs().max() > 1e-6


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ablation", ["attn", "mlp"])
def test_compensation_is_downstream_reaction(models, family, ablation):
    r = _run(models[family], ABLATIONS[ablation], "resample")
    # single-layer ablations: everything downstream = heads + MLPs not ablated (clean scale)
    _close(r["compensation"], r["sr_heads"] + r["sr_mlp"])
    _close(r["delta_unembed"], r["direct_effect"])
    _close(r["delta_ablate"], -r["delta_logit"])


def test_nothing_persists(models):
    model = models["llama_bias"]
    with torch.no_grad():
        before = model(input_ids=IDS, attention_mask=MASK).logits.clone()
    for ablation in ABLATIONS.values():
        _run(model, ablation, "zero")
    with torch.no_grad():
        after = model(input_ids=IDS, attention_mask=MASK).logits
    assert torch.equal(before, after)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_shapes(models):
    r = _run(models["gpt2"], ABLATIONS["neurons"], "mean")
    N = int((TARGETS >= 0).sum())
    assert r["head_de_clean"].shape == (N, 4, 4)
    assert r["neuron_de_clean"].shape == (N, 4, 256)
    assert r["embed_de"].shape == (N, 2)
    assert r["logit_clean"].shape == (N,)
    r = _run(models["llama_gqa"], ABLATIONS["neurons"], "mean")
    assert r["embed_de"].shape == (N, 1)


def test_resample_from_itself_changes_nothing(models):
    model = models["neox_seq"]
    r = reference_measure(
        model,
        IDS,
        MASK,
        TARGETS,
        [("attn", 1), ("mlp", 2)],
        "resample",
        source_ids=IDS,
        source_mask=MASK,
    )
    assert r["delta_logit"].abs().max() <= 1e-6
    assert r["self_repair"].abs().max() <= 1e-6


def test_resample_source_lengths(models):
    model = models["gpt2"]
    longer = torch.cat([SRC, SRC[:, :3]], dim=1)  # extra tail is simply unused
    a = reference_measure(
        model,
        IDS,
        MASK,
        TARGETS,
        [("head", 1, 2)],
        "resample",
        source_ids=longer,
        source_mask=torch.ones_like(longer),
    )
    b = reference_measure(
        model,
        IDS,
        MASK,
        TARGETS,
        [("head", 1, 2)],
        "resample",
        source_ids=SRC[:, :10],
        source_mask=torch.ones_like(SRC[:, :10]),
    )
    _close(a["delta_logit"], b["delta_logit"], 1e-5)  # fp32 noise from the longer source run
    short_mask = torch.ones_like(SRC)
    short_mask[0, 6:] = 0  # row 0 of the input is real up to position 9
    with pytest.raises(ValueError, match="padding"):
        reference_measure(
            model,
            IDS,
            MASK,
            TARGETS,
            [("head", 1, 2)],
            "resample",
            source_ids=SRC,
            source_mask=short_mask,
        )


def _logits(model):
    with torch.no_grad():
        lg = model(input_ids=IDS, attention_mask=MASK).logits.double()
    sb, st = (TARGETS >= 0).nonzero(as_tuple=True)
    y = TARGETS[sb, st]
    lg = lg[sb, st]
    return lg[torch.arange(len(y)), y] - lg.mean(-1)


def test_zero_ablation_equals_weight_surgery(models):
    """Hooks vs editing weights on a copy: an independent check of where the hooks act."""
    gpt2 = models["gpt2"]
    d, hd, layer, head = 64, 16, 1, 2
    cols = slice(head * hd, (head + 1) * hd)
    # fold=False: z_h = 0  <=>  the head's rows of c_proj (Conv1D weight is [in, out]) are 0
    surgery = copy.deepcopy(gpt2)
    with torch.no_grad():
        surgery.transformer.h[layer].attn.c_proj.weight[cols, :] = 0
    r = _run(gpt2, [("head", layer, head)], "zero", fold_value_biases=False)
    _close(r["logit_ablated"], _logits(surgery))
    # fold=True: z_h = c[h]  <=>  the head's value weights are 0 and its value bias is
    # beta_1 . W_V + b_V (v = that constant at every token)
    surgery = copy.deepcopy(gpt2)
    with torch.no_grad():
        v_cols = slice(2 * d + head * hd, 2 * d + (head + 1) * hd)
        c_attn = surgery.transformer.h[layer].attn.c_attn
        beta = surgery.transformer.h[layer].ln_1.bias
        c_attn.bias[v_cols] += beta @ c_attn.weight[:, v_cols]
        c_attn.weight[:, v_cols] = 0
    r = _run(gpt2, [("head", layer, head)], "zero", fold_value_biases=True)
    _close(r["logit_ablated"], _logits(surgery))
    # Llama GQA with value bias: query head 3 shares kv head 1; o_proj is nn.Linear [out, in]
    llama = models["llama_bias"]
    surgery = copy.deepcopy(llama)
    with torch.no_grad():
        surgery.model.layers[layer].self_attn.o_proj.weight[:, 3 * hd : 4 * hd] = 0
    r = _run(llama, [("head", layer, 3)], "zero", fold_value_biases=False)
    _close(r["logit_ablated"], _logits(surgery))
    # whole MLP output zero  <=>  down projection weight and bias zero
    neox = models["neox_par"]
    surgery = copy.deepcopy(neox)
    with torch.no_grad():
        surgery.gpt_neox.layers[2].mlp.dense_4h_to_h.weight.zero_()
        surgery.gpt_neox.layers[2].mlp.dense_4h_to_h.bias.zero_()
    r = _run(neox, [("mlp", 2)], "zero")
    _close(r["logit_ablated"], _logits(surgery))
    # neurons zero  <=>  their columns of the down projection are zero
    surgery = copy.deepcopy(neox)
    with torch.no_grad():
        surgery.gpt_neox.layers[2].mlp.dense_4h_to_h.weight[:, [3, 17, 200]] = 0
    r = _run(neox, [("neurons", 2, [3, 17, 200])], "zero")
    _close(r["logit_ablated"], _logits(surgery))


def test_measured_value_constant_is_the_spec_formula(models):
    """The constant measured with zeroed norm inputs is SPEC's c_h = (beta_1 . W_V + b_V)[h],
    written out from the parameters of each family (GPT-2 Conv1D [in, out]; NeoX per-head
    [q | k | v] rows of nn.Linear [out, in]; Llama: no beta_1, kv head h // n_rep)."""
    gpt2 = models["gpt2"]
    d, hd, H = 64, 16, 4
    for layer, block in enumerate(gpt2.transformer.h):
        W, b = block.attn.c_attn.weight, block.attn.c_attn.bias
        c = (block.ln_1.bias @ W[:, 2 * d :] + b[2 * d :]).reshape(H, hd)
        _close(value_constants(gpt2)[layer], c, 1e-5)
        assert (c - b[2 * d :].reshape(H, hd)).abs().max() > 0.05  # beta_1 . W_V matters
    for family in ("neox_par", "neox_seq"):
        neox = models[family]
        for layer, block in enumerate(neox.gpt_neox.layers):
            qkv = block.attention.query_key_value
            rows = qkv.weight.reshape(H, 3, hd, d)[:, 2]  # [H, hd, d]
            c = torch.einsum("hkd,d->hk", rows, block.input_layernorm.bias)
            c = c + qkv.bias.reshape(H, 3, hd)[:, 2]
            _close(value_constants(neox)[layer], c, 1e-5)
    llama = models["llama_bias"]
    for layer, block in enumerate(llama.model.layers):
        kv = block.self_attn.v_proj.bias.reshape(2, hd)
        _close(value_constants(llama)[layer], kv[torch.tensor([0, 0, 1, 1])], 1e-6)
    assert all(c.abs().max() == 0 for c in value_constants(models["llama_gqa"]))
