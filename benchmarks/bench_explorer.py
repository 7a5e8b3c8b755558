"""Explorer latency in a real browser: click a head → updated panels (median, p90).

    .venv/bin/python benchmarks/bench_explorer.py [--clicks 40] [--models embedded,gpt2-small]
                                                  [--model FOLDER_OR_NAME] [--prompt TEXT]
                                                  [--pauses 8] [--pause-s 2.0] [--no-static] [--threads N]

Starts JupyterLab and headless Chromium (system package `chromium`), opens a notebook with the
Explorer for each model, and clicks heads one at a time: the time from the click event to the
animation frame after the panels show that click's measurement. Also prints the kernel-side
measurement time and the ratio of the click latency to one plain forward pass of the same
model on the same prompt (timed in the kernel, no_grad, same torch thread count as the
Explorer's worker). Models: "embedded" (`nbtools.load("tiny")`, or a random GPT-2 of the same
shape while the trained weights are not built yet) and "gpt2-small" (random GPT-2 small shape:
12 layers × 12 heads, d_model 768, vocabulary 50,257; no download); `--model` takes anything
`nbtools.load` takes instead (a converted folder, a name).

Clicks after a pause: `--pauses` more clicks, each `--pause-s` seconds after the previous
result — how people explore, and when the static PNG fallback is drawn (it is on here, with
its default delay, so the figure shows whether drawing it delays the next click).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser_helpers import (  # noqa: E402
    CLICK_JS,
    chromium,
    chromium_path,
    embedded_available,
    execute,
    jupyter_server,
    open_notebook,
    run_all,
    save_random_gpt2,
    shutdown_kernel,
    wait_settled,
    write_notebook,
)

PROMPT = "In his speech to Congress, the President of the United"
GPT2_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "data" / "tokenizer-gpt2"

FORWARD = """
import json, threading, time, statistics, torch
_ids = lab.tokenize({prompt!r}).input_ids
_out = {{}}
def _time_forward():
    torch.set_num_threads(ex.threads)
    with torch.no_grad():
        for _ in range(3):
            lab.hf_model(_ids)
        ts = []
        for _ in range(20):
            t = time.perf_counter(); lab.hf_model(_ids); ts.append(time.perf_counter() - t)
    _out["forward_ms"] = 1000 * statistics.median(ts)
ex.wait()
_t = threading.Thread(target=_time_forward); _t.start(); _t.join()
_out.update(threads=ex.threads, n_tokens=int(_ids.shape[1]), model=repr(lab),
            n_params=sum(p.numel() for p in lab.hf_model.parameters()))
