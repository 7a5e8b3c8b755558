"""The `nbtools` command line, run as a subprocess end to end.

Uses the embedded tiny model when it is installed, else a random GPT-2 saved to a temporary
folder (loaded with --model PATH) and a corpus of its word tokens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import word_tokenizer
from reference import make_gpt2

import nbtools
from nbtools.cli import main
from nbtools.sweeps import load_result, sweep_heads

EMBEDDED = Path(nbtools.__file__).parent / "embedded" / "tiny" / "model.safetensors"


def _command() -> list[str]:
    script = Path(sys.executable).parent / "nbtools"
    if script.exists():
        return [str(script)]
    found = shutil.which("nbtools")
    return [found] if found else [sys.executable, "-m", "nbtools.cli"]


def run(*args, check=True, timeout=300, warnings="ignore") -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": warnings}
    proc = subprocess.run([*_command(), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model argument, corpus arguments, prompts argument, folder)."""
    folder = tmp_path_factory.mktemp("cli")
    if EMBEDDED.exists():
        return "tiny", ["nltk:inaugural"], None, folder
    model_dir = folder / "model"
    make_gpt2().save_pretrained(model_dir)
    word_tokenizer().save_pretrained(model_dir)
    words = [f"w{(i * 37) % 509 + 1}" for i in range(1200)]
    (folder / "corpus.txt").write_text(" ".join(words))
    (folder / "prompts.txt").write_text(
        "\n".join(" ".join(words[i:i + 5 + i % 3]) for i in range(0, 60, 3)))
    return str(model_dir), [str(folder / "corpus.txt")], str(folder / "prompts.txt"), folder


def heads_args(setup, out):
    model, corpus, _, _ = setup
    return ["sweep", "heads", "--model", model, "--corpus", *corpus, "--rows", "12", "--row-len",
            "16", "--batch-rows", "2", "--heads", "1.*,2.0", "--per-token", "1.1",
            "--anti-erasure", "2.0", "--top-frac", "0.05", "--checkpoint-every", "0", "--out",
            out, "--no-progress"]


def in_process(capsys, *args) -> tuple[int, str, str]:
    """Run `nbtools.cli.main` here (same code as the console script; cheaper than a process)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_is_readable(capsys):
    out = run("--help").stdout          # the real console script
    assert "sweep" in out and "figures" in out and "train-tiny" in out
    code, heads, _ = in_process(capsys, "sweep", "heads", "--help")
    assert code == 0
    for flag in ("--corpus", "--method", "--top-frac", "--per-token", "--anti-erasure",
                 "--batch-rows", "--out", "--remote"):
        assert flag in heads
    assert "--n-sources" in in_process(capsys, "sweep", "layers", "--help")[1]
    assert "--out" in in_process(capsys, "train-tiny", "--help")[1]


@pytest.mark.parametrize("args,message", [
    (["sweep", "heads", "--rows", "0", "--out", "x"], "positive integer"),
    (["sweep", "heads", "--method", "nope", "--out", "x"], "invalid choice"),
    (["sweep", "heads", "--top-frac", "2", "--out", "x"], "(0, 1]"),
    (["sweep", "heads"], "required: --out"),
    (["sweep"], "choose heads or layers"),
    (["figures", "missing.safetensors", "--out", "d"], "no result file"),
    (["sweep", "heads", "--corpus", "no/such/file.txt", "--out", "x"], "no such file"),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, args, message):
    code, _, err = in_process(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_bad_argument_from_the_console_script():
    proc = run("sweep", "heads", "--rows", "0", "--out", "x", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_values_found_after_loading_the_model(capsys, setup, tmp_path):
    model, corpus, prompts, _ = setup
    code, _, err = in_process(capsys, "sweep", "heads", "--model", model, "--corpus", *corpus,
                              "--heads", "99.0", "--out", tmp_path / "x.safetensors",
                              "--no-progress")
    assert code == 2 and "out of range" in err and len(err.strip().splitlines()) == 1
    code, _, err = in_process(capsys, "sweep", "layers", "--model", model, "--n-sources", "500",
                              *(["--prompts", prompts] if prompts else []),
                              "--out", tmp_path / "y.safetensors", "--no-progress")
    assert code == 2 and "needs at least 501 prompts" in err
    code, _, err = in_process(capsys, "sweep", "heads", "--model", str(tmp_path / "nothing"),
                              "--out", tmp_path / "z.safetensors", "--no-progress")
    assert code == 2 and "cannot load" in err and len(err.strip().splitlines()) == 1


# The CLI's own entry point with every batch slowed down, so that a signal sent after the first
# checkpoint lands in the middle of the sweep however fast the machine is. Ctrl-C raises
# KeyboardInterrupt as in a terminal, also when the suite was started in the background (a
# background job of a non-interactive shell inherits SIGINT ignored).
SLOW_CLI = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from nbtools import cli
from nbtools.lab import Lab
measure_many = Lab.measure_many
def slow(self, *args, **kwargs):
    time.sleep(0.2)
    return measure_many(self, *args, **kwargs)
Lab.measure_many = slow
sys.exit(cli.main(sys.argv[1:]))
"""


