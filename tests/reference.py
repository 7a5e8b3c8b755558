"""Independent plain-PyTorch reference for the self-repair measurements of SPEC.md.

Written from the shared ``SPEC.md`` and the installed ``transformers`` sources only: it uses
``torch`` forward hooks / forward pre-hooks, never nnsight, and never imports ``nbtools``.
Speed is irrelevant here; every step is meant to be obviously correct.

Supported model classes: ``GPT2LMHeadModel``, ``GPTNeoXForCausalLM`` (parallel and sequential
residual), ``LlamaForCausalLM`` (incl. grouped-query attention and ``attention_bias``),
``Qwen2ForCausalLM`` (Llama layout, value biases), ``Gemma2ForCausalLM`` and
``Gemma3ForCausalLM`` (sandwich norms, below).

Each head's value constant ``c[h]`` (what ``z_h`` carries whatever the head attends to) is
*measured*, not derived from weights: one forward pass in which every pre-attention norm
receives an all-zero input, so the norm outputs its constant part (LayerNorm: its bias;
RMSNorm: 0) at every position; every token's value is then the same vector and the attention
output ``z`` equals that value, whatever the layout of the value projection or the KV-head
sharing. (SPEC: ``c_h = (beta_1 . W_V + b_V)[h]``; the self-checks compare the two.)

Component vectors (d_model space) that make up the final residual stream ``r`` at one position:

* embeddings: GPT-2 ``wte`` and ``wpe`` outputs; NeoX ``embed_in``; Llama ``embed_tokens``;
* per layer l and head h: ``(z_h - c[h]) @ W_O[h]`` (fold) or ``z_h @ W_O[h]`` (no fold), where
  ``z`` is the input of the attention output projection viewed as ``[B, T, H, d_head]``;
* per layer: the attention constant ``b_O (+ sum_h c[h] @ W_O[h] when folding)``;
* per layer: the MLP module output (= sum over neurons ``act_n * W_out[n]`` + MLP out bias).

Direct effect with a frozen scale ``s*``: ``DE = center(o) / s* . W_U_hat[:, y]`` where
``W_U_hat = diag(gamma) W_U`` with the vocabulary mean removed from every row, and center removes
the d_model mean (LayerNorm only; RMSNorm has no centring). Logits are the unembedding's own
output (before any final softcap: SPEC §7 defines every quantity on the raw logit).

Sandwich norms (Gemma 2/3, SPEC §7): a branch (the attention projection's output, the MLP's)
joins the residual stream through its RMSNorm ``(1 + w_b) * o / s_b``. Every component vector
of a branch above is taken through that norm at the **clean run's** branch scale ``s_b`` (also
in the ablated run), and ``SR_branch`` is measured as what the branch norms really wrote (their
recorded outputs) minus those frozen-scale vectors, per layer and branch.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.pytorch_utils import Conv1D

__all__ = ["make_gemma2", "make_gemma3", "make_gpt2", "make_llama", "make_neox", "make_qwen2",
           "reference_measure", "value_constants"]

# ----------------------------------------------------------------------------------------------
# Small random-initialised models
# ----------------------------------------------------------------------------------------------

N_LAYER = 4
N_HEAD = 4
D_MODEL = 64
D_MLP = 256
VOCAB = 512
N_POS = 128


def _randomise(model: nn.Module, seed: int, gain_offset: float = 0.0,
               embed_std: float = 0.5) -> nn.Module:
    """Give every parameter non-trivial random values (norm gains near 1, biases non-zero);
    `gain_offset`: what the norms add to their stored weight (Gemma: 1)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-2] if "." in name else name
            is_norm = "norm" in leaf or leaf.startswith("ln")
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 - gain_offset + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            elif leaf in ("wte", "wpe", "embed_in", "embed_tokens"):
                p.copy_(embed_std * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    return model.float().eval()


def make_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """A 4-layer GPT-2 with random weights (tied unembedding), fp32, eval mode, no dropout."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=N_POS,
        n_embd=D_MODEL,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        n_inner=D_MLP,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return _randomise(GPT2LMHeadModel(config), seed)


def make_neox(parallel: bool = True, seed: int = 0) -> GPTNeoXForCausalLM:
    """A 4-layer GPT-NeoX (Pythia-style) with random weights, fp32, eval mode, no dropout."""
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        intermediate_size=D_MLP,
        max_position_embeddings=N_POS,
        use_parallel_residual=parallel,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    return _randomise(GPTNeoXForCausalLM(config), seed)


def make_llama(gqa: bool = True, bias: bool = False, seed: int = 0) -> LlamaForCausalLM:
    """A 4-layer Llama with random weights; ``gqa`` -> 2 kv heads for 4 query heads; ``bias`` ->
    ``attention_bias`` and ``mlp_bias`` (so a value bias and an MLP out bias exist)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        num_key_value_heads=2 if gqa else N_HEAD,
        max_position_embeddings=N_POS,
        attention_bias=bias,
        mlp_bias=bias,
        attention_dropout=0.0,
    )
    return _randomise(LlamaForCausalLM(config), seed)


