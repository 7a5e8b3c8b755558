"""The ``nbtools train-tiny`` command line."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from .config import TrainConfig
from .recipe import train_tiny


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``nbtools train-tiny --out DIR [--data DIR] [--tokens N] ...``."""
    parser = argparse.ArgumentParser(
        prog="nbtools train-tiny", description="Train the small embedded GPT-2 model."
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output folder (resumes if it has a checkpoint from the same settings)",
    )
    parser.add_argument(
        "--data", default=None, help="shared data folder (default: $NBTOOLS_DATA or ../shared/data)"
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=TrainConfig.max_tokens,
        help="training tokens (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    train_tiny(
        args.out,
        data_dir=args.data,
        max_tokens=args.tokens,
        seed=args.seed,
        threads=args.threads,
        log=log,
    )
    return 0
