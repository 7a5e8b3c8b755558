"""Each walkthrough's wall time, executed top to bottom as the test suite does (nbclient,
offline), on the model it would pick.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_walkthroughs.py --model tiny
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_walkthroughs.py --model smollm2-135m

`--model` sets $NBTOOLS_NOTEBOOK_MODEL (a real model must be in the cache: `nbtools fetch`).
Prints one line per notebook: its seconds and ok / the error's type.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("notebooks", nargs="*", help="names without .ipynb (default: all)")
    args = parser.parse_args()
    os.environ["NBTOOLS_NOTEBOOK_MODEL"] = args.model
    names = args.notebooks or sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    for name in names:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        client = NotebookClient(nb, timeout=1800, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS)}})
        start = time.perf_counter()
        try:
            client.execute()
            outcome = "ok"
        except Exception as error:  # a failed cell: report it and go on with the next notebook
            outcome = f"FAILED ({type(error).__name__})"
        print(f"{args.model} {name}: {time.perf_counter() - start:.0f} s {outcome}", flush=True)


if __name__ == "__main__":
    main()
