"""Architecture adapters: the one place that knows where things live in each model family.

An adapter answers, for one `transformers` model family, as plain data a trace body can use
wherever the model runs (here, or on NDIF where nbtools is not installed):

    paths      dotted module paths, "{}" standing for the layer: where each head's ``z`` is
               (the input of the attention output projection, "attn_out"), the MLP ("mlp":
               its output is the MLP's write) and its down projection ("down": its input holds
               the neuron activations), the attention module ("attention"), the blocks
               ("layers"), the final norm, the unembedding and the embeddings; for families
               with sandwich norms also the branch norms ("attn_branch", "mlp_branch")
    conv1d     whether projection weights are stored [in, out] (GPT-2's Conv1D) or [out, in]
    value      how to read each head's value constant c_h (below) from the weights, or None

and it reads the model's sizes (`Shape`) from its config and modules, which works on a model
whose weights are not here (the meta device, for NDIF).

The value constant ``c_h`` is what each head's ``z`` carries whatever it attends to:
attention weights sum to one, so the value projection of the *constant part* of the
attention's input passes straight through. With a pre-attention norm ``γ₁ ⊙ x̂ + β₁`` and
value projection ``x ↦ x·W_V + b_V``::

    c_h = (β₁ · W_V + b_V)[h]        (query head h; with GQA, the KV head that serves h)

GPT-2 and GPT-NeoX have both terms; the Llama family (RMSNorm: no β₁) has ``c_h = b_V[h]``
where ``v_proj`` has a bias (Qwen2) and no constant (None) otherwise. This is what
TransformerLens folds into the attention output bias (its ``b_V`` after folding LN1). The
`value` recipe is (norm path or None, projection path, index): ``c = (β₁ · W + b)[index]``
over the projection's output features, reshaped to [n_heads, d_head].

Gemma 2/3 (SPEC §7) add sandwich norms: each branch's raw output (the attention output
projection's, the MLP's) passes an RMSNorm ("attn_branch", "mlp_branch", epsilon
`branch_eps`) before it joins the residual stream; every norm scales by ``1 + weight``
(`gamma_offset`); the embedding module already multiplies by √d_model; Gemma 2 caps the
final logits (`final_softcap`, None where there is no cap).

Adding a family means one new subclass here plus its reference tests.
"""

from __future__ import annotations

import torch

from ..errors import UnsupportedModelError
from ..shapes import Shape


class Adapter:
    """Base class. Subclasses set the class attributes, `PATHS` and `_read_shape`."""

    family: str = ""
    model_types: tuple[str, ...] = ()
    norm: str = "layernorm"  # or "rmsnorm"
    embedding_names: tuple[str, ...] = ("token",)
    conv1d: bool = False
    gamma_offset: float = 0.0  # norms that scale by (offset + weight): Gemma stores weight − 1
    branch_eps: float = 0.0    # the branch norms' epsilon (sandwich-norm families)
    final_softcap: float | None = None  # ℓ = c·tanh(ℓ_raw / c) on the final logits
    PATHS: dict = {}

    def __init__(self, hf_model: torch.nn.Module):
        self.hf_model = hf_model
        self.config = hf_model.config
        self.shape = self._read_shape()
        self.parallel = self._is_parallel()

    # --- plain data for trace bodies ---------------------------------------------------
    @property
    def paths(self) -> dict:
        """Module paths (see the module docstring); branch norms None where there are none."""
        return {"attn_branch": None, "mlp_branch": None, **self.PATHS}

    def value(self) -> dict | None:
        """The value-constant recipe {"norm", "proj", "index"}, or None (no constant)."""
        raise NotImplementedError

    def module(self, path: str, layer: int | None = None):
        """The HF module at a path of `paths` (the model's own, weights or meta tensors)."""
        node = self.hf_model
        for part in (path if layer is None else path.format(layer)).split("."):
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        return node

    def attention_windows(self) -> dict | None:
        """{layer type: sliding window or None (global)} for models that take one attention
        mask per layer type (Gemma), else None: a suffix run builds those masks itself."""
        return None

    def norm_eps(self) -> float:
        """The final norm's epsilon."""
        norm = self.module(self.paths["final_norm"])
        for name in ("eps", "variance_epsilon"):
            if hasattr(norm, name):
                return float(getattr(norm, name))
        raise UnsupportedModelError(f"cannot find the epsilon of {type(norm).__name__}")

    # --- helpers ---------------------------------------------------------------------
    def _read_shape(self) -> Shape:
        raise NotImplementedError

    def _is_parallel(self) -> bool:
        return False

    def _kv_index(self) -> torch.Tensor:
        """[n_heads * d_head]: the value feature of every query head's dim (GQA: shared)."""
        s = self.shape
        served_by = torch.arange(s.n_heads) // (s.n_heads // s.n_kv_heads)
        return (served_by[:, None] * s.d_head + torch.arange(s.d_head)).reshape(-1)