def test_end_to_end_interrupted_resumed_and_figures(capsys, setup):
    """Ctrl-C, then SIGTERM (a batch scheduler, `kill`), then a hard kill, then completion:
    the file equals an uninterrupted run's."""
    model, corpus, prompts, folder = setup
    out = folder / "heads.safetensors"
    cmd = [sys.executable, "-c", SLOW_CLI, *map(str, heads_args(setup, out))]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        before = out.stat().st_mtime_ns if out.exists() else None
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and out.stat().st_mtime_ns != before:
                break  # a checkpoint was written
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        if sig == signal.SIGINT:
            assert proc.returncode == 130, err
            assert "interrupted" in err and "rerun the same command to resume" in err
        elif sig == signal.SIGTERM:  # handled as Ctrl-C: a checkpoint and a message
            assert proc.returncode == 143, err
            assert "terminated (SIGTERM)" in err and "rerun the same command to resume" in err
        else:
            assert proc.returncode == -signal.SIGKILL
        partial = load_result(out)
        assert not partial.complete and 0 < partial.progress["rows_done"] < 12
    done = run(*heads_args(setup, out))
    assert "complete" in done.stdout
    # an uninterrupted in-process run with the same settings writes the same bytes
    lab = nbtools.load(model)
    reference = folder / "reference.safetensors"
    sweep_heads(lab, corpus if model != "tiny" else corpus[0], n_rows=12, row_len=16,
                batch_rows=2, heads="1.*,2.0", per_token="1.1", anti_erasure="2.0",
                top_frac=0.05, out=reference, progress=False)
    assert reference.read_bytes() == out.read_bytes()

    layers = folder / "layers.safetensors"
    code = main(["sweep", "layers", "--model", model, *(["--prompts", prompts] if prompts else []),
                 "--n-prompts", "12", "--n-sources", "3", "--batch-prompts", "6", "--kinds", "attn",
                 "--scales", "clean", "--out", str(layers), "--no-progress"])
    res = load_result(layers)
    assert code == 0 and res.complete and res.settings["n_sources"] == 3
    assert res.settings["n_prompts"] == 12

    assert main(["show", str(out)]) == 0 and main(["show", str(layers)]) == 0
    shown = capsys.readouterr().out
    assert "HeadSweepResult" in shown and "largest |SR|" in shown and "CE ~ Δunembed" in shown

    figs = folder / "figs"
    run("figures", out, layers, "--out", figs, "--formats", "png,svg", "--dpi", "40")
    pngs = sorted(figs.glob("*.png"))
    assert len(pngs) >= 12 and len(list(figs.glob("*.svg"))) == len(pngs)
    from PIL import Image

    meta = json.loads(Image.open(figs / "0_rn_fig1_self_repair_vs_depth.png")
                      .text["nbtools:settings"])
    assert meta["method"] == "resample" and meta["top_frac"] == 0.05


def test_bad_input_through_the_console_script(setup, tmp_path):
    """Issue 15: one line, exit 2, no traceback, for what used to crash or mislead."""
    model, corpus, prompts, _ = setup
    out = tmp_path / "h.safetensors"
    small = ["--model", model, "--corpus", *corpus, "--rows", "4", "--row-len", "16",
             "--heads", "1.0", "--no-progress"]
    cases = [
        (["sweep", "heads", "--device", "bogus", "--out", out, *small],
         "unknown device 'bogus'; use 'cpu', 'cuda'"),
        (["sweep", "heads", *small, "--out", tmp_path], "is a folder; give a result file name"),
    ]
    (tmp_path / "notes.txt").write_text("notes")
    cases.append((["sweep", "heads", *small, "--out", tmp_path / "notes.txt"],
                  "overwrite=True / --overwrite to replace it"))
    for args, message in cases:
        proc = run(*args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
    run("sweep", "heads", *small, "--out", out)
    proc = run("sweep", "heads", *[a if a != "4" else "3" for a in small], "--out", out,
               check=False)  # resumed with other --rows: a short diff
    assert proc.returncode == 2 and "n_rows: 4 → 3" in proc.stderr, proc.stderr
    assert len(proc.stderr) < 500, proc.stderr
    (tmp_path / "afile").write_text("")
    proc = run("figures", out, "--out", tmp_path / "afile", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is a file; give a folder for the figures" in proc.stderr
    # a head subset draws its figures without numpy's "Mean of empty slice" warning
    proc = run("figures", out, "--out", tmp_path / "figs", "--formats", "png", "--dpi", "20",
               warnings="default")
    assert "Mean of empty slice" not in proc.stderr and "RuntimeWarning" not in proc.stderr


def test_show_prints_a_dash_where_there_is_no_fit(setup, tmp_path, capsys):
    model, _, prompts, _ = setup
    out = tmp_path / "l.safetensors"
    assert main(["sweep", "layers", "--model", model, *(["--prompts", prompts] if prompts else []),
                 "--n-prompts", "6", "--n-sources", "2", "--kinds", "mlp", "--scales", "clean",
                 "--examples", "0", "--out", str(out), "--no-progress"]) == 0
    shown = run("show", out).stdout
    table = shown.split("mlp layers")[1].splitlines()
    last = [line.split() for line in table if line.split() and line.split()[0].isdigit()][-1]
    assert "nan" not in shown and last[1:] == ["—", "—"], shown


@pytest.mark.skipif(not EMBEDDED.exists(), reason="needs the embedded model")
def test_embedded_name_in_any_case_from_the_cli(tmp_path):
    proc = run("sweep", "heads", "--model", "Tiny", "--corpus", "nltk:inaugural", "--rows", "2",
               "--row-len", "8", "--heads", "0.0", "--out", tmp_path / "t.safetensors",
               "--no-progress")
    assert "HeadSweepResult(tiny" in proc.stdout
