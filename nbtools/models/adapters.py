"""Architecture adapters: the one place that knows where things live in each model family.

An adapter answers, for one `transformers` model family: where each head's ``z`` is
(the input of the attention output projection), where the MLP's neuron activations and
output are, which final norm and unembedding the model uses, whether attention and MLP
run in parallel, and the weights the direct-effect algebra needs — with the same layout
for every family; the matrices are views of the model's parameters, in its dtype (callers
cast what they use), the vectors fp32:

    W_O  [n_heads, d_head, d_model] per layer   the output projection, split per head
    b_O  [n_layers, d_model]                    attention output bias (zeros if absent)
    c_V  [n_layers, n_heads, d_head] or None    per-head value constant (below)
    W_out [d_mlp, d_model] per layer            MLP down projection; b_out [n_layers, d_model]
    W_U  [d_model, d_vocab], b_U [d_vocab]      unembedding
    gamma, beta [d_model]                       final norm (beta zeros for RMSNorm)

The value constant ``c_V`` is what each head's ``z`` carries whatever it attends to:
attention weights sum to one, so the value projection of the *constant part* of the
attention's input passes straight through. With a pre-attention norm ``γ₁ ⊙ x̂ + β₁`` and
value projection ``x ↦ x·W_V + b_V``::

    c_h = (β₁ · W_V + b_V)[h]        (query head h; with GQA, the KV head that serves h)

GPT-2 and GPT-NeoX have both terms; the Llama family (RMSNorm: no β₁) has ``c_h = b_V[h]``
where ``v_proj`` has a bias (Qwen2) and no constant (None) otherwise. This is what
TransformerLens folds into the attention output bias (its ``b_V`` after folding LN1).

Adding a family means one new subclass here plus its reference tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class Shape:
    """Sizes of a model, read from its modules and config."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_mlp: int
    d_vocab: int
    n_ctx: int