def make_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    """A 4-layer Qwen2 (Llama layout, q/k/v biases, RMSNorm) with GQA 2 kv heads, random weights."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        num_key_value_heads=2,
        max_position_embeddings=N_POS,
        attention_dropout=0.0,
    )
    return _randomise(Qwen2ForCausalLM(config), seed)


def make_gemma3(seed: int = 0) -> Gemma3ForCausalLM:
    """A 4-layer Gemma 3 with random weights: GQA (4 query heads, 1 kv head), QK-norm, sandwich
    norms, a sliding window of 4 tokens on layers 0 and 2 (layers 1 and 3 global). The tied
    embedding is drawn smaller (std 0.2: its module multiplies by sqrt(d) = 8), which keeps
    the logits at the other random families' size."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        num_key_value_heads=1,
        head_dim=D_MODEL // N_HEAD,
        query_pre_attn_scalar=D_MODEL // N_HEAD,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"] * (N_LAYER // 2),
        max_position_embeddings=N_POS,
        attention_dropout=0.0,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return _randomise(Gemma3ForCausalLM(config), seed, gain_offset=1.0, embed_std=0.2)


def make_gemma2(seed: int = 0) -> Gemma2ForCausalLM:
    """A 4-layer Gemma 2 with random weights: GQA (2 kv heads), attention biases (so a value
    constant and an output bias pass the branch norm), sandwich norms, a sliding window of 4
    on even layers, attention softcap 5 and final logit softcap 3 (small, so both bite)."""
    torch.manual_seed(seed)
    config = Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        num_key_value_heads=2,
        head_dim=D_MODEL // N_HEAD,
        query_pre_attn_scalar=D_MODEL // N_HEAD,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"] * (N_LAYER // 2),
        attention_bias=True,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
        max_position_embeddings=N_POS,
        attention_dropout=0.0,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return _randomise(Gemma2ForCausalLM(config), seed, gain_offset=1.0, embed_std=0.2)


# ----------------------------------------------------------------------------------------------
# Architecture description: module paths and weights, read from the transformers source
# ----------------------------------------------------------------------------------------------


def _in_out_weight(module: nn.Module) -> torch.Tensor:
    """Weight as a matrix ``[in_features, out_features]`` so that ``y = x @ W + b``."""
    if isinstance(module, Conv1D):  # GPT-2's Conv1D stores [in, out]
        return module.weight.detach()
    if isinstance(module, nn.Linear):  # nn.Linear stores [out, in]
        return module.weight.detach().T
    raise TypeError(f"unexpected projection module {type(module)}")


def _bias_or_zeros(module: nn.Module, size: int) -> torch.Tensor:
    b = getattr(module, "bias", None)
    if b is None:
        return torch.zeros(size)
    return b.detach()


