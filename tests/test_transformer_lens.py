"""Cross-check against TransformerLens (the library the R&N numbers come from), both value-bias
conventions, on the embedded model and a random GPT-2, and on Gemma-3-270M (SPEC §7). Skipped where transformer_lens is not
installed (it is no dependency of nbtools)."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import word_tokenizer
from reference import make_gpt2

import nbtools

tl_lib = pytest.importorskip("transformer_lens")
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights  # noqa: E402

HEADS = [(0, 1), (1, 2), (2, 3), (3, 0)]


def hooked(hf, fold: bool):
    """The HF GPT-2 as a HookedTransformer with TransformerLens' default weight processing."""
    c = hf.config
    cfg = tl_lib.HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions,
        act_fn=c.activation_function, normalization_type="LN", eps=c.layer_norm_epsilon,
        positional_embedding_type="standard", default_prepend_bos=False, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tl_lib.HookedTransformer(cfg)
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=True,
                                      center_writing_weights=True, center_unembed=True,
                                      fold_value_biases=fold)
    return model.eval()


def tl_measure(model, ids, layer, head):
    """Per-site clean DE of every head, and zero-ablation ΔL, SR, SR_heads, SR_MLP [B, T-1]."""
    L, y = model.cfg.n_layers, ids[:, 1:]
    u = model.W_U.T[y].double()

    def run(hooks=()):
        cache = {}
        names = ["ln_final.hook_scale", *(f"blocks.{i}.attn.hook_z" for i in range(L)),
                 *(f"blocks.{i}.hook_mlp_out" for i in range(L))]
        keep = [(n, lambda x, hook: cache.__setitem__(hook.name, x.detach().clone()))
                for n in names]
        with torch.no_grad():
            lg = model.run_with_hooks(ids, fwd_hooks=[*hooks, *keep])[:, :-1].double()
        return lg.gather(-1, y[..., None])[..., 0] - lg.mean(-1), cache

    def dots(cache, s):
        heads = torch.stack([torch.einsum("bthe,hed,btd->bth", cache[f"blocks.{i}.attn.hook_z"]
                                          [:, :-1].double(), model.W_O[i].double(), u)
                             for i in range(L)], dim=2) / s[..., None, None]
        mlps = torch.stack([(cache[f"blocks.{i}.hook_mlp_out"][:, :-1].double() * u).sum(-1)
                            for i in range(L)], dim=-1) / s[..., None]
        return heads, mlps

    def zero(z, hook):
        z[:, :, head] = 0.0
        return z

    logit_c, clean = run()
    s = clean["ln_final.hook_scale"][:, :-1, 0].double()
    (head_c, mlp_c), (logit_a, ablated) = dots(clean, s), run([(f"blocks.{layer}.attn.hook_z",
                                                                 zero)])
    head_a, mlp_a = dots(ablated, s)
    delta = head_a - head_c
    own = delta[:, :, layer, head].clone()
    delta[:, :, layer, head] = 0
    d_logit = logit_a - logit_c
    return dict(head_de_clean=head_c, delta_logit=d_logit, self_repair=d_logit - own,
                sr_heads=delta.sum((-1, -2)), sr_mlp=(mlp_a - mlp_c).sum(-1))


@pytest.fixture(scope="module")
def models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"tiny": (nbtools.load("tiny"), 8192),
                "random": (nbtools.load(make_gpt2(seed=3), tokenizer=word_tokenizer()), 512)}


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("name", ["tiny", "random"])
def test_matches_transformer_lens(models, name, fold):
    lab, vocab = models[name]
    ids = torch.randint(1, vocab, (4, 24), generator=torch.Generator().manual_seed(0))
    model = hooked(lab.hf_model, fold)
    for layer, head in HEADS:
        theirs = tl_measure(model, ids, layer, head)
        r = lab.measure(ids, f"{layer}.{head}", method="zero", fold_value_biases=fold)
        for q, value in theirs.items():
            mine = getattr(r, q).reshape(value.shape)
            torch.testing.assert_close(mine, value, atol=2e-5, rtol=0, msg=q)


def test_gemma3_head_de_and_zero_ablation_match_transformer_lens():
    """Gemma-3-270M (TransformerLens 3.9 supports it, offline from the loaded HF model): every
    head's clean DE through its layer's post-attention norm at the clean scale (SPEC §7), from
    TL's hook_z and ln1_post / ln_final scales, and one head's zero-ablation ΔL."""
    from nbtools.models.registry import cache_root

    folder = cache_root() / "gemma3-270m"
    if not (folder / "model.safetensors").exists():
        pytest.skip(f"Gemma-3-270M not cached at {folder}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab = nbtools.load(str(folder))
        model = tl_lib.HookedTransformer.from_pretrained_no_processing(
            "google/gemma-3-270m", hf_model=lab.hf_model, tokenizer=lab.tokenizer,
            dtype=torch.float32, device="cpu").eval()
    ids = lab.tokenize("The Eiffel Tower is located in the city of").input_ids
    ablated_head = nbtools.Head(12, 2)
    r = lab.measure(ids, ablated_head, method="zero", target="top", measure_at="final")
    y, f64 = int(r.target_ids[0]), torch.float64
    W_U = model.W_U.detach().to(f64)
    u = model.ln_final.w.detach().to(f64) * (W_U[:, y] - W_U.mean(1))
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
    s = cache["ln_final.hook_scale"][0, -1, 0].to(f64)
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"][0, -1].to(f64)
        s_b = cache[f"blocks.{layer}.ln1_post.hook_scale"][0, -1, 0].to(f64)
        w_u = model.blocks[layer].ln1_post.w.detach().to(f64) * u
        de = torch.einsum("hk,hkd,d->h", z, model.W_O[layer].detach().to(f64), w_u) / s_b / s
        torch.testing.assert_close(r.head_de_clean[0, layer], de, atol=2e-5, rtol=0)

    def zero(z, hook):
        z[:, :, ablated_head.head] = 0.0
        return z

    with torch.no_grad():
        ablated = model.run_with_hooks(ids, fwd_hooks=[("blocks.12.attn.hook_z", zero)])
    centred = [(x[0, -1, y] - x[0, -1].mean()).to(f64) for x in (logits, ablated)]
    torch.testing.assert_close(r.delta_logit[0], centred[1] - centred[0], atol=1e-4, rtol=0)