class Adapter:
    """Base class. Subclasses set the class attributes and the module accessors."""

    family: str = ""
    model_types: tuple[str, ...] = ()
    norm: str = "layernorm"  # or "rmsnorm"
    embedding_names: tuple[str, ...] = ("token",)

    def __init__(self, hf_model: torch.nn.Module):
        self.hf_model = hf_model
        self.config = hf_model.config
        self.shape = self._read_shape()
        self.parallel = self._is_parallel()

    # --- module paths, valid on the HF model and on an nnsight envoy of it ----------
    def layers(self, root):
        raise NotImplementedError

    def attn_out_proj(self, root, layer: int):
        """The attention output projection; its input is ``z`` [batch, pos, n_heads*d_head]."""
        raise NotImplementedError

    def attention(self, root, layer: int):
        """The attention module of `layer` (its output is (attn_output, attn_weights))."""
        raise NotImplementedError

    def mlp(self, root, layer: int):
        """The MLP module; its output is the MLP layer's contribution [batch, pos, d_model]."""
        return self.layers(root)[layer].mlp

    def mlp_down_proj(self, root, layer: int):
        """The MLP's down projection; its input holds the neuron activations [batch, pos, d_mlp]."""
        raise NotImplementedError

    def embeddings(self, root) -> list:
        """Embedding modules whose outputs sum to the residual stream's start."""
        raise NotImplementedError

    def final_norm(self, root):
        raise NotImplementedError

    def unembed(self, root):
        return root.lm_head

    # --- weights (family-independent layout; matrices in the model's dtype) ----------
    def W_O(self, layer: int) -> torch.Tensor:
        s = self.shape
        W = self._linear_in_out(self.attn_out_proj(self.hf_model, layer))
        return W.reshape(s.n_heads, s.d_head, s.d_model)

    def b_O(self) -> torch.Tensor:
        return torch.stack([self._bias(self.attn_out_proj(self.hf_model, i))
                            for i in range(self.shape.n_layers)])

    def value_constant(self) -> torch.Tensor | None:
        """Per-head value constant c_h = (β₁·W_V + b_V)[h] [n_layers, n_heads, d_head] or None."""
        raise NotImplementedError

    def W_out(self, layer: int) -> torch.Tensor:
        return self._linear_in_out(self.mlp_down_proj(self.hf_model, layer))

    def b_out(self) -> torch.Tensor:
        return torch.stack([self._bias(self.mlp_down_proj(self.hf_model, i))
                            for i in range(self.shape.n_layers)])

    def W_U(self) -> torch.Tensor:
        return self.unembed(self.hf_model).weight.detach().T

    def b_U(self) -> torch.Tensor:
        unembed = self.unembed(self.hf_model)
        if unembed.bias is None:
            return torch.zeros(self.shape.d_vocab, device=unembed.weight.device)
        return unembed.bias.detach().float()

    def gamma_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        norm = self.final_norm(self.hf_model)
        gamma = norm.weight.detach().float()
        beta = getattr(norm, "bias", None)
        return gamma, torch.zeros_like(gamma) if beta is None else beta.detach().float()

    def norm_eps(self) -> float:
        norm = self.final_norm(self.hf_model)
        for name in ("eps", "variance_epsilon"):
            if hasattr(norm, name):
                return float(getattr(norm, name))
        raise UnsupportedModelError(f"cannot find the epsilon of {type(norm).__name__}")

    # --- helpers ---------------------------------------------------------------------
    def _read_shape(self) -> Shape:
        raise NotImplementedError

    def _is_parallel(self) -> bool:
        return False

    @staticmethod
    def _linear_in_out(module) -> torch.Tensor:
        """Weight as [in, out] for nn.Linear ([out, in]) and GPT-2's Conv1D ([in, out]), a view."""
        w = module.weight.detach()
        return w if type(module).__name__ == "Conv1D" else w.T

    @staticmethod
    def _norm_bias(norm) -> torch.Tensor:
        """A norm's additive β [d_model] (zeros for RMSNorm, which has none)."""
        b = getattr(norm, "bias", None)
        return torch.zeros_like(norm.weight, dtype=torch.float) if b is None else b.detach().float()

    @staticmethod
    def _bias(module) -> torch.Tensor:
        b = getattr(module, "bias", None)
        n_out = module.weight.shape[1 if type(module).__name__ == "Conv1D" else 0]
        return torch.zeros(n_out, device=module.weight.device) if b is None else b.detach().float()


class GPT2Adapter(Adapter):
    family = "gpt2"
    model_types = ("gpt2",)
    norm = "layernorm"
    embedding_names = ("token", "position")

    def layers(self, root):
        return root.transformer.h

    def attention(self, root, layer):
        return root.transformer.h[layer].attn

    def attn_out_proj(self, root, layer):
        return root.transformer.h[layer].attn.c_proj

    def mlp_down_proj(self, root, layer):
        return root.transformer.h[layer].mlp.c_proj

    def embeddings(self, root):
        return [root.transformer.wte, root.transformer.wpe]

    def final_norm(self, root):
        return root.transformer.ln_f

    def value_constant(self):
        s = self.shape
        out = []
        for block in self.hf_model.transformer.h:
            # c_attn's output is [q | k | v], each d_model wide; v splits into heads.
            W_V = self._linear_in_out(block.attn.c_attn)[:, 2 * s.d_model:].float()
            b_V = self._bias(block.attn.c_attn)[2 * s.d_model:]
            out.append(self._norm_bias(block.ln_1) @ W_V + b_V)
        return torch.stack(out).reshape(s.n_layers, s.n_heads, s.d_head)

    def _read_shape(self):
        c = self.config
        return Shape(n_layers=c.n_layer, n_heads=c.n_head, n_kv_heads=c.n_head,
                     d_head=c.n_embd // c.n_head, d_model=c.n_embd,
                     d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions)


