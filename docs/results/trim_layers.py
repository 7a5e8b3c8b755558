"""Shrink a layer-sweep result file for shipping: keep only the prompts done (a sweep stopped
early pre-allocates every prompt as NaN) and store float64 arrays as float32.

    python docs/results/trim_layers.py IN.safetensors OUT.safetensors

The settings (all prompts planned, the sources drawn from them) and the progress record are
kept as they are, so the file still says how many prompts of how many were done.
"""

import sys

import torch

from nbtools.sweeps import load_result


def trim(src: str, dst: str) -> None:
    res = load_result(src)
    done = res.done
    n = int(done.sum())
    assert bool(done[:n].all()), "the prompts done are not a prefix"
    P = done.shape[0]
    for key, value in list(res.state.items()):
        if value.dim() and value.shape[0] == P:
            value = value[:n]
        if value.dtype == torch.float64:
            value = value.float()
        res.state[key] = value
    res.save(dst)
    print(f"{dst}: {n} of {P} prompts")


if __name__ == "__main__":
    trim(*sys.argv[1:3])