class _Arch:
    """Everything the reference needs to know about one model, as plain attributes."""

    def __init__(self, model: nn.Module):
        if isinstance(model, GPT2LMHeadModel):
            tf = model.transformer
            blocks = list(tf.h)
            self.embeds = [tf.wte, tf.wpe]
            self.final_norm = tf.ln_f
            self.attn_proj = [b.attn.c_proj for b in blocks]
            self.mlp = [b.mlp for b in blocks]
            self.mlp_down = [b.mlp.c_proj for b in blocks]
            self.attn_norm = [b.ln_1 for b in blocks]
            self.head_dim = blocks[0].attn.head_dim
            self.parallel = False
        elif isinstance(model, GPTNeoXForCausalLM):
            base = model.gpt_neox
            blocks = list(base.layers)
            self.embeds = [base.embed_in]
            self.final_norm = base.final_layer_norm
            self.attn_proj = [b.attention.dense for b in blocks]
            self.mlp = [b.mlp for b in blocks]
            self.mlp_down = [b.mlp.dense_4h_to_h for b in blocks]
            self.attn_norm = [b.input_layernorm for b in blocks]
            self.head_dim = blocks[0].attention.head_size
            self.parallel = bool(model.config.use_parallel_residual)
        elif isinstance(model, LlamaForCausalLM | Qwen2ForCausalLM):
            base = model.model
            blocks = list(base.layers)
            self.embeds = [base.embed_tokens]
            self.final_norm = base.norm
            self.attn_proj = [b.self_attn.o_proj for b in blocks]
            self.mlp = [b.mlp for b in blocks]
            self.mlp_down = [b.mlp.down_proj for b in blocks]
            self.attn_norm = [b.input_layernorm for b in blocks]
            self.head_dim = blocks[0].self_attn.head_dim
            self.parallel = False
        elif isinstance(model, Gemma2ForCausalLM | Gemma3ForCausalLM):
            base = model.model
            blocks = list(base.layers)
            self.embeds = [base.embed_tokens]  # its output is already multiplied by sqrt(d)
            self.final_norm = base.norm
            self.attn_proj = [b.self_attn.o_proj for b in blocks]
            self.mlp = [b.mlp for b in blocks]
            self.mlp_down = [b.mlp.down_proj for b in blocks]
            self.attn_norm = [b.input_layernorm for b in blocks]
            self.head_dim = blocks[0].self_attn.head_dim
            self.parallel = False
            self.branch_norms = {"attn": [b.post_attention_layernorm for b in blocks],
                                 "mlp": [b.post_feedforward_layernorm for b in blocks]}
            self.gain_offset = 1.0  # Gemma's RMSNorm multiplies by (1 + weight)
        else:
            raise TypeError(f"reference does not support {type(model).__name__}")
        if not hasattr(self, "branch_norms"):
            self.branch_norms = None
            self.gain_offset = 0.0

        self.n_layers = len(self.attn_proj)
        self.is_rms = not isinstance(self.final_norm, nn.LayerNorm)
        eps = getattr(self.final_norm, "eps", None)
        if eps is None:
            eps = self.final_norm.variance_epsilon
        self.norm_eps = float(eps)

        f64 = torch.float64
        w_o = [_in_out_weight(p).to(f64) for p in self.attn_proj]  # [H*hd, d]
        self.d_model = w_o[0].shape[1]
        self.n_heads = w_o[0].shape[0] // self.head_dim
        # W_O[l][h] : [hd, d]
        self.W_O = [w.reshape(self.n_heads, self.head_dim, self.d_model) for w in w_o]
        self.b_O = [_bias_or_zeros(p, self.d_model).to(f64) for p in self.attn_proj]
        self.value_constant = value_constants(model, self)  # [L][H, hd], fp32 as the model ran
        self.c_V = [c.to(f64) for c in self.value_constant]
        self.W_out = [_in_out_weight(p).to(f64) for p in self.mlp_down]  # [M, d]
        self.d_mlp = self.W_out[0].shape[0]
        self.b_out = [_bias_or_zeros(p, self.d_model).to(f64) for p in self.mlp_down]
        # branch norm gains [L, d] and epsilon (ones and no norm for the other families)
        self.branch_gain = {"attn": torch.ones(self.n_layers, self.d_model, dtype=f64),
                            "mlp": torch.ones(self.n_layers, self.d_model, dtype=f64)}
        self.branch_eps = 0.0
        if self.branch_norms is not None:
            for kind, norms in self.branch_norms.items():
                self.branch_gain[kind] = torch.stack(
                    [n.weight.detach().to(f64) + self.gain_offset for n in norms])
            self.branch_eps = float(self.branch_norms["attn"][0].eps)

        # Unembedding: logits = final_norm(r) @ W_U + b_U, all heads are nn.Linear. Only the
        # target columns are taken to float64 (`unembedding`); the vocabulary means are summed
        # in float64 chunks, so a 262k-token vocabulary needs no float64 copy.
        lm_head = model.get_output_embeddings()
        self.W_U_rows = lm_head.weight.detach()  # [V, d]
        vocab = self.W_U_rows.shape[0]
        self.b_U = _bias_or_zeros(lm_head, vocab).to(f64)
        self.gamma = self.final_norm.weight.detach().to(f64) + self.gain_offset
        beta = getattr(self.final_norm, "bias", None)
        self.beta = torch.zeros(self.d_model, dtype=f64) if beta is None else beta.detach().to(f64)
        total = torch.zeros(self.d_model, dtype=f64)
        for start in range(0, vocab, 4096):
            total += self.W_U_rows[start:start + 4096].to(f64).sum(0)
        self.W_U_mean = total / vocab  # [d]

    def unembedding(self, y: torch.Tensor):
        """Centred folded unembedding columns ``W_U_hat[:, y]`` as ``[N, d]`` and ``b_U_hat[y]``
        ``[N]``: ``gamma * (W_U[:, y] - mean_V W_U)``, ``beta . (W_U[:, y] - mean) + b_U[y] -
        mean(b_U)``."""
        rows = self.W_U_rows[y].to(torch.float64) - self.W_U_mean
        return self.gamma * rows, rows @ self.beta + self.b_U[y] - self.b_U.mean()


