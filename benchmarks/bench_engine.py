"""Measurement-engine cost relative to plain transformers forwards (prints ratios).

    python benchmarks/bench_engine.py [--repeats 5] [--tokens 32 128] [--threads N]

(a) one ablation's full measurement (clean run cached) ÷ one plain forward of the same
    prompt — target ≤ 1.3; reported for a head in the first, a middle and the last layer
    and averaged over all layers.
(b) all 144 single-head ablations of one prompt (measure_many) ÷ 144 plain forwards —
    target ≤ 0.6 (prefix reuse + target-only unembedding + batching).
On a GPT-2-small-sized random model, prompts of 32 and 128 tokens, CPU, torch threads as set.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import gpt2_small_lab, paired_ratio

from nbtools import Head


def bench(lab, n_tokens: int, repeats: int) -> None:
    heads = [Head(layer, head) for layer in range(12) for head in range(12)]
    ids = torch.randint(0, 50257, (1, n_tokens), generator=torch.Generator().manual_seed(0))

    def plain():
        with torch.no_grad():
            lab.hf_model(input_ids=ids)

    lab.clean_run(lab.tokenize(ids))  # cached from here on, as in the Explorer
    print(f"\n{n_tokens} tokens")
    ratios = []
    for layer in range(12):
        ratio, t_measure, t_plain = paired_ratio(lambda layer=layer: lab.measure(ids, Head(layer, 0)),
                                                 plain, repeats)
        ratios.append(ratio)
        if layer in (0, 5, 11):
            print(f"  (a) one head ablation in layer {layer:2d}: {t_measure * 1e3:7.1f} ms vs "
                  f"plain forward {t_plain * 1e3:7.1f} ms  ratio {ratio:.2f}")
    print(f"  (a) mean over layers: ratio {statistics.mean(ratios):.2f}   (target ≤ 1.3)")
    ratio, t_sweep, t_plain = paired_ratio(lambda: lab.measure_many(ids, heads),
                                           lambda: [plain() for _ in heads], max(1, repeats // 2))
    print(f"  (b) all 144 heads: {t_sweep:.2f} s vs 144 forwards {t_plain:.2f} s"
          f"  ratio {ratio:.2f}   (target ≤ 0.6)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lab = gpt2_small_lab()
    print(f"torch threads: {torch.get_num_threads()}; model: {lab}")
    for n_tokens in args.tokens:
        bench(lab, n_tokens, args.repeats)


if __name__ == "__main__":
    main()
