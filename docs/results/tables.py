"""Per-layer tables (markdown) of a head sweep (R&N) and a layer sweep (Hydra) result file.

    python docs/results/tables.py docs/results/smollm2_heads.safetensors \
        docs/results/smollm2_layers.safetensors
"""

import sys

import torch

from nbtools.sweeps import HeadSweepResult, load_result


def with_interval(value, lo, hi) -> str:
    """"0.12 [0.05, 0.20]" (a 95 % bootstrap interval), "0.12 [—]" where it is undefined."""
    if torch.isnan(torch.as_tensor(lo)):
        return f"{float(value):.2f} [—]"
    return f"{float(value):.2f} [{float(lo):.2f}, {float(hi):.2f}]"


def rn_tables(res) -> str:
    """Per layer (condensed selection: top 2% tokens by each head's clean DE, mean over heads);
    SR and the final-norm shares with 95 % bootstrap intervals over corpus rows.

    Models with branch norms (Gemma 2/3, SPEC §7) also get an SR_branch column (the branch
    norms' rescaling; SR_LN is then what remains after it); other models' tables have none.
    """
    def layer_mean(q, stat="mean"):
        return res.stat(q, "condensed", stat).nanmean(1)

    branch = "sr_branch" in res.quantities
    names = ("sr_heads", "sr_mlp", *(("sr_branch",) if branch else ()), "sr_ln")
    de, dl, sr = layer_mean("direct_effect"), layer_mean("delta_logit"), layer_mean("self_repair")
    parts = [layer_mean(q) for q in names]
    ln_share = layer_mean("sr_ln", "mean_clipped_ratio")
    ln_rom = layer_mean("sr_ln", "ratio_of_means")
    sr_iv = res.interval("self_repair", per="layer")
    ln_iv = res.interval("sr_ln", "mean_clipped_ratio", per="layer")
    rom_iv = res.interval("sr_ln", "ratio_of_means", per="layer")
    head_sr = res.stat("self_repair", "condensed", "mean")
    columns = ["SR_heads", "SR_MLP", *(["SR_branch"] if branch else []), "SR_LN"]
    lines = [f"{res.settings['model']}: {res.settings['n_rows']} rows × "
             f"{res.settings['row_len']} tokens, {len(res.heads)} heads, "
             f"{res.selection_text()}", "",
             "| layer | DE | ΔL | SR [95 %] | SR/DE | " + " | ".join(columns)
             + " | SR_LN/DE, heads' ratio of means [95 %] | SR_LN/DE, clipped [95 %] | heads SR<0 |",
             "|---:|---:|---:|---:|---:|" + "---:|" * len(columns) + "---:|---:|---:|"]
    for layer in range(res.n_layers):
        neg = int((head_sr[layer] < 0).sum())
        vals = [de[layer], dl[layer]]
        lines.append(f"| {layer} | " + " | ".join(f"{float(v):.2f}" for v in vals)
                     + f" | {with_interval(sr[layer], sr_iv[0][layer], sr_iv[1][layer])} | "
                     + f"{float(sr[layer] / de[layer]):.2f} | "
                     + " | ".join(f"{float(p[layer]):.2f}" for p in parts)
                     + f" | {with_interval(ln_rom[layer], rom_iv[0][layer], rom_iv[1][layer])}"
                     + f" | {with_interval(ln_share[layer], ln_iv[0][layer], ln_iv[1][layer])}"
                     + f" | {neg}/{res.n_heads} |")
    # thirds of the depth (layers 0–9, 10–19, 20–29 for a 30-layer model)
    cuts = [round(i * res.n_layers / 3) for i in range(4)]
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        lines.append(f"\nlayers {lo}–{hi - 1}: SR/DE = "
                     f"{float(sr[lo:hi].sum() / de[lo:hi].sum()):.2f}")
    ae = res.settings["anti_erasure"]
    if ae:
        lines += ["", f"anti-erasure, layer-{res.settings['anti_erasure_layer']} neurons "
                  "(condensed):", "",
                  "| head | top-5 share (ratio of means) | (mean of clipped ratios) | "
                  "most recurrent neuron: share of tokens in its top 10 |",
                  "|---|---:|---:|---:|"]
        for h in ae:
            a = res.anti_erasure(h)
            rec = a["recurrence"]
            lines.append(f"| {h} | {a['top5_share_ratio_of_means']:.2f} | "
                         f"{a['top5_share_mean_clipped_ratio']:.2f} | "
                         f"n{int(rec.argmax())}: {float(rec.max()):.2f} |")
    return "\n".join(lines)


def hydra_tables(res) -> str:
    """Per ablated layer, over the prompts: Δunembed, Δablate, agreement, CE fit (means and
    slopes with 95 % bootstrap intervals over prompts), the layer whose DE rises most (the
    candidate Hydra layer) and the late-MLP erasure."""
    lines = [f"{res.settings['model']}: {int(res.done.sum())} prompts, "
             f"{res.settings['n_sources']} resample sources, final position"]
    clean_mlp = res.get("mlp_de_clean").mean(0)
    for kind in res.settings["kinds"]:
        du = res.get("delta_unembed", kind=kind)
        da = res.get("delta_ablate", kind=kind)
        lines += ["", f"{kind} layers ablated:", "",
                  "| layer | Δunembed | Δablate | share Δunembed>Δablate | "
                  + " | ".join(f"CE slope ({s}) | R² ({s})" for s in res.scales)
                  + " | largest DE rise (clean) |",
                  "|---:|---:|---:|---:|" + "---:|---:|" * len(res.scales) + "---|"]
        regs = [res.regression(kind, s) for s in res.scales]
        reg_ivs = [res.regression_interval(kind, s) for s in res.scales]
        du_iv, da_iv = res.interval("delta_unembed", kind=kind), res.interval("delta_ablate", kind=kind)
        for j, layer in enumerate(res.layers_of(kind)):
            a = res.index(kind, layer)
            rise = []
            for other in ("attn", "mlp"):
                delta = (res.get(f"{other}_de_ablated", res.scales[0])[:, a]
                         - res.get(f"{other}_de_clean")).mean(0)
                if other == kind:
                    delta[layer] = -torch.inf
                rise.append((float(delta.max()), f"{other}{int(delta.argmax())}"))
            best = max(rise)
            fits = " | ".join(
                f"{with_interval(r['slope'][j], iv['slope'][0][j], iv['slope'][1][j])} | "
                f"{float(r['r2'][j]):.2f}" for r, iv in zip(regs, reg_ivs, strict=True))
            lines.append(f"| {layer} | {with_interval(du[:, j].mean(), du_iv[0][j], du_iv[1][j])} | "
                         f"{with_interval(da[:, j].mean(), da_iv[0][j], da_iv[1][j])} | "
                         f"{float((du[:, j] > da[:, j]).double().mean()):.2f} | {fits} | "
                         f"{best[1]} +{best[0]:.2f} |")
        share = float((du > da).double().mean())
        lines.append(f"\nall {kind} layers: Δunembed > Δablate on {share:.0%} of prompt × layer pairs")
    erasers = (res.get("mlp_de_clean") < 0).double().mean(0)
    lines += ["", "clean MLP DE on the top token (mean over prompts; share of prompts < 0), "
              "last 6 layers: " + ", ".join(
                  f"mlp{layer} {float(clean_mlp[layer]):.2f} ({float(erasers[layer]):.0%})"
                  for layer in range(res.n_layers - 6, res.n_layers))]
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        res = load_result(path)
        print(rn_tables(res) if isinstance(res, HeadSweepResult) else hydra_tables(res))
        print()