def value_constants(model: nn.Module, arch: _Arch | None = None) -> list[torch.Tensor]:
    """Each head's value constant ``[L][H, hd]``, measured: every pre-attention norm is fed
    zeros (so it outputs its bias, or 0), and ``z`` then equals the common value vector at
    every position. Asserts that ``z`` is indeed the same at every position."""
    arch = arch or _Arch(model)
    T = 5
    seen: list[torch.Tensor | None] = [None] * len(arch.attn_proj)

    def zero_input(module, args):
        return (torch.zeros_like(args[0]), *args[1:])

    def record(layer):
        def hook(module, args):
            seen[layer] = args[0].detach().reshape(T, -1, arch.head_dim).clone()

        return hook

    handles = [n.register_forward_pre_hook(zero_input) for n in arch.attn_norm]
    handles += [p.register_forward_pre_hook(record(i)) for i, p in enumerate(arch.attn_proj)]
    try:
        with torch.no_grad():
            model(input_ids=torch.arange(1, T + 1)[None], attention_mask=torch.ones(1, T).long())
    finally:
        for h in handles:
            h.remove()
    for z in seen:
        assert torch.allclose(z, z[:1].expand_as(z), atol=1e-6, rtol=0), "z is not constant"
    return [z[0] for z in seen]


# ----------------------------------------------------------------------------------------------
# One forward pass with recording (and optional editing) hooks
# ----------------------------------------------------------------------------------------------


def _forward(model, arch: _Arch, ids, mask, edits=None) -> dict:
    """Run the model once. ``edits`` maps ``(site, layer)`` -> function(tensor) -> tensor, sites
    ``"z"`` (attention-projection input), ``"act"`` (MLP down-projection input), ``"mlp_out"``
    (MLP module output). Records every site after editing, plus embeddings, the attention
    projection outputs, the final-norm input and the logits. All hooks are removed afterwards."""
    edits = edits or {}
    L = arch.n_layers
    rec = {
        "z": [None] * L,
        "attn_out": [None] * L,
        "act": [None] * L,
        "mlp_out": [None] * L,
        "embed": [None] * len(arch.embeds),
        "resid": None,
        "attn_write": [None] * L,  # branch norms' outputs (sandwich-norm families)
        "mlp_write": [None] * L,
    }

    def pre_hook(site, layer):
        def hook(module, args):
            x = args[0]
            if (site, layer) in edits:
                x = edits[(site, layer)](x)
            rec[site][layer] = x.detach().clone()
            return (x, *args[1:])

        return hook

    def out_hook(site, layer):
        def hook(module, args, output):
            if (site, layer) in edits:
                output = edits[(site, layer)](output)
            rec[site][layer] = output.detach().clone()
            return output

        return hook

    def norm_hook(module, args):
        rec["resid"] = args[0].detach().clone()

    def logits_hook(module, args, output):  # the raw logits, before any final softcap
        rec["logits"] = output.detach().clone()

    handles = []
    try:
        for i, emb in enumerate(arch.embeds):
            handles.append(emb.register_forward_hook(out_hook("embed", i)))
        for layer in range(L):
            handles.append(arch.attn_proj[layer].register_forward_pre_hook(pre_hook("z", layer)))
            handles.append(arch.attn_proj[layer].register_forward_hook(out_hook("attn_out", layer)))
            handles.append(arch.mlp_down[layer].register_forward_pre_hook(pre_hook("act", layer)))
            handles.append(arch.mlp[layer].register_forward_hook(out_hook("mlp_out", layer)))
            if arch.branch_norms is not None:
                for kind in ("attn", "mlp"):
                    norm = arch.branch_norms[kind][layer]
                    handles.append(norm.register_forward_hook(out_hook(f"{kind}_write", layer)))
        handles.append(arch.final_norm.register_forward_pre_hook(norm_hook))
        handles.append(model.get_output_embeddings().register_forward_hook(logits_hook))
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    B, T = ids.shape
    for i, e in enumerate(rec["embed"]):  # GPT-2's wpe output is [1, T, d]
        rec["embed"][i] = e.expand(B, T, e.shape[-1])
    for layer in range(L):
        rec["z"][layer] = rec["z"][layer].reshape(B, T, arch.n_heads, arch.head_dim)
    return rec


# ----------------------------------------------------------------------------------------------
# Ablation plan
# ----------------------------------------------------------------------------------------------


