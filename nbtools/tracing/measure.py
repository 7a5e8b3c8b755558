"""The measurement session: one `Lab.measure_many` call as one request (see `nbtools.tracing`)."""

from __future__ import annotations

import nnsight
import torch

from .lock import TRACE_LOCK


def measure_session(lm, job: dict, backend) -> dict:
    """Clean run, source run and every ablated run of one measurement, reduced at the sites.

    `job` is built by `nbtools.requests.measurement_job` (its docstring lists every key).
    Returns {"clean": the clean run's dots at the sites (None when job["clean_dots"] already
    holds them), "groups": [the dots of each ablated group]}. job["state"] maps "measured" /
    "source" to a batch's kept clean activations or None; a local run fills in what it
    computed there (the Lab caches it), a remote one keeps everything on the server.

    Sliding-window models (job["windows"]): the clean run keeps its keys and values in a cache
    of full layers (the model's own keeps only a window's last ones on sliding layers), and a
    suffix run hands the decoder one attention mask per layer type, built from positions (a
    row's cache slots before its suffix are masked, so slots and positions differ).
    """
    with TRACE_LOCK, torch.no_grad(), lm.session(backend=backend):
        paths, L, H, dh, f64 = job["paths"], job["n_layers"], job["n_heads"], job["d_head"], torch.float64
        sites, state, rep, out, u_kept = job["sites"], job["state"], job["replace"], {"clean": None, "groups": []}, None

        def module(path, layer=None):
            node = lm
            for part in (path if layer is None else path.format(layer)).split("."):
                node = node[int(part)] if part.isdigit() else getattr(node, part)
            return node

        def values(kind, layer, width):
            if rep["method"] == "resample":
                return state[rep["pool"]][kind][layer][rep["index"][:, :, None], rep["src_pos"]]
            if rep["method"] == "mean":
                return state[rep["pool"]][kind][layer][rep["pool_mask"]].float().mean(0)
            if kind == "z" and rep["zero_heads"] is not None:
                return rep["zero_heads"][layer].reshape(-1)
            return torch.zeros(width)

        def rows(mask, value, run):
            A, K, (B, T), X = mask.shape[0], rep["n_sources"], job["pos_mask"].shape, mask.shape[1]
            m = (mask[:, None, None, None, :] & job["pos_mask"][None, None, :, :, None]).expand(A, K, B, T, X).reshape(A * K * B, T, X)
            v = value if value.dim() == 1 else value[None].expand(A, *value.shape).reshape(A * K * B, T, -1)
            if job["suffix"] is not None:
                index = job["suffix"]["index"].repeat(run["n_runs"], 1)
                m = m[torch.arange(m.shape[0])[:, None], index]
                v = v if v.dim() == 1 else v[torch.arange(v.shape[0])[:, None], index]
            return m, v

        def edits_of(run):
            edits = {}
            for layer, spec in run["edits"].items():
                e = {}
                if "heads" in spec:
                    m, v = rows(spec["heads"], values("z", layer, H * dh), run)
                    e["head_mask"], e["head_value"] = m, v.reshape(*v.shape[:-1], H, dh) if v.dim() > 1 else v.reshape(H, dh)
                if "neurons" in spec:
                    e["neuron_mask"], e["neuron_value"] = rows(spec["neurons"], values("act", layer, job["d_mlp"]), run)
                if "mlp" in spec:
                    m, e["mlp_value"] = rows(spec["mlp"][:, None], values("mlp", layer, job["d_model"]), run)
                    e["mlp_mask"] = m[..., 0]
                edits[layer] = e
            return edits

        def inputs_of(run):
            from transformers import DynamicCache
            if run["kind"] == "clean" or job["suffix"] is None:
                ids, mask = job["batches"][run["batch"]]
                inputs = {"input_ids": ids.repeat(run["n_runs"], 1), "attention_mask": mask.repeat(run["n_runs"], 1)}
                return inputs, ({job["cache_arg"]: DynamicCache(), "use_cache": True} if run["kv"] else {"use_cache": False}), None
            sx, n = job["suffix"], run["n_runs"]
            inputs = {"input_ids": sx["input_ids"].repeat(n, 1), "attention_mask": sx["attention_mask"].repeat(n, 1), "position_ids": sx["position_ids"].repeat(n, 1)}
            masks = None
            if job["windows"] is not None:  # one mask per layer type: a window counts positions, not cache slots
                q, dtype = inputs["position_ids"], module(paths["unembed"]).weight.dtype
                k = torch.cat([torch.arange(sx["n_cached"]).expand(q.shape[0], -1), q], 1)
                seen = inputs["attention_mask"].bool()[:, None, :] & (k[:, None, :] <= q[:, :, None])
                masks = {name: torch.zeros(seen.shape, dtype=dtype).masked_fill(~seen if w is None else ~(seen & (q[:, :, None] - k[:, None, :] < w)), torch.finfo(dtype).min)[:, None] for name, w in job["windows"].items()}
            if sx["n_cached"] == 0:
                return inputs, {"use_cache": False}, masks
            cache, kept = DynamicCache(), state["measured"]
            for layer in range(L):
                cache.update(kept["keys"][layer][:, :, :sx["n_cached"]].repeat(n, 1, 1, 1), kept["values"][layer][:, :, :sx["n_cached"]].repeat(n, 1, 1, 1), layer)
            return inputs, {job["cache_arg"]: cache, "use_cache": True}, masks
        for run in job["runs"]:
            live = run["kind"] == "ablated" or state[run["batch"]] is None
            got = {"z": [], "act": [], "mlp": [], "attn_o": [], "block_out": []}
            edits, (inputs, kwargs, masks) = (edits_of(run) if run["kind"] == "ablated" else {}), inputs_of(run)
            if live:
                with lm.trace(inputs, logits_to_keep=1, **kwargs) as tracer:
                    if masks is not None:  # the decoder takes them in place of the 2-d mask
                        decoder = module(paths["decoder"])
                        args, named = decoder.inputs
                        decoder.inputs = (args, {**named, "attention_mask": masks})
                    layers = module(paths["layers"])
                    if run["kind"] == "ablated" and run["start"] > 0 and job["prefix_reuse"]:
                        # layers upstream of every ablation are clean: feed in the clean
                        # block output before the first ablated layer (at the suffix slots)
                        last = state["measured"]["block_out"][run["start"] - 1]
                        if job["suffix"] is not None:
                            last = last[torch.arange(last.shape[0])[:, None], job["suffix"]["index"]]
                        last = last.repeat(run["n_runs"], 1, 1)
                        for layer in range(run["start"]):
                            layers[layer].skip(last)
                    if run["kind"] == "clean":
                        got["embeddings"] = [module(p).output for p in paths["embeddings"]]
                    for layer in range(run["start"], L):
                        edit = edits.get(layer, {})
                        proj = module(paths["attn_out"], layer)
                        z = proj.input
                        if "head_mask" in edit:
                            z4 = z.reshape(*z.shape[:2], H, dh)
                            z4 = torch.where(edit["head_mask"][..., None],
                                             edit["head_value"].to(z.dtype), z4)
                            proj.input = z4.reshape(z.shape)
                            z = proj.input
                        got["z"].append(z)
                        if paths["attn_branch"] is not None:
                            got["attn_o"].append(proj.output)
                        down = module(paths["down"], layer)
                        if "neuron_mask" in edit:
                            down.input = torch.where(edit["neuron_mask"],
                                                     edit["neuron_value"].to(z.dtype), down.input)
                        if job["neurons"]:
                            got["act"].append(down.input)
                        mlp = module(paths["mlp"], layer)
                        if "mlp_mask" in edit:
                            mlp.output = torch.where(edit["mlp_mask"][..., None],
                                                     edit["mlp_value"].to(z.dtype), mlp.output)
                        got["mlp"].append(mlp.output)
                        if run["kind"] == "clean":
                            got["block_out"].append(layers[layer].output)
                    final = module(paths["final_norm"])
                    got["resid"], got["normed"] = final.input, final.output
                    if run["kv"]:
                        model_out = lm.output
                    tracer.stop()  # the unembedding is computed at the sites only, below
                if run["kind"] == "clean":
                    if run["kv"]:
                        cache = getattr(model_out, "cache", None) or model_out.past_key_values
                        got["keys"] = [c.keys for c in cache.layers]
                        got["values"] = [c.values for c in cache.layers]
                    state[run["batch"]] = got
            got = state[run["batch"]] if run["kind"] == "clean" else got
            if run["kind"] == "clean" and (run["batch"] != "measured" or job["clean_dots"] is not None):
                continue  # its activations feed the edits (and the prefix) only
            # --- reduce: gather at the sites, project onto the target directions -----------
            n_runs, offset, unembed = run["n_runs"], run["offset"], module(paths["unembed"])
            at_rows = sites["rows"]
            at_pos = sites["pos"] if offset is None else (sites["pos"] - offset[at_rows]).clamp(min=0)
            N = len(at_rows)

            def at(x, n_runs=n_runs, rows=at_rows, pos=at_pos):
                """[n_runs * B, T, ...] run-major → [n_runs, N, ...] at the sites."""
                return x.reshape(n_runs, -1, *x.shape[1:])[:, rows, pos]

            if run["kind"] == "clean":
                # target directions u = γ ⊙ (W_U[y] − mean_V W_U) (centred over d_model for
                # LayerNorm) and b̂_U[y]; a logit difference subtracts the second token's
                W_U = unembed.weight
                b_U = getattr(unembed, "bias", None)
                targets = sites["targets"]
                if targets is None:  # "top": the clean run's most likely token
                    targets = (at(got["normed"])[0].float() @ W_U.float().T).argmax(-1)
                gamma = module(paths["final_norm"]).weight.detach().to(f64) + job["gamma_offset"]
                rows_a = W_U[targets].detach().to(f64)
                u = gamma * rows_a
                b_hat = rows_a @ job["beta"] + (0.0 if b_U is None else b_U[targets].detach().to(f64))
                if sites["minus"] is not None:
                    rows_b = W_U[sites["minus"]].detach().to(f64)
                    u = u - gamma * rows_b
                    b_hat = b_hat - rows_b @ job["beta"] - (
                        0.0 if b_U is None else b_U[sites["minus"]].detach().to(f64))
                elif job["centred"]:
                    u = u - gamma * job["W_U_mean"]
                    b_hat = b_hat - job["b_U_mean_hat"]
                if job["layernorm"]:
                    u = u - u.mean(-1, keepdim=True)
                B = got["resid"].shape[0]
                embed = torch.stack([(at(e.expand(B, -1, -1))[0].to(f64) * u).sum(-1)
                                     for e in got["embeddings"]], -1)
                consts = {}
                for name, branch in (("attn_const", "attn_branch"), ("mlp_const", "mlp_branch")):
                    c = job[name]
                    if c is not None and paths[branch] is not None:  # written through γ̃_b
                        c = c * (torch.stack([module(paths[branch], layer).weight.detach().to(f64) for layer in range(L)]) + job["branch_offset"])
                    consts[name] = torch.zeros(N, L, dtype=f64) if c is None else u @ c.T
                clean = {"targets": targets, "u": u, "unembed_bias": b_hat,
                         "u_norm": u.norm(dim=-1), "embed": embed,
                         "attn_bias": consts["attn_const"], "mlp_bias": consts["mlp_const"]}
            else:
                clean = job["clean_dots"] if job["clean_dots"] is not None else out["clean"]
            u = clean["u"] if "u" in clean else u_kept
            dots = {"head": [], "mlp": [], "neuron": [], "attn_scale": [], "mlp_scale": []}
            for i, layer in enumerate(range(run["start"], L)):
                W_O = module(paths["attn_out"], layer).weight.detach().to(f64)
                W_O = W_O.reshape(H, dh, -1) if job["conv1d"] else W_O.T.reshape(H, dh, -1)
                u_attn, u_mlp = u, u
                if paths["attn_branch"] is not None:  # sandwich norms: each branch's γ̃ ⊙ u
                    offset_b, eps_b = job["branch_offset"], job["branch_eps"]
                    u_attn = u * (module(paths["attn_branch"], layer).weight.detach().to(f64) + offset_b)
                    u_mlp = u * (module(paths["mlp_branch"], layer).weight.detach().to(f64) + offset_b)
                    o, m = at(got["attn_o"][i]).to(f64), at(got["mlp"][i]).to(f64)
                    dots["attn_scale"].append((o.pow(2).mean(-1) + eps_b).sqrt())
                    dots["mlp_scale"].append((m.pow(2).mean(-1) + eps_b).sqrt())
                z = at(got["z"][i]).to(f64).reshape(n_runs, N, H, dh)
                if job["fold"] and job["c_V"] is not None:
                    z = z - job["c_V"][layer]
                p = torch.einsum("hed,nd->nhe", W_O, u_attn)
                dots["head"].append(torch.einsum("gnhe,nhe->gnh", z, p))
                dots["mlp"].append(torch.einsum("gnd,nd->gn", at(got["mlp"][i]).to(f64), u_mlp))
                if job["neurons"]:
                    W_out = module(paths["down"], layer).weight.detach().to(f64)
                    q = u_mlp @ (W_out.T if job["conv1d"] else W_out)
                    dots["neuron"].append(at(got["act"][i]).to(f64) * q)
            result = {k: torch.stack(v, 2) for k, v in dots.items() if v}
            resid = at(got["resid"]).to(f64)
            result["resid"] = torch.einsum("gnd,nd->gn", resid, u)
            spread = resid.var(-1, unbiased=False) if job["layernorm"] else resid.pow(2).mean(-1)
            result["scale"] = (spread + job["eps"]).sqrt()
            if job["logprobs"]:
                logits = at(got["normed"]).float() @ unembed.weight.float().T
                if job["softcap"] is not None:
                    logits = job["softcap"] * torch.tanh(logits / job["softcap"])
                logprobs = logits.log_softmax(-1)
                target = clean["targets"][None, :, None].expand(n_runs, -1, 1)
                result["logprob"] = logprobs.gather(-1, target)[..., 0].to(f64)
                if job["softcap"] is not None:  # the capped (uncentred) logit, beside the raw decomposition
                    result["logit_capped"] = logits.gather(-1, target)[..., 0].to(f64)
                # top-k of each ablation's source-averaged distribution
                K = rep["n_sources"] if run["kind"] == "ablated" else 1
                probs = logprobs.exp().reshape(-1, K, N, logprobs.shape[-1]).mean(1)
                top = probs.topk(job["top_k"], dim=-1)
                result["topk_ids"], result["topk_probs"] = top.indices, top.values.to(f64)
            if run["kind"] == "clean":
                out["clean"] = {**clean, **{k: v[0] for k, v in result.items()}}
                if not job["return_u"]:  # a remote run: u [N, d_model] stays on the server
                    u_kept = out["clean"].pop("u")
            else:
                out["groups"].append(result)
        out = nnsight.save(out)
    return out