json.dump(_out, open({path!r}, "w"))
"""

SERVER_MS = """
import json
json.dump(_server_ms, open({path!r}, "w"))
"""

TRACK = """
_server_ms = []
ex.observe(lambda c: _server_ms.append(c["new"].get("ms")), names="view")
"""


def percentile(values, q):
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def model_folder(kind: str, work: Path) -> tuple[str, str]:
    """(source for nbtools.load, description)."""
    if kind == "embedded":
        if embedded_available():
            return "tiny", "embedded tiny (trained)"
        tok = None
        tiny_tok = Path(__file__).resolve().parents[1] / "runs" / "tiny"
        if (tiny_tok / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast.from_pretrained(tiny_tok)
        vocab = len(tok) if tok is not None else 8192
        return (save_random_gpt2(work / "tiny-shape", 6, 8, 256, vocab, tokenizer=tok),
                "random GPT-2 in the embedded model's shape (6×8, d 256; trained weights not built)")
    if kind == "gpt2-small":
        tok = None
        if (GPT2_TOKENIZER / "vocab.json").is_file():
            from transformers import GPT2TokenizerFast

            tok = GPT2TokenizerFast.from_pretrained(GPT2_TOKENIZER)
        return (save_random_gpt2(work / "gpt2-small", 12, 12, 768, 50257, tokenizer=tok),
                "random GPT-2 small shape (12×12, d 768, vocab 50257)")
    raise SystemExit(f"unknown model {kind!r}; choose embedded or gpt2-small")


def bench(kind: str, args, work: Path, browser, url: str, root: Path) -> dict:
    if kind.startswith("load:"):
        source = kind[5:]
        description = f"nbtools.load({Path(source).name if Path(source).exists() else source!r})"
        kind = "model"
    else:
        source, description = model_folder(kind, work)
    name = f"bench-{kind}.ipynb"
    threads = "None" if args.threads is None else str(args.threads)
    write_notebook(root / name, [
        "import warnings\nwarnings.simplefilter('ignore')\nimport nbtools\n"
        f"from nbtools.widgets import Explorer\nlab = nbtools.load({source!r})",
        f"ex = Explorer(lab, prompt={args.prompt!r}, threads={threads}, "
        f"static_fallback={not args.no_static})\n"
        + TRACK + "ex",
    ])
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    open_notebook(page, url, name, timeout=180_000)
    run_all(page)
    page.wait_for_selector(".nbx-explorer", timeout=180_000)
    wait_settled(page, timeout=180_000)
    n_layers = int(page.evaluate(
        "() => document.querySelectorAll('.nbx-explorer .nbx-layer').length"))
    n_heads = int(page.evaluate(
        "() => document.querySelectorAll('.nbx-explorer .nbx-cell:not(.nbx-mlp)').length")
        ) // n_layers
    # warm-up: one click per layer (first ablation at each layer builds its caches)
    for layer in range(n_layers):
        page.evaluate(CLICK_JS, f"L{layer}H0")
    execute(page, "_server_ms.clear()")
    latencies = []
    for i in range(args.clicks):
        layer, head = (7 * i + 3) % n_layers, (5 * i + 1) % n_heads
        latencies.append(page.evaluate(CLICK_JS, f"L{layer}H{head}"))
        time.sleep(0.05)
    paused = []
    for i in range(args.pauses):
        time.sleep(args.pause_s)
        layer, head = (5 * i + 2) % n_layers, (3 * i + 2) % n_heads
        paused.append(page.evaluate(CLICK_JS, f"L{layer}H{head}"))
    server_path = root / f"server-{kind}.json"
    execute(page, SERVER_MS.format(path=str(server_path)))
    fwd_path = root / f"forward-{kind}.json"
    execute(page, FORWARD.format(prompt=args.prompt, path=str(fwd_path)), timeout=300_000)
    fwd = json.loads(fwd_path.read_text())
    server = [x for x in json.loads(server_path.read_text()) if x is not None]
    render = page.evaluate("() => Number(document.querySelector('.nbx-explorer').dataset.renderMs)")
    shutdown_kernel(page)
    page.close()
    med = statistics.median(latencies)
    return {"model": description, "threads": fwd["threads"], "tokens": fwd["n_tokens"],
            "params_M": fwd["n_params"] / 1e6, "clicks": len(latencies), "median_ms": med,
            "p90_ms": percentile(latencies, 0.9), "pauses": len(paused),
            "pause_median_ms": statistics.median(paused) if paused else None,
            "pause_p90_ms": percentile(paused, 0.9) if paused else None,
            "n_layers": n_layers, "n_heads": n_heads,
            "server_median_ms": statistics.median(server),
            "forward_ms": fwd["forward_ms"], "ratio": med / fwd["forward_ms"],
            "render_ms": render}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--models", default="embedded,gpt2-small")
    parser.add_argument("--model", action="append", default=[],
                        help="a model folder or name for nbtools.load (repeatable; replaces "
                             "--models)")
    parser.add_argument("--prompt", default=PROMPT, help="the Explorer's prompt")
    parser.add_argument("--pauses", type=int, default=8, help="clicks after a pause")
    parser.add_argument("--pause-s", type=float, default=2.0, help="seconds of each pause")
    parser.add_argument("--no-static", action="store_true",
                        help="turn the static PNG fallback off (a control for the pauses)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the Explorer's worker (default: its own choice)")
    args = parser.parse_args(argv)
    exe = chromium_path()
    if exe is None:
        raise SystemExit("Chromium not found: apt-get install -y chromium")
    load = os.getloadavg()
    print(f"cores: {os.cpu_count()}, load average: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        work, root = Path(tmp) / "models", Path(tmp) / "lab"
        root.mkdir()
        rows = []
        with jupyter_server(root) as url, chromium(exe) as browser:
            kinds = [f"load:{m}" for m in args.model] or args.models.split(",")
            for kind in kinds:
                rows.append(bench(kind.strip(), args, work, browser, url, root))
                r = rows[-1]
                print(f"\n{r['model']} ({r['n_layers']}×{r['n_heads']}, {r['params_M']:.1f}M "
                      f"params, {r['tokens']} tokens, worker threads {r['threads']}, "
                      f"{r['clicks']} clicks)")
                print(f"  click → updated panels: median {r['median_ms']:.1f} ms, "
                      f"p90 {r['p90_ms']:.1f} ms")
                if r["pauses"]:
                    print(f"  click {args.pause_s:g} s after the last result ({r['pauses']}): "
                          f"median {r['pause_median_ms']:.1f} ms, p90 {r['pause_p90_ms']:.1f} ms"
                          f" → {r['pause_median_ms'] / r['median_ms']:.2f}× an immediate click")
                print(f"  kernel-side measurement: median {r['server_median_ms']:.1f} ms; "
                      f"browser render of the last view {r['render_ms']:.1f} ms")
                print(f"  one plain forward: {r['forward_ms']:.1f} ms → click/forward ratio "
                      f"{r['ratio']:.2f}")
    print("\n" + json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
