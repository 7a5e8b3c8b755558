"""The constants session: a model's small weight vectors, read where it runs (see `nbtools.tracing`)."""

from __future__ import annotations

import nnsight
import torch

from .lock import TRACE_LOCK


def constants_session(lm, job: dict, backend) -> dict:
    """The model's small constants (float64), read from its parameters where it runs.

    job: paths, conv1d, n_layers, n_heads, d_head, d_model, gamma_offset, value (None, or
    {"norm": path or None, "proj": path, "index": [n_heads * d_head] long}: the head value
    constant c_h is ``(β₁ · W_qkv + b_qkv)[index]``), vocab_chunk.
    Returns gamma, beta, W_U_mean [d_model] (mean over the vocabulary of the raw W_U rows),
    b_U_mean (0-d), b_O, b_out, c_V_W_O [n_layers, d_model], c_V [n_layers, n_heads, d_head]
    or None.
    """
    with TRACE_LOCK, torch.no_grad(), lm.session(backend=backend):
        paths, L, conv1d, f64 = job["paths"], job["n_layers"], job["conv1d"], torch.float64

        def module(path, layer=None):
            node = lm
            for part in (path if layer is None else path.format(layer)).split("."):
                node = node[int(part)] if part.isdigit() else getattr(node, part)
            return node

        def bias(mod, n):
            return torch.zeros(n, dtype=f64) if getattr(mod, "bias", None) is None else mod.bias.detach().to(f64).cpu()

        def apply(vec, mod):
            W = mod.weight.detach().to(f64).cpu()
            return vec @ W if conv1d else W @ vec
        with lm.trace(job["probe_ids"]) as tracer:
            final, unembed = module(paths["final_norm"]), module(paths["unembed"])
            d = job["d_model"]
            consts = {"gamma": final.weight.detach().to(f64).cpu() + job["gamma_offset"], "beta": bias(final, d)}
            total = torch.zeros(d, dtype=f64)
            V = unembed.weight.shape[0]
            for start in range(0, V, job["vocab_chunk"]):
                total = total + unembed.weight[start:start + job["vocab_chunk"]].detach().to(f64).sum(0).cpu()
            consts["W_U_mean"] = total / V
            consts["b_U_mean"] = bias(unembed, V).mean()
            b_O, b_out, c_V, c_V_W_O = [], [], [], []
            for layer in range(L):
                out_proj = module(paths["attn_out"], layer)
                b_O.append(bias(out_proj, d))
                b_out.append(bias(module(paths["down"], layer), d))
                if job["value"] is not None:
                    v = job["value"]
                    proj = module(v["proj"], layer)
                    n_in = proj.weight.shape[0] if conv1d else proj.weight.shape[1]
                    beta1 = torch.zeros(n_in, dtype=f64) if v["norm"] is None else bias(module(v["norm"], layer), n_in)
                    n_out = proj.weight.shape[1] if conv1d else proj.weight.shape[0]
                    c = (apply(beta1, proj) + bias(proj, n_out))[v["index"]]
                    c_V.append(c.reshape(job["n_heads"], job["d_head"]))
                    c_V_W_O.append(apply(c, out_proj))
                else:
                    c_V_W_O.append(torch.zeros(d, dtype=f64))
            consts["b_O"], consts["b_out"] = torch.stack(b_O), torch.stack(b_out)
            consts["c_V_W_O"] = torch.stack(c_V_W_O)
            consts["c_V"] = torch.stack(c_V) if c_V else None
            tracer.stop()
        consts = nnsight.save(consts)
    return consts
