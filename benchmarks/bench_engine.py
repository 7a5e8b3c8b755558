"""Measurement-engine cost relative to plain forwards and to the compute floor (prints ratios).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_engine.py [--model gpt2-small]
        [--repeats 5] [--tokens 32 128] [--threads N]

(a) one ablation's full measurement (clean run cached, as in the Explorer) ÷ one plain
    forward of the same prompt — target ≤ 1.3; reported for a head in the first, a middle
    and the last layer and averaged over all layers.
(b) every single-head ablation of one prompt (measure_many) ÷ as many plain forwards —
    target ≤ 0.6 (prefix reuse + target-only unembedding + batching).
(c) an Explorer click: `Lab.measure(prompt, head, neurons=True, logprobs=True, top_k=10,
    target="top", measure_at=[last], positions="all")`, median and p90 over heads.
Each also prints its floor (see `common`) and measured ÷ floor. --model: tiny (embedded),
gpt2-small (random GPT-2 small shape, the default) or a model folder.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import (
    MODELS,
    body_forward,
    build_lab,
    floor_forwards,
    paired_ratio,
    print_floor,
    random_rows,
)

from nbtools import Head


def bench(lab, n_tokens: int, repeats: int) -> None:
    L, H = lab.n_layers, lab.n_heads
    heads = [Head(layer, head) for layer in range(L) for head in range(H)]
    ids = random_rows(lab, 1, n_tokens)

    def plain():
        with torch.no_grad():
            lab.hf_model(input_ids=ids)

    lab.measure_clean(ids, logprobs=False)  # cached from here on, as in the Explorer
    _, t_body, _ = paired_ratio(lambda: body_forward(lab, ids), plain, repeats)
    print(f"\n{n_tokens} tokens (body forward, no unembedding: {t_body * 1e3:.1f} ms)")
    ratios = []
    for layer in range(L):
        ratio, t_measure, t_plain = paired_ratio(lambda layer=layer: lab.measure(ids, Head(layer, 0)),
                                                 plain, repeats)
        ratios.append(ratio)
        if layer in (0, L // 2, L - 1):
            print(f"  (a) one head ablation in layer {layer:2d}: {t_measure * 1e3:7.1f} ms vs "
                  f"plain forward {t_plain * 1e3:7.1f} ms  ratio {ratio:.2f}")
            print_floor("it", t_measure, floor_forwards(lab, ids, [layer]), t_body)
    print(f"  (a) mean over layers: ratio {statistics.mean(ratios):.2f}   (target ≤ 1.3)")
    ratio, t_sweep, t_plain = paired_ratio(lambda: lab.measure_many(ids, heads),
                                           lambda: [plain() for _ in heads], max(1, repeats // 2))
    print(f"  (b) all {len(heads)} heads: {t_sweep:.2f} s vs {len(heads)} forwards "
          f"{t_plain:.2f} s  ratio {ratio:.2f}   (target ≤ 0.6)")
    print_floor("all heads", t_sweep, floor_forwards(lab, ids, [h.layer for h in heads]), t_body)
    click = dict(neurons=True, logprobs=True, top_k=10, target="top", measure_at=[n_tokens - 1],
                 positions="all")
    times, floors = [], []
    for h in heads[:: max(1, len(heads) // 40)]:
        t0 = time.perf_counter()
        lab.measure(ids, h, **click)
        times.append(time.perf_counter() - t0)
        floors.append(floor_forwards(lab, ids, [h.layer], target="top",
                                     measure_at=[n_tokens - 1]))
    med = statistics.median(times)
    print(f"  (c) Explorer click: median {med * 1e3:.1f} ms, p90 "
          f"{sorted(times)[int(0.9 * (len(times) - 1))] * 1e3:.1f} ms over {len(times)} heads")
    print_floor("a click (median head)", med, statistics.median(floors), t_body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small", help=MODELS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lab = build_lab(args.model)
    print(f"torch threads: {torch.get_num_threads()}; model: {lab}")
    for n_tokens in args.tokens:
        bench(lab, n_tokens, args.repeats)


if __name__ == "__main__":
    main()
