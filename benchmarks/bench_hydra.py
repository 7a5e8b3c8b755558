"""Hydra-protocol layer sweep per prompt vs one plain forward of the prompt, and vs its floor.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_hydra.py [--model DIR]
        [--prompts 16] [--sources 15] [--repeats 2] [--threads N]

Workload: `sweep_layers` over the first `--prompts` embedded factual prompts — every
attention and MLP layer resample-ablated at the final position from 15 other prompts, one
scale convention (all 2·n_layers × 15 ablated runs per prompt). Baseline: one plain
transformers forward of each prompt (no_grad, full logits). The two are interleaved and the
per-prompt ratio printed (target on SmolLM2: ≤ 60). The floor: every ablated run's layers from
the ablated one on, at the final position only (the earlier ones are clean), in body
forwards of the prompt (no unembedding, see `common`); printed with sweep ÷ floor.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import MODELS, body_forward, build_lab, floor_forwards

from nbtools.facts import load_facts
from nbtools.sweeps import sweep_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help=MODELS)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--sources", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lab = build_lab(args.model)
    texts = [f.prompt for f in load_facts(None, args.prompts)]
    ids = [lab.tokenize(t).input_ids for t in texts]
    L = lab.n_layers
    starts = list(range(L)) * 2
    floors = [floor_forwards(lab, [t], starts, args.sources, "final", "top") for t in texts]

    def run_sweep() -> float:
        lab.clear_cache()
        lab._effects_cache.clear()
        t0 = time.perf_counter()
        sweep_layers(lab, texts, n_sources=args.sources, scales=["clean"], examples=0,
                     progress=False)
        return time.perf_counter() - t0

    def run_plain() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for x in ids:
                lab.hf_model(input_ids=x)
        return time.perf_counter() - t0

    def floor_time() -> float:
        total = 0.0
        for x, f in zip(ids, floors, strict=True):
            t0 = time.perf_counter()
            body_forward(lab, x)
            total += f * (time.perf_counter() - t0)
        return total

    P = len(texts)
    print(f"model: {lab!r}")
    print(f"workload: {P} prompts ({statistics.mean(x.shape[1] for x in ids):.1f} tokens on "
          f"average) × {2 * L} layer ablations × {args.sources} sources, final position, one "
          f"scale; torch threads {torch.get_num_threads()}")
    print(f"floor: {statistics.mean(floors):.1f} body forwards per prompt on average")
    run_sweep()  # warm-up (weight folding, first traces)
    floor_time()
    ratios, to_floor = [], []
    for i in range(args.repeats):
        sweep, plain, floor = run_sweep(), run_plain(), floor_time()
        ratios.append(sweep / plain)
        to_floor.append(sweep / floor)
        print(f"repeat {i + 1}: sweep {sweep:.2f} s = {sweep / P:.2f} s per prompt; one plain "
              f"forward per prompt {plain / P * 1e3:.1f} ms; ratio {ratios[-1]:.1f}; floor "
              f"{floor / P:.2f} s per prompt, sweep ÷ floor {to_floor[-1]:.2f}", flush=True)
    print(f"per prompt: sweep ÷ one plain forward {statistics.median(ratios):.1f} (target ≤ 60); "
          f"sweep ÷ floor {statistics.median(to_floor):.2f}")


if __name__ == "__main__":
    main()