class NeoXAdapter(Adapter):
    family = "gpt_neox"
    model_types = ("gpt_neox",)
    norm = "layernorm"

    def layers(self, root):
        return root.gpt_neox.layers

    def attention(self, root, layer):
        return root.gpt_neox.layers[layer].attention

    def attn_out_proj(self, root, layer):
        return root.gpt_neox.layers[layer].attention.dense

    def mlp_down_proj(self, root, layer):
        return root.gpt_neox.layers[layer].mlp.dense_4h_to_h

    def embeddings(self, root):
        return [root.gpt_neox.embed_in]

    def final_norm(self, root):
        return root.gpt_neox.final_layer_norm

    def value_constant(self):
        s = self.shape
        out = []
        for layer in self.hf_model.gpt_neox.layers:
            qkv = layer.attention.query_key_value
            const = (self._norm_bias(layer.input_layernorm) @ self._linear_in_out(qkv).float()
                     + self._bias(qkv))
            # query_key_value's output is laid out per head as [q | k | v], each d_head wide.
            out.append(const.reshape(s.n_heads, 3, s.d_head)[:, 2])
        return torch.stack(out)

    def _is_parallel(self):
        return bool(self.config.use_parallel_residual)

    def _read_shape(self):
        c = self.config
        d_head = c.hidden_size // c.num_attention_heads
        return Shape(n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
                     n_kv_heads=c.num_attention_heads, d_head=d_head, d_model=c.hidden_size,
                     d_mlp=c.intermediate_size, d_vocab=c.vocab_size,
                     n_ctx=c.max_position_embeddings)


class LlamaAdapter(Adapter):
    """Llama family: RMSNorm, grouped-query attention, gated MLP (also Mistral, Qwen2)."""

    family = "llama"
    model_types = ("llama", "mistral", "qwen2")
    norm = "rmsnorm"

    def layers(self, root):
        return root.model.layers

    def attention(self, root, layer):
        return root.model.layers[layer].self_attn

    def attn_out_proj(self, root, layer):
        return root.model.layers[layer].self_attn.o_proj

    def mlp_down_proj(self, root, layer):
        return root.model.layers[layer].mlp.down_proj

    def embeddings(self, root):
        return [root.model.embed_tokens]

    def final_norm(self, root):
        return root.model.norm

    def value_constant(self):
        """RMSNorm has no β₁, so c_h = b_V[h]; None where v_proj has no bias."""
        s = self.shape
        out = []
        for layer in self.hf_model.model.layers:
            bias = layer.self_attn.v_proj.bias
            if bias is None:
                return None
            per_kv = bias.detach().float().reshape(s.n_kv_heads, s.d_head)
            # query head h reads kv head h // (n_heads / n_kv_heads)
            out.append(per_kv.repeat_interleave(s.n_heads // s.n_kv_heads, dim=0))
        return torch.stack(out)

    def _read_shape(self):
        c = self.config
        attn = self.hf_model.model.layers[0].self_attn
        return Shape(n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
                     n_kv_heads=c.num_key_value_heads, d_head=attn.head_dim,
                     d_model=c.hidden_size, d_mlp=c.intermediate_size, d_vocab=c.vocab_size,
                     n_ctx=c.max_position_embeddings)


ADAPTERS: tuple[type[Adapter], ...] = (GPT2Adapter, NeoXAdapter, LlamaAdapter)


def supported_model_types() -> list[str]:
    return [t for a in ADAPTERS for t in a.model_types]


def adapter_for(hf_model: torch.nn.Module) -> Adapter:
    """The adapter for a loaded `transformers` causal LM, or a clear error."""
    model_type = getattr(getattr(hf_model, "config", None), "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(hf_model)
    raise UnsupportedModelError(
        f"no adapter for model_type {model_type!r} ({type(hf_model).__name__}); "
        f"supported: {', '.join(supported_model_types())}"
    )