def _last_real(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last non-padding token (padding on the right)."""
    lengths = mask.long().sum(dim=1)
    for b in range(mask.shape[0]):
        n = int(lengths[b])
        assert n >= 1, "a row has no real token"
        assert bool(mask[b, :n].all()) and not bool(mask[b, n:].any()), (
            "padding must be on the right"
        )
    return lengths - 1


def _position_mask(positions, mask: torch.Tensor) -> torch.Tensor:
    B, T = mask.shape
    pos = torch.zeros(B, T, dtype=torch.bool)
    if isinstance(positions, str) and positions == "all":
        pos[:] = True
    elif isinstance(positions, str) and positions == "final":
        last = _last_real(mask)
        pos[torch.arange(B), last] = True
    else:
        for p in positions:
            pos[:, int(p)] = True
    # Padding (on the right) is never seen by a real token under causal attention, so ablating
    # there could not change any result; restrict to real tokens to keep things explicit.
    return pos & mask.bool()


def _parse_targets(ablation_targets, arch: _Arch):
    """Return (heads: dict layer -> set of heads, mlps: set of layers, neurons: dict layer -> set)."""
    heads: dict[int, set[int]] = {}
    mlps: set[int] = set()
    neurons: dict[int, set[int]] = {}
    for t in ablation_targets:
        kind = t[0]
        layer = int(t[1])
        if kind == "head":
            heads.setdefault(layer, set()).add(int(t[2]))
        elif kind == "attn":
            heads.setdefault(layer, set()).update(range(arch.n_heads))
        elif kind == "mlp":
            mlps.add(layer)
        elif kind == "neurons":
            neurons.setdefault(layer, set()).update(int(n) for n in t[2])
        else:
            raise ValueError(f"unknown ablation target {t!r}")
    # Neurons of an MLP layer whose whole output is ablated are already covered by that layer.
    neurons = {layer: ns for layer, ns in neurons.items() if layer not in mlps and ns}
    return heads, mlps, neurons


def _replacement(site, layer, method, arch, B, T, fold, positions, mask, src, ref):
    """Full ``[B, T, ...]`` tensor of replacement values for one site (used where ablated)."""
    if method == "zero":
        if site == "z":
            if fold:  # the slice becomes c[h] so the folded head component is exactly 0
                c = arch.value_constant[layer]
                return c.expand(B, T, arch.n_heads, arch.head_dim).clone()
            return torch.zeros(B, T, arch.n_heads, arch.head_dim)
        width = arch.d_mlp if site == "act" else arch.d_model
        return torch.zeros(B, T, width)
    if method == "mean":
        acts, ref_mask = ref
        a = acts[site][layer]
        mean = a[ref_mask.bool()].mean(dim=0)  # over all non-padding reference tokens
        return mean.expand(B, T, *mean.shape).clone()
    if method == "resample":
        acts, src_mask = src
        a = acts[site][layer]
        assert a.shape[0] == B, "source batch must have one row per input row"
        if isinstance(positions, str) and positions == "final":
            rep = torch.zeros(B, T, *a.shape[2:])
            last = _last_real(mask)
            src_last = _last_real(src_mask)
            for b in range(B):
                rep[b, last[b]] = a[b, src_last[b]]
            return rep
        # Same position index; the source may be longer than the input (extra tail unused).
        pos = _position_mask(positions, mask)
        src_real = torch.zeros(B, T, dtype=torch.bool)
        width = min(T, a.shape[1])
        src_real[:, :width] = src_mask[:, :width].bool()
        if bool((pos & ~src_real).any()):
            raise ValueError("resample would take an activation from a source padding position")
        rep = torch.zeros(B, T, *a.shape[2:])
        rep[:, :width] = a[:, :width]
        return rep
    raise ValueError(f"unknown method {method!r}")


def _make_edits(method, arch, ids, mask, positions, fold, heads, mlps, neurons, src, ref):
    B, T = ids.shape
    pos = _position_mask(positions, mask)
    edits = {}

    def rep_for(site, layer):
        return _replacement(site, layer, method, arch, B, T, fold, positions, mask, src, ref)

    for layer, hs in heads.items():
        rep = rep_for("z", layer)
        idx = sorted(hs)

        def edit_z(x, rep=rep, idx=idx):
            z = x.reshape(B, T, arch.n_heads, arch.head_dim).clone()
            for h in idx:
                z[:, :, h, :] = torch.where(pos[:, :, None], rep[:, :, h, :], z[:, :, h, :])
            return z.reshape(x.shape)

        edits[("z", layer)] = edit_z
    for layer in mlps:
        rep = rep_for("mlp_out", layer)

        def edit_mlp(x, rep=rep):
            return torch.where(pos[:, :, None], rep, x)

        edits[("mlp_out", layer)] = edit_mlp
    for layer, ns in neurons.items():
        rep = rep_for("act", layer)
        idx = sorted(ns)

        def edit_act(x, rep=rep, idx=idx):
            a = x.clone()
            for n in idx:
                a[:, :, n] = torch.where(pos, rep[:, :, n], a[:, :, n])
            return a

        edits[("act", layer)] = edit_act
    return edits


# ----------------------------------------------------------------------------------------------
# Decomposition at measured sites
# ----------------------------------------------------------------------------------------------


def _direct_effect(vec: torch.Tensor, s: torch.Tensor, u: torch.Tensor, is_rms: bool):
    """``vec [N, ..., d]``, ``s [N]``, ``u [N, d]`` (= W_U_hat[:, y]) -> ``[N, ...]``."""
    if not is_rms:
        vec = vec - vec.mean(dim=-1, keepdim=True)
    extra = vec.dim() - 2
    s = s.reshape(-1, *([1] * extra))
    u = u.reshape(u.shape[0], *([1] * extra), u.shape[1])
    return (vec * u).sum(dim=-1) / s


def _scale(resid: torch.Tensor, arch: _Arch) -> torch.Tensor:
    r = resid.to(torch.float64)
    if arch.is_rms:
        return torch.sqrt((r * r).mean(dim=-1) + arch.norm_eps)
    return torch.sqrt(r.var(dim=-1, unbiased=False) + arch.norm_eps)


def _branch_scales(rec, arch: _Arch, sb, st) -> dict:
    """Each branch norm's scale ``s_b = sqrt(mean(o^2) + eps)`` of its input ``o`` at the sites,
    ``{"attn", "mlp"}`` -> ``[N, L]`` (ones for families without branch norms)."""
    N, L = len(sb), arch.n_layers
    if arch.branch_norms is None:
        return {kind: torch.ones(N, L, dtype=torch.float64) for kind in ("attn", "mlp")}
    out = {}
    for kind, site in (("attn", "attn_out"), ("mlp", "mlp_out")):
        o = torch.stack([rec[site][layer][sb, st].to(torch.float64) for layer in range(L)], 1)
        out[kind] = torch.sqrt((o * o).mean(dim=-1) + arch.branch_eps)
    return out


def _through_branch(vec: torch.Tensor, arch: _Arch, kind: str, scales: dict) -> torch.Tensor:
    """``vec [N, L, ..., d]`` (a branch's raw output or a part of it) as written through the
    branch norm at the given scales: ``(1 + w_b) * vec / s_b`` (identity without branch norms)."""
    extra = vec.dim() - 3
    gain = arch.branch_gain[kind].reshape(1, arch.n_layers, *([1] * extra), arch.d_model)
    s_b = scales[kind].reshape(*scales[kind].shape, *([1] * (extra + 1)))
    return vec * gain / s_b


def _site_vectors(rec, arch: _Arch, sb, st, fold: bool, scales: dict) -> dict:
    """Component vectors (float64, d_model) at the measured sites ``(sb, st)``; branch parts
    through their branch norm at ``scales`` (the clean run's, SPEC §7)."""
    f64 = torch.float64
    heads, attn, mlp, neur, writes = [], [], [], [], {"attn": [], "mlp": []}
    for layer in range(arch.n_layers):
        z = rec["z"][layer][sb, st].to(f64)  # [N, H, hd]
        if fold:
            z = z - arch.c_V[layer]
        heads.append(torch.einsum("nhk,hkd->nhd", z, arch.W_O[layer]))
        attn.append(rec["attn_out"][layer][sb, st].to(f64))
        mlp.append(rec["mlp_out"][layer][sb, st].to(f64))
        neur.append(rec["act"][layer][sb, st].to(f64))  # [N, M]; vectors act_n * W_out[n]
        for kind in writes:
            w = rec[f"{kind}_write"][layer]
            writes[kind].append(None if w is None else w[sb, st].to(f64))
    out = {
        "heads": _through_branch(torch.stack(heads, dim=1), arch, "attn", scales),  # [N, L, H, d]
        "attn": _through_branch(torch.stack(attn, dim=1), arch, "attn", scales),  # [N, L, d]
        "mlp": _through_branch(torch.stack(mlp, dim=1), arch, "mlp", scales),  # [N, L, d]
        "act": torch.stack(neur, dim=1),  # [N, L, M] (neuron n's vector is act_n * W_out[n])
        "embed": torch.stack([e[sb, st].to(f64) for e in rec["embed"]], dim=1),  # [N, E, d]
        "resid": rec["resid"][sb, st].to(f64),
    }
    # what each branch really wrote: the branch norm's recorded output (the frozen-scale vector
    # itself where there is no branch norm)
    for kind in writes:
        recorded = writes[kind][0] is not None
        out[f"{kind}_write"] = torch.stack(writes[kind], dim=1) if recorded else out[kind]
    return out


def _attn_constant(arch: _Arch, fold: bool) -> torch.Tensor:
    """``[L, d]``: b_O, plus sum_h c[h] @ W_O[h] when value constants are folded."""
    consts = []
    for layer in range(arch.n_layers):
        c = arch.b_O[layer].clone()
        if fold:
            c = c + torch.einsum("hk,hkd->d", arch.c_V[layer], arch.W_O[layer])
        consts.append(c)
    return torch.stack(consts)


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def reference_measure(
    model,
    input_ids,
    attention_mask,
    targets,
    ablation_targets,
    method,
    positions="all",
    fold_value_biases=True,
    scale="clean",
    source_ids=None,
    source_mask=None,
    mean_ids=None,
    mean_mask=None,
) -> dict[str, torch.Tensor]:
    """Clean run + ablated run of the same input; DE decomposition and self-repair terms at every
    measured site (``targets >= 0``, flattened row-major). See the module docstring."""
    if scale not in ("clean", "recomputed"):
        raise ValueError(f"unknown scale convention {scale!r}")
    model.eval()
    arch = _Arch(model)
    fold = bool(fold_value_biases)
    ids = torch.as_tensor(input_ids).long()
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask)
    mask = mask.long()
    targets = torch.as_tensor(targets).long()
    assert targets.shape == ids.shape

    heads_abl, mlps_abl, neurons_abl = _parse_targets(ablation_targets, arch)

    # Clean activations needed by the replacement values.
    src = ref = None
    if method == "resample":
        assert source_ids is not None, "resample ablation needs source_ids"
        s_ids = torch.as_tensor(source_ids).long()
        s_mask = torch.ones_like(s_ids) if source_mask is None else torch.as_tensor(source_mask)
        src = (_forward(model, arch, s_ids, s_mask.long()), s_mask.long())
    elif method == "mean":
        assert mean_ids is not None, "mean ablation needs mean_ids"
        m_ids = torch.as_tensor(mean_ids).long()
        m_mask = torch.ones_like(m_ids) if mean_mask is None else torch.as_tensor(mean_mask)
        ref = (_forward(model, arch, m_ids, m_mask.long()), m_mask.long())

    clean = _forward(model, arch, ids, mask)
    edits = _make_edits(
        method, arch, ids, mask, positions, fold, heads_abl, mlps_abl, neurons_abl, src, ref
    )
    abl = _forward(model, arch, ids, mask, edits)

    # Measured sites.
    sb, st = (targets >= 0).nonzero(as_tuple=True)
    y = targets[sb, st]
    u, b_hat = arch.unembedding(y)  # [N, d], [N]

    def centred_logit(rec):
        lg = rec["logits"][sb, st].to(torch.float64)  # [N, V]
        return lg[torch.arange(len(y)), y] - lg.mean(dim=-1)

    logit_clean = centred_logit(clean)
    logit_abl = centred_logit(abl)

    frozen = _branch_scales(clean, arch, sb, st)  # SPEC §7: clean branch scales, both runs
    vc = _site_vectors(clean, arch, sb, st, fold, frozen)
    va = _site_vectors(abl, arch, sb, st, fold, frozen)
    for kind in ("attn", "mlp"):  # clean run: the frozen-scale vectors are the real writes
        assert torch.allclose(vc[kind], vc[f"{kind}_write"], atol=1e-5, rtol=1e-5), kind
    s = _scale(vc["resid"], arch)
    s_abl = _scale(va["resid"], arch)
    s_star = s if scale == "clean" else s_abl

    def de_pair(key):
        return (
            _direct_effect(vc[key], s, u, arch.is_rms),
            _direct_effect(va[key], s_star, u, arch.is_rms),
        )

    head_c, head_a = de_pair("heads")
    attn_c, attn_a = de_pair("attn")
    mlp_c, mlp_a = de_pair("mlp")
    # Neuron n's vector is act_n * W_out[n]; DE is linear in the vector, so
    # DE(act_n * W_out[n]) = act_n * DE(W_out[n]) (saves materialising [N, L, M, d]).
    # (center(v) . u = v . (u - mean(u)), so a neuron's unit DE is one contraction per site)
    N = len(y)
    u_c = u if arch.is_rms else u - u.mean(dim=-1, keepdim=True)
    unit = torch.einsum("lmd,ld,nd->nlm", torch.stack(arch.W_out), arch.branch_gain["mlp"], u_c)
    unit = unit / frozen["mlp"][..., None]  # through the MLP branch norm at the clean scale
    unit_c = unit / s[:, None, None]  # [N, L, M]
    unit_a = unit / s_star[:, None, None]
    neur_c = vc["act"] * unit_c
    neur_a = va["act"] * unit_a
    embed_de = _direct_effect(vc["embed"], s, u, arch.is_rms)

    L = arch.n_layers
    const = _through_branch(_attn_constant(arch, fold)[None].expand(N, L, -1), arch, "attn",
                            frozen)  # [N, L, d]
    attn_bias_de = _direct_effect(const, s, u, arch.is_rms)
    b_out = _through_branch(torch.stack(arch.b_out)[None].expand(N, L, -1), arch, "mlp", frozen)
    mlp_bias_de = _direct_effect(b_out, s, u, arch.is_rms)
    # SR_branch (SPEC §7): the ablated run's real branch writes minus their frozen-scale vectors
    sr_branch_attn = (_direct_effect(va["attn_write"], s_star, u, arch.is_rms) - attn_a)
    sr_branch_mlp = (_direct_effect(va["mlp_write"], s_star, u, arch.is_rms) - mlp_a)
    sr_branch = sr_branch_attn.sum(dim=1) + sr_branch_mlp.sum(dim=1)

    # Deltas.
    d_head = head_a - head_c  # [N, L, H]
    d_attn = attn_a - attn_c  # [N, L]
    d_mlp = mlp_a - mlp_c  # [N, L]
    d_neur = neur_a - neur_c  # [N, L, M]

    head_sel = torch.zeros(L, arch.n_heads, dtype=torch.bool)
    for layer, hs in heads_abl.items():
        for h in hs:
            head_sel[layer, h] = True
    mlp_sel = torch.zeros(L, dtype=torch.bool)
    for layer in mlps_abl:
        mlp_sel[layer] = True
    neur_sel = torch.zeros(L, arch.d_mlp, dtype=torch.bool)
    for layer, ns in neurons_abl.items():
        for n in ns:
            neur_sel[layer, n] = True

    def ablated_sum(h_de, m_de, n_de):
        return (
            (h_de * head_sel).sum(dim=(1, 2))
            + (m_de * mlp_sel).sum(dim=1)
            + (n_de * neur_sel).sum(dim=(1, 2))
        )

    direct_effect = ablated_sum(head_c, mlp_c, neur_c)
    direct_effect_abl = ablated_sum(head_a, mlp_a, neur_a)

    delta_logit = logit_abl - logit_clean
    self_repair = delta_logit - (direct_effect_abl - direct_effect)
    self_repair_prime = delta_logit + direct_effect
    sr_heads = (d_head * ~head_sel).sum(dim=(1, 2))
    mlp_layer_delta = d_mlp - (d_neur * neur_sel).sum(dim=2)  # neurons' own change removed
    sr_mlp = (mlp_layer_delta * ~mlp_sel).sum(dim=1)
    sr_ln = self_repair - sr_heads - sr_mlp - sr_branch
    sr_ln_closed = (1.0 - s_abl / s) * (logit_abl - b_hat)

    # Hydra compensation: ΔDE of the components downstream of the earliest ablated one, the
    # ablated components themselves left out (their change is the direct loss, not repair).
    attn_layers = sorted(heads_abl)
    mlp_layers = sorted(mlps_abl | set(neurons_abl))
    first_attn = attn_layers[0] if attn_layers else None
    first_mlp = mlp_layers[0] if mlp_layers else None
    if first_attn is not None and (first_mlp is None or first_attn <= first_mlp):
        m, earliest = first_attn, "attn"
    else:
        m, earliest = first_mlp, "mlp"
    attn_down = torch.zeros(L, dtype=torch.bool)
    mlp_down = torch.zeros(L, dtype=torch.bool)
    for j in range(L):
        attn_down[j] = j > m
        if earliest == "attn" and not arch.parallel:
            mlp_down[j] = j >= m
        else:
            mlp_down[j] = j > m
    d_attn_free = d_attn - (d_head * head_sel).sum(dim=2)
    d_mlp_free = mlp_layer_delta * ~mlp_sel
    compensation = (d_attn_free * attn_down).sum(dim=1) + (d_mlp_free * mlp_down).sum(dim=1)

    return {
        "logit_clean": logit_clean,
        "logit_ablated": logit_abl,
        "scale_clean": s,
        "scale_ablated": s_abl,
        "head_de_clean": head_c,
        "head_de_ablated": head_a,
        "attn_de_clean": attn_c,
        "attn_de_ablated": attn_a,
        "attn_bias_de": attn_bias_de,
        "mlp_de_clean": mlp_c,
        "mlp_de_ablated": mlp_a,
        "neuron_de_clean": neur_c,
        "neuron_de_ablated": neur_a,
        "mlp_bias_de": mlp_bias_de,
        "embed_de": embed_de,
        "unembed_bias": b_hat,
        "direct_effect": direct_effect,
        "direct_effect_ablated": direct_effect_abl,
        "delta_logit": delta_logit,
        "self_repair": self_repair,
        "self_repair_prime": self_repair_prime,
        "sr_heads": sr_heads,
        "sr_mlp": sr_mlp,
        "sr_branch": sr_branch,
        "sr_branch_attn": sr_branch_attn,
        "sr_branch_mlp": sr_branch_mlp,
        "sr_ln": sr_ln,
        "sr_ln_closed": sr_ln_closed,
        "delta_unembed": direct_effect.clone(),
        "delta_ablate": -delta_logit,
        "compensation": compensation,
    }
