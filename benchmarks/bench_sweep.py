"""Head-sweep throughput vs plain forward passes on a GPT-2-small-sized random model.

    .venv/bin/python benchmarks/bench_sweep.py [--repeats 3] [--threads 2] [--device cpu]

Workload: 2 rows × 128 tokens, all 144 heads, resample ablation (row i ← row i+1), every
position measured — one `sweep_heads` call (clean run, 144 ablated runs batched with prefix
reuse, all the DE algebra and the streaming summaries). Baseline: 144 plain `transformers`
forward passes of the same [2, 128] batch (no_grad, full logits), i.e. what ablating each
head with one naive forward pass would cost at least. The two are interleaved in the same
process and the medians compared; the target is a ratio ≤ 0.5.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import gpt2_small_lab


def build_lab(device: str):
    return gpt2_small_lab(device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from nbtools.sweeps import sweep_heads

    lab = build_lab(args.device)
    rows = torch.randint(1, 50257, (args.rows, args.tokens), generator=torch.Generator().manual_seed(0))
    ids = rows.to(args.device)
    n_heads = lab.n_layers * lab.n_heads

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run_sweep() -> float:
        lab._clean_cache.clear()
        sync()
        t0 = time.perf_counter()
        sweep_heads(lab, rows, heads="all", method="resample", batch_rows=args.rows,
                    progress=False)
        sync()
        return time.perf_counter() - t0

    def run_plain() -> float:
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(n_heads):
                lab.hf_model(ids)
        sync()
        return time.perf_counter() - t0

    print(f"model: {lab!r}")
    print(f"workload: {args.rows} rows × {args.tokens} tokens, {n_heads} heads, resample; "
          f"torch threads {torch.get_num_threads()}, device {args.device}")
    run_sweep()  # warm-up (imports, weight folding, first trace)
    sweeps, plains = [], []
    for i in range(args.repeats):
        sweeps.append(run_sweep())
        plains.append(run_plain())
        print(f"repeat {i + 1}: sweep {sweeps[-1]:.2f} s, {n_heads} plain forwards "
              f"{plains[-1]:.2f} s, ratio {sweeps[-1] / plains[-1]:.3f}", flush=True)
    sweep_s, plain_s = statistics.median(sweeps), statistics.median(plains)
    paired = statistics.median(a / b for a, b in zip(sweeps, plains, strict=True))
    sites = args.rows * (args.tokens - 1)
    print(f"head sweep: {sweep_s:.2f} s median = {n_heads * sites / sweep_s:,.0f} "
          f"head-token measurements/s ({sweep_s / n_heads * 1000:.1f} ms per head)")
    print(f"{n_heads} plain forwards: {plain_s:.2f} s median ({plain_s / n_heads * 1000:.1f} ms each)")
    print(f"ratio sweep / plain forwards: {paired:.3f} (median of interleaved pairs; "
          "target ≤ 0.5)")


if __name__ == "__main__":
    main()
