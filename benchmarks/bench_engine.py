"""Measurement-engine cost relative to plain transformers forwards (prints ratios).

    python benchmarks/bench_engine.py [--repeats 5]

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
from common import gpt2_small_lab, median_time

from nbtools import Head


def bench(lab, n_tokens: int, repeats: int) -> None:
    heads = [Head(layer, head) for layer in range(12) for head in range(12)]
    ids = torch.randint(0, 50257, (1, n_tokens), generator=torch.Generator().manual_seed(0))

    def plain():
        with torch.no_grad():
            lab.hf_model(input_ids=ids)

    lab.clean_run(lab.tokenize(ids))  # cached from here on, as in the Explorer
    forward = median_time(plain, repeats)
    per_layer = {layer: median_time(lambda layer=layer: lab.measure(ids, Head(layer, 0)), repeats)
                 for layer in range(12)}
    print(f"\n{n_tokens} tokens: plain forward {forward * 1e3:.1f} ms")
    for layer in (0, 5, 11):
        print(f"  (a) one head ablation in layer {layer:2d}: {per_layer[layer] * 1e3:7.1f} ms"
              f"  ratio {per_layer[layer] / forward:.2f}")
    mean_ratio = statistics.mean(per_layer.values()) / forward
    print(f"  (a) mean over layers: ratio {mean_ratio:.2f}   (target ≤ 1.3)")
    reps = max(1, repeats // 2)
    sweep = median_time(lambda: lab.measure_many(ids, heads), reps)
    forwards = median_time(lambda: [plain() for _ in heads], reps)
    print(f"  (b) all 144 heads: {sweep:.2f} s vs 144 forwards {forwards:.2f} s"
          f"  ratio {sweep / forwards:.2f}   (target ≤ 0.6)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    lab = gpt2_small_lab()
    print(f"torch threads: {torch.get_num_threads()}; model: {lab}")
    for n_tokens in (32, 128):
        bench(lab, n_tokens, args.repeats)


if __name__ == "__main__":
    main()
