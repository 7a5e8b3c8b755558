"""Shrink a layer-sweep result file for shipping: keep only the prompts done (a sweep stopped
early pre-allocates every prompt as NaN) and store float64 arrays as float32.

    python docs/results/trim_layers.py IN.safetensors OUT.safetensors [PROMPT_SOURCE]

The settings (all prompts planned, the sources drawn from them) and the progress record are
kept as they are, so the file still says how many prompts of how many were done; only
PROMPT_SOURCE, if given, replaces the recorded path of the prompt file (a machine's absolute
path → the repository's copy of the same file).
"""

import sys

import torch

from nbtools.sweeps import load_result


def trim(src: str, dst: str, prompt_source: str | None = None) -> None:
    res = load_result(src)
    if prompt_source:
        res.settings["prompt_source"] = prompt_source
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
    trim(*sys.argv[1:4])