class GPT2Adapter(Adapter):
    family = "gpt2"
    model_types = ("gpt2",)
    norm = "layernorm"
    embedding_names = ("token", "position")
    conv1d = True
    PATHS = {"layers": "transformer.h", "attention": "transformer.h.{}.attn",
             "attn_out": "transformer.h.{}.attn.c_proj", "mlp": "transformer.h.{}.mlp",
             "down": "transformer.h.{}.mlp.c_proj", "final_norm": "transformer.ln_f",
             "unembed": "lm_head", "embeddings": ["transformer.wte", "transformer.wpe"]}

    def value(self):
        # c_attn's output is [q | k | v], each d_model wide; v splits into heads
        d = self.shape.d_model
        return {"norm": "transformer.h.{}.ln_1", "proj": "transformer.h.{}.attn.c_attn",
                "index": torch.arange(2 * d, 3 * d)}

    def _read_shape(self):
        c = self.config
        return Shape(n_layers=c.n_layer, n_heads=c.n_head, n_kv_heads=c.n_head,
                     d_head=c.n_embd // c.n_head, d_model=c.n_embd,
                     d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions)


class NeoXAdapter(Adapter):
    family = "gpt_neox"
    model_types = ("gpt_neox",)
    norm = "layernorm"
    PATHS = {"layers": "gpt_neox.layers", "attention": "gpt_neox.layers.{}.attention",
             "attn_out": "gpt_neox.layers.{}.attention.dense", "mlp": "gpt_neox.layers.{}.mlp",
             "down": "gpt_neox.layers.{}.mlp.dense_4h_to_h",
             "final_norm": "gpt_neox.final_layer_norm", "unembed": "lm_head",
             "embeddings": ["gpt_neox.embed_in"]}

    def value(self):
        # query_key_value's output is laid out per head as [q | k | v], each d_head wide
        s = self.shape
        per_head = torch.arange(s.n_heads)[:, None] * 3 * s.d_head + 2 * s.d_head
        return {"norm": "gpt_neox.layers.{}.input_layernorm",
                "proj": "gpt_neox.layers.{}.attention.query_key_value",
                "index": (per_head + torch.arange(s.d_head)).reshape(-1)}

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
    PATHS = {"layers": "model.layers", "attention": "model.layers.{}.self_attn",
             "attn_out": "model.layers.{}.self_attn.o_proj", "mlp": "model.layers.{}.mlp",
             "down": "model.layers.{}.mlp.down_proj", "final_norm": "model.norm",
             "unembed": "lm_head", "embeddings": ["model.embed_tokens"]}

    def value(self):
        """RMSNorm has no β₁, so c_h = b_V[h]; None where v_proj has no bias."""
        if self.module("model.layers.0.self_attn.v_proj").bias is None:
            return None
        return {"norm": None, "proj": "model.layers.{}.self_attn.v_proj",
                "index": self._kv_index()}

    def _read_shape(self):
        c = self.config
        attn = self.module("model.layers.0.self_attn")
        return Shape(n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
                     n_kv_heads=c.num_key_value_heads, d_head=attn.head_dim,
                     d_model=c.hidden_size, d_mlp=c.intermediate_size, d_vocab=c.vocab_size,
                     n_ctx=c.max_position_embeddings)


class GemmaAdapter(LlamaAdapter):
    """Gemma 2 and Gemma 3 (text): the Llama layout plus sandwich norms, (1 + w) norms,
    embeddings scaled by √d_model inside the embedding module, QK-norm (Gemma 3), sliding
    window layers and softcaps (Gemma 2) — which change none of the paths (SPEC §7)."""

    family = "gemma"
    model_types = ("gemma2", "gemma3_text")
    gamma_offset = 1.0
    PATHS = {**LlamaAdapter.PATHS,
             "decoder": "model", "attn_branch": "model.layers.{}.post_attention_layernorm",
             "mlp_branch": "model.layers.{}.post_feedforward_layernorm"}

    def __init__(self, hf_model: torch.nn.Module):
        super().__init__(hf_model)
        norm = self.module(self.PATHS["attn_branch"], 0)
        self.branch_eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 0.0)))
        self.final_softcap = getattr(self.config, "final_logit_softcapping", None)

    def attention_windows(self):
        window = getattr(self.config, "sliding_window", None)
        types = set(getattr(self.config, "layer_types", None) or ["full_attention"])
        return {t: window if t == "sliding_attention" else None for t in types}


ADAPTERS: tuple[type[Adapter], ...] = (GPT2Adapter, NeoXAdapter, LlamaAdapter, GemmaAdapter)


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
