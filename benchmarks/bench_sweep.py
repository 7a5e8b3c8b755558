"""Head-sweep throughput vs plain forward passes and vs the compute floor.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_sweep.py [--model gpt2-small]
        [--repeats 3] [--threads 2] [--device cpu] [--rows 2] [--tokens 128]

Workload: 2 rows × 128 tokens, all 144 heads, resample ablation (row i ← row i+1), every
position measured — one `sweep_heads` call (clean run, 144 ablated runs batched with prefix
reuse, all the DE algebra and the streaming summaries). Baseline: 144 plain `transformers`
forward passes of the same [2, 128] batch (no_grad, full logits), i.e. what ablating each
head with one naive forward pass would cost at least. The two are interleaved in the same
process and the medians compared; the target is a ratio ≤ 0.5. Also printed: the floor
(every head's layers from its own on, at every position with a next token; see `common`) in
body forwards of the batch, and sweep ÷ floor (target ≤ 1.25). --model: tiny (embedded),
gpt2-small (random GPT-2 small shape, the default) or a model folder (e.g. SmolLM2).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import MODELS, body_forward, build_lab, floor_forwards, gpt2_small_lab, random_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-small", help=MODELS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from nbtools.sweeps import sweep_heads

    if args.model == "gpt2-small":
        lab = gpt2_small_lab(device=args.device)
    else:
        lab = build_lab(args.model)
    rows = random_rows(lab, args.rows, args.tokens)
    ids = rows.to(args.device)
    n_heads = lab.n_layers * lab.n_heads

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run_sweep() -> float:
        lab.clear_cache()
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

    def run_body() -> float:
        sync()
        t0 = time.perf_counter()
        body_forward(lab, ids)
        sync()
        return time.perf_counter() - t0

    heads = [layer for layer in range(lab.n_layers) for _ in range(lab.n_heads)]
    floor = floor_forwards(lab, rows, heads)
    print(f"model: {lab!r}")
    print(f"workload: {args.rows} rows × {args.tokens} tokens, {n_heads} heads, resample; "
          f"torch threads {torch.get_num_threads()}, device {args.device}")
    run_sweep()  # warm-up (imports, weight folding, first trace)
    sweeps, plains, floors = [], [], []
    for i in range(args.repeats):
        sweeps.append(run_sweep())
        plains.append(run_plain())
        floors.append(floor * statistics.median(run_body() for _ in range(3)))
        print(f"repeat {i + 1}: sweep {sweeps[-1]:.2f} s, {n_heads} plain forwards "
              f"{plains[-1]:.2f} s, ratio {sweeps[-1] / plains[-1]:.3f}; floor "
              f"{floors[-1]:.2f} s, sweep ÷ floor {sweeps[-1] / floors[-1]:.3f}", flush=True)
    sweep_s, plain_s = statistics.median(sweeps), statistics.median(plains)
    paired = statistics.median(a / b for a, b in zip(sweeps, plains, strict=True))
    sites = args.rows * (args.tokens - 1)
    print(f"head sweep: {sweep_s:.2f} s median = {n_heads * sites / sweep_s:,.0f} "
          f"head-token measurements/s ({sweep_s / n_heads * 1000:.1f} ms per head)")
    print(f"{n_heads} plain forwards: {plain_s:.2f} s median ({plain_s / n_heads * 1000:.1f} ms each)")
    print(f"ratio sweep / plain forwards: {paired:.3f} (median of interleaved pairs; "
          "target ≤ 0.5)")
    to_floor = statistics.median(a / b for a, b in zip(sweeps, floors, strict=True))
    print(f"floor: {floor:.1f} body forwards of the batch (no unembedding) = "
          f"{statistics.median(floors):.2f} s; sweep ÷ floor {to_floor:.3f} (target ≤ 1.25)")


if __name__ == "__main__":
    main()
