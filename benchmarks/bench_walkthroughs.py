"""Each walkthrough's wall time, executed top to bottom as the test suite does (its
`NotebookRuns`: nbclient, offline, in notebooks/), on the model it would pick.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_walkthroughs.py --model tiny
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_walkthroughs.py --model smollm2-135m

`--model` becomes $NBTOOLS_NOTEBOOK_MODEL (a real model must be in the cache: `nbtools fetch`).
Prints one line per notebook: its seconds and ok / the error's type.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from notebook_runs import NotebookRuns, notebook_paths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("notebooks", nargs="*", help="names without .ipynb (default: all)")
    args = parser.parse_args()
    names = [f"{n}.ipynb" for n in args.notebooks] or [p.name for p in notebook_paths()]
    with tempfile.TemporaryDirectory() as out:
        runs = NotebookRuns(Path(out), args.model)
        for name in names:
            start = time.monotonic()
            try:
                runs.executed(name)
                outcome = "ok"
            except Exception as error:  # a failed cell: report it, go on with the next notebook
                outcome = f"FAILED ({type(error).__name__})"
            print(f"{args.model} {name.removesuffix('.ipynb')}: "
                  f"{time.monotonic() - start:.0f} s {outcome}", flush=True)


if __name__ == "__main__":
    main()
