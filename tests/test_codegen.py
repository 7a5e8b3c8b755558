"""Explorer → code: the generated cell, run in a fresh interpreter, gives the Explorer's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nbtools
from nbtools.widgets import Explorer
from nbtools.widgets.codegen import explorer_code, model_source

EMBEDDED = Path(nbtools.__file__).parent / "embedded" / "tiny" / "model.safetensors"
PROMPT = "The Eiffel Tower is located in the city of"
SOURCE = "The ancient Colosseum is located in the city of Rome"
pytestmark = pytest.mark.skipif(not EMBEDDED.exists(), reason="the embedded model is not installed")

DUMP = """
import json as _json
_out = {"delta_logit": m.delta_logit.tolist(), "self_repair": m.self_repair.tolist(),
        "head_delta_de": m.head_delta_de.tolist(), "sr_ln": m.sr_ln.tolist(),
        "target": m.target_ids.tolist(), "grid": view["grid"], "logit": view["logit"],
        "waterfall": view["waterfall"], "topk": view["topk"], "axes": len(fig.axes),
        "sweep": sweep if "sweep" in dir() else None, "settings": m.settings}
print("RESULT" + _json.dumps(_out))
"""


def _run_fresh(code: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "MPLBACKEND": "Agg", "PYTHONPATH": str(Path(nbtools.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", code + DUMP], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def lab():
    return nbtools.load("tiny")


def _close(a, b, tol=1e-5):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k], tol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y, tol)
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, abs=tol)
    else:
        assert a == b


@pytest.mark.parametrize("case", ["resample_custom_target", "clean_sr", "mean_measured",
                                  "logit_difference"])
def test_generated_code_reproduces_the_explorer(lab, case):
    kw = {"resample_custom_target": dict(ablate=["3.1", "mlp2"], method="resample",
                                         source=SOURCE, target=" the", scale="recomputed"),
          "clean_sr": dict(color_by="sr", position=6, target="next"),
          "mean_measured": dict(ablate="attn4", method="mean", positions="measured",
                                color_by="delta"),
          "logit_difference": dict(ablate="4.3", target=(" the", " a"))}[case]
    ex = Explorer(lab, prompt=PROMPT, static_fallback=False, **kw)
    try:
        ex.wait()
        if case == "clean_sr":
            ex.wait()  # the sweep
            assert ex.sweep.get("done") == lab.n_layers
        assert not ex.error, ex.error
        code = ex.to_code()
        view, sweep, m = ex.view, ex.sweep, ex.measurement
    finally:
        ex.close()
    compile(code, "<explorer cell>", "exec")
    assert "nbtools.load('tiny', dtype='float32')" in code
    for setting in ("method=", "measure_at=", "positions=", "scale=", "fold_value_biases=True",
                    "centred=True", "target="):
        assert setting in code
    got = _run_fresh(code)
    _close(got["grid"], view["grid"])
    _close(got["logit"], view["logit"])
    _close(got["topk"], view["topk"])
    assert got["axes"] >= 8
    if m is not None:
        _close(got["delta_logit"], m.delta_logit.tolist())
        _close(got["self_repair"], m.self_repair.tolist())
        _close(got["head_delta_de"], m.head_delta_de.tolist())
        _close(got["waterfall"], view["waterfall"])
        for key in ("method", "sources", "positions", "target", "scale", "dtype",
                    "fold_value_biases"):
            assert got["settings"][key] == m.settings[key], key
    if case == "clean_sr":
        _close(got["sweep"], {"heads": sweep["heads"], "mlp": sweep["mlp"]})
        assert "sweep_grid" in code and "lab.measure_clean(" in code
    if case == "logit_difference":  # one projection onto u_a − u_b
        ids = tuple(lab.tokenizer.convert_tokens_to_ids(lab.tokenizer.tokenize(t))[0]
                    for t in (" the", " a"))
        assert f"target={ids!r}," in code and code.count("lab.measure(") == 1
    if case == "resample_custom_target":
        assert f"sources=[{SOURCE!r}]" in code and "# target token ' the'" in code


def test_explorer_code_is_pure_text():
    code = explorer_code("some/folder", "a b", ["L0H1"], dict(
        method="zero", target="top", measure_at=[1], positions="all", scale="clean"),
        name="mine", dtype="bfloat16", n_layers=2, n_heads=2)
    assert "nbtools.load('some/folder', name='mine', dtype='bfloat16')" in code
    compile(code, "<cell>", "exec")


def test_model_source(lab, tmp_path):
    assert model_source(lab) == ("tiny", None)
    other = nbtools.load(str(EMBEDDED.parent), name="renamed")
    assert model_source(other) == (str(EMBEDDED.parent), "renamed")


def test_code_button_message_replies_with_the_cell(lab):
    ex = Explorer(lab, prompt=PROMPT, ablate="2.3", static_fallback=False)
    sent = []
    ex.send = lambda content, buffers=None: sent.append(content)
    try:
        ex.wait()
        ex._on_custom_msg(ex, {"type": "code"}, [])
    finally:
        ex.close()
    assert sent == [{"type": "code", "code": ex.to_code()}]
    assert "['L2H3']" in sent[0]["code"]
