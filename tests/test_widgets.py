"""Python side of the widgets: traits, validation, callbacks, the worker, the Explorer's state
machine and its numbers (checked against direct `Lab.measure` calls). No browser needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import warnings

import numpy as np
import pytest
import torch
import traitlets
from conftest import make_lab

import nbtools
from nbtools.errors import InvalidInputError
from nbtools.widgets import (
    Explorer,
    HeadGrid,
    LatestWins,
    LayerCurve,
    NeuronTable,
    NormGauge,
    TargetLogit,
    TokenStrip,
    TopKPredictions,
    Waterfall,
    panels,
)
from nbtools.widgets.base import CSS, ESM, STATIC
from nbtools.widgets.export import FORMATS, figure_bytes, view_figure
from nbtools.widgets.fallback import StaticRenderer
from nbtools.widgets.inputs import ExplorerInputs

PROMPT = "w5 w17 w301 w44 w9 w120 w77 w3"
KW = dict(neurons=True, logprobs=True, top_k=10)


@pytest.fixture(scope="module")
def lab():
    return make_lab("gpt2")


@pytest.fixture(scope="module")
def measurement(lab):
    return lab.measure(PROMPT, ["2.1", "mlp1"], target="top", measure_at=[7], **KW)


@pytest.fixture
def explorer(lab):
    ex = Explorer(lab, prompt=PROMPT, static_fallback=False)
    yield ex
    ex.close()


# --- the worker ------------------------------------------------------------------------------

def test_worker_latest_wins_runs_first_and_last_of_a_burst():
    ran, gate = [], threading.Event()
    w = LatestWins()
    w.submit("measure", lambda: (gate.wait(5), ran.append(0)))
    time.sleep(0.05)  # job 0 is running and blocked
    for i in range(1, 101):
        w.submit("measure", lambda i=i: ran.append(i))
    gate.set()
    assert w.wait(5)
    assert ran == [0, 100]
    w.close()


def test_worker_priorities_delays_and_errors():
    order, errors = [], []
    w = LatestWins(on_error=lambda kind, exc, text: errors.append((kind, str(exc))))
    gate = threading.Event()
    w.submit("block", lambda: gate.wait(5))
    time.sleep(0.05)
    w.submit("static", lambda: order.append("static"), priority=3)
    w.submit("sweep", lambda: order.append("sweep"), priority=2)
    w.submit("measure", lambda: order.append("measure"), priority=0)
    w.submit("later", lambda: order.append("later"), priority=0, delay=0.3)
    w.submit("boom", lambda: 1 / 0, priority=1)
    gate.set()
    assert w.wait(5)
    assert order == ["measure", "sweep", "static", "later"]
    assert errors == [("boom", "division by zero")]
    w.submit("after", lambda: order.append("after"))  # the thread survived the error
    assert w.wait(5) and order[-1] == "after"
    w.close()
    with pytest.raises(RuntimeError):
        w.submit("x", lambda: None)


def test_worker_wait_timeout_cancel_and_active():
    w = LatestWins()
    gate = threading.Event()
    w.submit("a", lambda: gate.wait(5))
    w.submit("b", lambda: None, delay=60)
    time.sleep(0.05)
    assert w.active() == {"a", "b"}
    assert not w.wait(0.1, kinds=["a"])
    w.cancel("b")
    gate.set()
    assert w.wait(5) and w.active() == set()
    w.close()


# --- panel data ------------------------------------------------------------------------------

def test_waterfall_adds_up_to_delta_logit(measurement):
    wf = panels.waterfall_data(measurement)
    steps = {s["key"]: s["value"] for s in wf["steps"]}
    parts = steps["de_lost"] + steps["sr_heads"] + steps["sr_mlp"] + steps["sr_ln"]
    assert parts == pytest.approx(steps["delta_logit"], abs=1e-9)
    assert steps["delta_logit"] == pytest.approx(float(measurement.delta_logit[0]))
    assert wf["steps"][-1]["total"] and not wf["steps"][0]["total"]


def test_panel_data_matches_measurement(measurement, lab):
    m = measurement
    g = panels.grid_data(m)
    assert np.allclose(g["de"], m.head_de_clean[0].numpy())
    assert np.allclose(g["delta"], m.head_delta_de[0].numpy())
    assert np.allclose(g["mlp_delta"], m.mlp_delta_de[0].numpy())
    gauge = panels.gauge_data(m)
    assert gauge["ratio"] == pytest.approx(float(m.scale_ratio[0]))
    assert gauge["sr_ln"] == pytest.approx(gauge["sr_ln_closed"], abs=1e-5)  # fp32 identity (SPEC T2: 1e-4)
    lg = panels.logit_data(m)
    assert lg["p_clean"] == pytest.approx(float(m.logprob_clean[0].exp()))
    layers = panels.layer_data(m)
    assert layers["marked_attn"] == [2] and layers["marked_mlp"] == [1]
    neurons = panels.neuron_data(m, k=5)
    clean, delta = m.neuron_de_clean[0].numpy(), m.neuron_delta_de[0].numpy()
    ae = (clean < 0) & (delta > 0)
    ranked = sorted(zip(*np.nonzero(ae), strict=True), key=lambda ln: -delta[ln])[:5]
    assert [(r["layer"], r["neuron"]) for r in neurons["rows"]] == [tuple(map(int, x)) for x in ranked]
    assert all(r["anti_erasure"] and r["de_clean"] < 0 < r["delta_de"] for r in neurons["rows"])
    assert neurons["n_ae"] == int(ae.sum())
    assert neurons["ae_sum"] == pytest.approx(float(delta[ae].sum()), abs=1e-9)
    assert neurons["top_sum"] == pytest.approx(sum(r["delta_de"] for r in neurons["rows"]))
    assert neurons["share_top"] == pytest.approx(neurons["top_sum"] / float(m.sr_mlp[0]))
    lowest = np.sort(delta.flatten())[:3]
    assert [r["delta_de"] for r in neurons["negative"]] == pytest.approx(lowest[lowest < 0])
    assert neurons["n_total"] == lab.shape.n_layers * lab.shape.d_mlp
    assert neurons["spark"][0] == pytest.approx(float(m.neuron_delta_de[0].max()))
    assert neurons["spark"][-1] == pytest.approx(float(m.neuron_delta_de[0].min()))
    topk = panels.topk_data(m, lambda i: f"w{i}")
    assert [r["id"] for r in topk["clean"]] == m.topk_ids_clean[0].tolist()
    assert topk["clean"][0]["id"] == topk["target_id"]  # target="top"


def test_headline_numbers_and_de_wording(measurement):
    m = measurement
    hl = panels.headline_data(m)
    assert hl["sr"] == pytest.approx(float(m.self_repair[0]))
    assert hl["de"] == pytest.approx(float(m.direct_effect[0]))
    assert hl["sr_share"] == pytest.approx(float(m.self_repair[0] / m.direct_effect[0]))
    assert hl["sr_prime"] == pytest.approx(float(m.delta_logit[0] + m.direct_effect[0]))
    assert hl["sr_prime_share"] == pytest.approx(hl["sr_prime"] / hl["de"])
    assert panels.de_change_label(-0.5, 0.6) == "direct effect lost"
    assert panels.de_change_label(0.597, -0.597) == "negative DE removed"
    assert panels.de_change_label(0.2, 0.1) == "direct effect gained"
    wf = panels.waterfall_data(m)
    change = float(m.direct_effect_ablated[0] - m.direct_effect[0])
    assert wf["steps"][0]["label"] == panels.de_change_label(change, float(m.direct_effect[0]))


def test_nums_makes_json_safe():
    assert panels.nums(torch.tensor([1.0, float("nan"), float("inf")])) == [1.0, None, None]


# --- standalone widgets ----------------------------------------------------------------------

def test_headgrid_accepts_arrays_and_validates():
    grid = HeadGrid(values=torch.randn(3, 4), mlp=np.zeros(3))
    assert grid.shape == (3, 4) and grid.mlp == [0.0, 0.0, 0.0]
    with pytest.raises(traitlets.TraitError, match="different lengths"):
        HeadGrid(values=[[1, 2], [3]])
    with pytest.raises(traitlets.TraitError, match="finite"):
        HeadGrid(values=[[1.0, float("nan")]])
    with pytest.raises(traitlets.TraitError, match="non-empty"):
        HeadGrid(values=[])
    with pytest.raises(traitlets.TraitError, match="one per layer"):
        HeadGrid(values=np.ones((3, 4)), mlp=[1, 2])
    with pytest.raises(traitlets.TraitError, match="positive"):
        HeadGrid(values=np.ones((3, 4)), vmax=-1)
    with pytest.raises(traitlets.TraitError, match="out of range"):
        HeadGrid(values=np.ones((3, 4)), selected=["L3H0"])
    with pytest.raises(traitlets.TraitError, match="no MLP column"):
        HeadGrid(values=np.ones((3, 4)), selected=["mlp1"])
    with pytest.raises(traitlets.TraitError, match="not a grid cell"):
        HeadGrid(values=np.ones((3, 4)), selected=["head 1"])


def test_headgrid_clicks_follow_the_explorer_rule():
    events = []
    grid = HeadGrid(values=np.ones((3, 4)), mlp=np.ones(3), on_click=events.append)
    grid.click("L1H2")
    assert grid.selected == ["L1H2"]
    grid.click("mlp0", additive=True)
    assert grid.selected == ["L1H2", "mlp0"]
    grid.click("L1H2", additive=True)
    assert grid.selected == ["mlp0"]
    grid.click("mlp0")  # the only selection: a plain click clears it
    assert grid.selected == []
    # messages from the browser go through the same path; stale names are ignored
    grid._on_custom_msg(grid, {"type": "click", "name": "attn2", "additive": False}, [])
    grid._on_custom_msg(grid, {"type": "click", "name": "L9H9"}, [])
    assert grid.selected == ["attn2"]
    assert events[-1] == {"name": "attn2", "kind": "attn", "layer": 2, "head": None,
                          "additive": False, "selected": ["attn2"]}
    assert len(events) == 5
    grid.on_click(events.append, remove=True)
    grid.click("L0H0")
    assert len(events) == 5
    passive = HeadGrid(values=np.ones((2, 2)), selectable=False)
    passive.click("L0H1")
    assert passive.selected == []


def test_tokenstrip():
    events = []
    strip = TokenStrip(["The", " cat"], on_click=events.append)
    assert strip.selected == -1
    strip._on_custom_msg(strip, {"type": "click", "position": 1}, [])
    assert strip.selected == 1 and events == [{"position": 1, "token": " cat"}]
    with pytest.raises(traitlets.TraitError, match="out of range"):
        strip.selected = 2
    strip._on_custom_msg(strip, {"type": "click", "position": 7}, [])  # ignored
    assert strip.selected == 1


def test_panel_widgets_from_measurement(measurement, lab):
    m = measurement
    assert Waterfall.from_measurement(m).data == panels.waterfall_data(m)
    assert NormGauge.from_measurement(m).data == panels.gauge_data(m)
    assert NeuronTable.from_measurement(m).data == panels.neuron_data(m)
    assert LayerCurve.from_measurement(m).data == panels.layer_data(m)
    assert TargetLogit.from_measurement(m).data == panels.logit_data(m)
    topk = TopKPredictions.from_measurement(m, tokenizer=lab.tokenizer)
    assert topk.data["clean"][0]["token"] == lab.tokenizer.decode([int(m.topk_ids_clean[0, 0])])
    w = Waterfall(de_lost=0, sr_heads=0, sr_mlp=0, sr_ln=0)
    w.show(m)
    assert w.data == panels.waterfall_data(m)


def test_panel_widgets_validate():
    wf = Waterfall(de_lost=-1.0, sr_heads=0.25, sr_mlp=0.5, sr_ln=0.125)
    assert wf.data["steps"][-1]["value"] == -0.125
    with pytest.raises(traitlets.TraitError, match="de_lost"):
        Waterfall(de_lost="a lot")
    with pytest.raises(traitlets.TraitError, match="positive"):
        NormGauge(s_clean=1.0, s_ablated=0.0)
    assert NormGauge(s_clean=2.0, s_ablated=1.0).data["ratio"] == 2.0
    with pytest.raises(traitlets.TraitError, match=r"\[0, 1\]"):
        TargetLogit(token="x", clean=1, ablated=0, p_clean=1.5)
    with pytest.raises(traitlets.TraitError, match="needs layer"):
        NeuronTable(rows=[{"layer": 1}])
    table = NeuronTable(rows=[{"layer": 1, "neuron": 2, "de_clean": -0.5, "de_ablated": -0.1}],
                        distribution=[0.1, 0.4, -0.2])
    assert table.data["rows"][0]["anti_erasure"] and table.data["spark"] == [0.4, 0.1, -0.2]
    with pytest.raises(traitlets.TraitError, match="out of range"):
        LayerCurve(attn_clean=[1, 2], attn_ablated=[1, 2], marked_attn=[5])
    with pytest.raises(traitlets.TraitError, match="one per layer"):
        LayerCurve(attn_clean=[1, 2], attn_ablated=[1])
    with pytest.raises(traitlets.TraitError, match="outside"):
        TopKPredictions(clean=[("a", 2.0)])
    top = TopKPredictions(clean=[("a", 0.5), ("b", 0.2)], ablated=[("b", 0.4)], target="b")
    assert top.data["target_id"] == top.data["ablated"][0]["id"]


# --- the Explorer ----------------------------------------------------------------------------

def _direct(lab, state_ablation, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lab.measure(PROMPT, state_ablation, **KW, **kw)


def test_explorer_validates_before_any_forward_pass(lab):
    with pytest.raises(InvalidInputError, match="the prompt is empty"):
        Explorer(lab, prompt="")
    with pytest.raises(InvalidInputError, match="out of range"):
        Explorer(lab, prompt=PROMPT, ablate="9.0")
    with pytest.raises(InvalidInputError, match="out of range"):
        Explorer(lab, prompt=PROMPT, position=8)
    with pytest.raises(InvalidInputError, match="no next token"):
        Explorer(lab, prompt=PROMPT, target="next")
    with pytest.raises(InvalidInputError, match="2 tokens"):
        Explorer(lab, prompt=PROMPT, target="w1 w2")
    with pytest.raises(InvalidInputError, match="method"):
        Explorer(lab, prompt=PROMPT, method="gaussian")
    with pytest.raises(InvalidInputError, match="needs source"):
        Explorer(lab, prompt=PROMPT, method="resample")
    with pytest.raises(InvalidInputError, match="threads"):
        Explorer(lab, prompt=PROMPT, threads=0)


def test_explorer_default_model_is_the_embedded_one(monkeypatch, lab):
    seen = []

    def fake_load(model="tiny", **kwargs):
        seen.append(model)
        return lab

    monkeypatch.setattr(nbtools.loading, "load", fake_load)
    ex = Explorer(prompt=PROMPT, static_fallback=False)
    ex.close()
    assert seen == ["tiny"] and ex.lab is lab


def test_explorer_clean_view_then_ablation_matches_lab_measure(explorer, lab):
    ex = explorer.wait()
    assert ex.error == "" and ex.measurement is None and ex.view["clean_only"]
    assert ex.tokens == lab.to_str_tokens(PROMPT) and ex.view["position"] == 7
    ref = _direct(lab, "0.1", target="top", measure_at=[7])
    assert ex.view["logit"]["clean"] == pytest.approx(float(ref.logit_clean[0]), abs=1e-9)
    assert ex.view["logit"]["delta"] == 0.0
    assert np.allclose(ex.view["grid"]["de"], ref.head_de_clean[0].numpy())

    ex.ablate("2.1", "mlp1").wait()
    ref = _direct(lab, ["2.1", "mlp1"], target="top", measure_at=[7])
    m = ex.measurement
    assert m is not None and ex.view["ablated_ui"] == ["L2H1", "mlp1"]
    for name in ("delta_logit", "self_repair", "sr_heads", "sr_mlp", "sr_ln", "logit_ablated"):
        assert float(getattr(m, name)[0]) == pytest.approx(float(getattr(ref, name)[0]), abs=1e-9)
    assert ex.view["logit"]["ablated"] == pytest.approx(float(ref.logit_ablated[0]), abs=1e-9)
    assert ex.view["gauge"]["s_ablated"] == pytest.approx(float(ref.scale_ablated[0]), abs=1e-9)
    assert ex.view["seq"] == ex.request_seq == ex.done_seq
    assert not ex.busy


def test_explorer_options_reach_lab_measure(explorer, lab):
    ex = explorer.wait()
    ex.select(3)
    ex.set_target("next")
    ex.method, ex.scale, ex.positions = "mean", "recomputed", "measured"
    ex.ablate("attn1").wait()
    ref = _direct(lab, "attn1", target="next", measure_at=[3], method="mean",
                  scale="recomputed", positions=[3])
    assert ex.error == ""
    assert ex.view["logit"]["id"] == lab.tokenize(PROMPT).input_ids[0, 4].item()
    assert float(ex.measurement.self_repair[0]) == pytest.approx(float(ref.self_repair[0]), abs=1e-9)
    ex.method = "resample"
    ex.wait()
    assert "source prompt" in ex.error  # shown in the widget, nothing raised
    ex.source = "w9 w8 w7 w6 w5 w4 w3 w2"
    ex.wait()
    ref = _direct(lab, "attn1", target="next", measure_at=[3], method="resample",
                  sources=["w9 w8 w7 w6 w5 w4 w3 w2"], scale="recomputed", positions=[3])
    assert ex.error == ""
    assert float(ex.measurement.delta_logit[0]) == pytest.approx(float(ref.delta_logit[0]), abs=1e-9)
    ex.set_target("w42")
    ex.wait()
    assert ex.view["logit"]["id"] == 42 and ex.state["target_mode"] == "custom"


def test_explorer_errors_from_the_browser_land_in_the_widget(explorer):
    ex = explorer.wait()
    ex.ablation = ["bogus"]
    ex.wait()
    assert "cannot read 'bogus'" in ex.error and ex.done_seq == ex.request_seq
    ex.ablation = ["L9H0"]
    ex.wait()
    assert "out of range" in ex.error
    ex.ablation = ["L1H1"]
    ex.wait()
    assert ex.error == ""
    ex.target_mode, ex.position = "next", -1
    ex.wait()
    assert "no next token" in ex.error
    ex.prompt = ""
    ex.wait()
    assert "the prompt is empty" in ex.error and "prompt 0" not in ex.error


def test_explorer_burst_latest_wins(explorer, lab):
    ex = explorer.wait()
    before = ex._worker.completed.get("measure", 0)
    rng = np.random.default_rng(0)
    names = []
    for _ in range(50):  # what 50 browser clicks do: one message each
        name = f"L{rng.integers(4)}H{rng.integers(4)}"
        names = [n for n in names if n != name] if name in names else [*names, name]
        ex.set_state({"ablation": names, "request_seq": ex.request_seq + 1})
    ex.wait()
    ran = ex._worker.completed["measure"] - before
    assert ran < 50, "a burst must not queue stale work"
    assert ex.view["ablated_ui"] == names and ex.view["seq"] == ex.request_seq
    ref = _direct(lab, names, target="top", measure_at=[7])
    assert float(ex.measurement.delta_logit[0]) == pytest.approx(float(ref.delta_logit[0]), abs=1e-9)


def test_explorer_sweep_colours_each_head_by_its_self_repair(explorer, lab):
    ex = explorer.wait()
    ex.color_by = "sr"
    ex.wait()  # one job per layer; clicks can run in between
    assert ex.sweep["key"] == ex.view["key"] and ex.sweep["done"] == lab.n_layers
    ref = _direct(lab, "1.2", target="top", measure_at=[7])
    assert ex.sweep["heads"][1][2] == pytest.approx(float(ref.self_repair[0]), abs=1e-9)
    ref = _direct(lab, "mlp3", target="top", measure_at=[7])
    assert ex.sweep["mlp"][3] == pytest.approx(float(ref.self_repair[0]), abs=1e-9)
    ex.ablate("0.0").wait()  # same key: the cached sweep is kept
    assert ex.sweep["key"] == ex.view["key"]


def test_explorer_export_and_static_fallback(explorer, tmp_path):
    ex = explorer.ablate("1.3").wait()
    sent = []
    ex.send = lambda content, buffers=None: sent.append((content, buffers))
    ex._on_custom_msg(ex, {"type": "export", "format": "svg"}, [])
    ex.wait()
    assert sent[0][0]["filename"] == "nbtools-explorer-L1H3.svg"
    assert sent[0][1][0].lstrip().startswith(b"<?xml")
    ex._on_custom_msg(ex, {"type": "export", "format": "gif"}, [])
    assert "unknown format" in ex.error
    for fmt, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
        path = ex.save(tmp_path / f"view.{fmt}")
        assert open(path, "rb").read().startswith(magic)
    with pytest.raises(ValueError, match="unknown format"):
        ex.save(tmp_path / "view.bmp")

    class Handle:
        def __init__(self):
            self.bundles = []

        def update(self, bundle, raw=False):
            self.bundles.append(bundle)

    assert "text/html" in ex._fallback.bundle()  # placeholder before the first image
    handle = Handle()
    ex._fallback.attach(handle)  # what displaying the Explorer does
    ex.static_fallback, ex._fallback.delay = True, 60.0
    ex.ablate("0.2").wait()  # wait() brings the static image up to date at once
    bundle = handle.bundles[-1]
    assert bundle["image/png"] and "nbtools-static" in bundle["text/html"]
    assert "ablated L0H2" in bundle["text/plain"]
    assert "L0H2" in repr(ex)
    assert ex._fallback.renderer.rendered == 1  # drawn by the child, not the measuring thread
    ex._fallback.close()


def test_static_renderer_draws_in_a_child_and_a_click_pauses_it(explorer):
    """The fallback PNG is drawn by a child process; pause() (what a click does) drops the
    pending drawing and freezes a running one, whose answer is then discarded."""
    ex = explorer.ablate("1.1").wait()
    pngs = []
    r = StaticRenderer(pngs.append)
    payload = {"view": ex.view, "color_by": "de", "sweep": {}, "tokens": ex.tokens, "dpi": 40}
    try:
        r.schedule(payload, 0.0)
        deadline = time.monotonic() + 60
        while not pngs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pngs and pngs[0].startswith(b"\x89PNG")
        r.schedule(payload, 30.0)
        r.pause()  # the pending job is dropped
        assert not r.busy()
        r.schedule(payload, 0.0)
        deadline = time.monotonic() + 5
        while not r._rendering and time.monotonic() < deadline:
            time.sleep(0.001)
        r.pause()  # frozen mid-drawing (or just finished): its answer is not delivered
        time.sleep(0.5)
        assert len(pngs) == 1
        r.schedule({**payload, "dpi": 30}, 0.05)  # resumes the child, then draws this one
        deadline = time.monotonic() + 60
        while len(pngs) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pngs) == 2 and pngs[1] != pngs[0]
    finally:
        r.close()


def test_view_figure_of_every_state(explorer, lab, measurement):
    ex = explorer.wait()
    fig = ex.figure()  # clean-only view
    assert len(fig.axes) >= 6
    view = panels.measurement_view(measurement, lambda i: f"w{i}")
    view.update(ablated_ui=["L2H1", "mlp1"], position=7)
    for mode in ("de", "delta", "sr"):
        assert figure_bytes(view_figure(view, mode), "png").startswith(b"\x89PNG")
    assert set(FORMATS) == {"png", "svg", "pdf", "csv", "json"}


# --- static assets ---------------------------------------------------------------------------

def test_static_assets_are_self_contained():
    assert ESM.count("export default") == 1
    for needle in ("http://", "https://", "import(", "cdn"):
        assert needle not in ESM.replace("http://www.w3.org/2000/svg", ""), needle
    assert ".nbx-explorer" in CSS and ".nbtools-static" in CSS


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_static_module_parses(tmp_path):
    path = tmp_path / "bundle.mjs"
    path.write_text(ESM)
    result = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in STATIC.iterdir()) == ["app.js", "attention.js", "core.js",
                                                         "mapview.js", "panels.js", "widgets.css"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_colour_scales_are_the_same_in_the_browser_and_the_export(tmp_path):
    """The widget's colour map and robust MLP limit (JS) equal the ones the matplotlib export
    uses (Python), so an exported heat map looks like the screen."""
    from nbtools.widgets.export import colormap

    rng = np.random.default_rng(2)
    values = [None, 0.0, 1e-9, -1e-9, 1.0, -1.0, 3.0, -7.5] + rng.normal(0, 2, 60).tolist()
    columns = [[11.0, 0.5, -0.8, 0.3], [1.0, 0.9, -0.95], [0.0, 0.0], [5.0], [None, 2.0, -9.0]]
    script = (STATIC / "core.js").read_text() + (STATIC / "panels.js").read_text() + f"""
const values = {json.dumps(values)};
console.log(JSON.stringify({{rgb: values.map((v) => divergingRGB(v, 2.5)),
                            vmax: {json.dumps(columns)}.map((c) => robustVmax(c))}}));
"""
    path = tmp_path / "colours.mjs"
    path.write_text(script)
    out = json.loads(subprocess.run(["node", str(path)], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["rgb"] == [list(panels.diverging_rgb(v, 2.5)) for v in values]
    assert out["vmax"] == pytest.approx([panels.robust_vmax(c) for c in columns])
    assert panels.robust_vmax([11.0, 0.5, -0.8, 0.3]) == pytest.approx(1.0)  # MLP0 set aside
    cmap = colormap(5)
    assert [round(255 * c) for c in cmap(1.0)[:3]] == list(panels.diverging_rgb(1.0, 1.0))
    assert [round(255 * c) for c in cmap(0.5)[:3]] == [247, 247, 247]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_js_helpers_agree_with_python(tmp_path):
    """The browser's click rule and number formatting, run in node (core.js has no DOM at
    import time): the selection after a click sequence equals `standalone.toggle`'s."""
    from nbtools.widgets.standalone import toggle

    rng = np.random.default_rng(1)
    clicks = [(f"L{rng.integers(3)}H{rng.integers(3)}", bool(rng.integers(2))) for _ in range(200)]
    expected, states = [], []
    for name, additive in clicks:
        expected = toggle(expected, name, additive)
        states.append(expected)
    script = (STATIC / "core.js").read_text() + f"""
const clicks = {json.dumps(clicks)};
let sel = []; const states = [];
for (const [name, additive] of clicks) {{ sel = toggleSelection(sel, name, additive); states.push(sel); }}
console.log(JSON.stringify({{states, f: [fmt(-0.1234), fmt(0.5, 2), fmt(0), fmtP(0.4567), fmtP(2e-6)],
                            t: ticks(-0.03, 0.11, 4)}}));
"""
    path = tmp_path / "check.mjs"
    path.write_text(script)
    out = json.loads(subprocess.run(["node", str(path)], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["states"] == states
    assert out["f"] == ["\u22120.123", "+0.50", "\u00b10.000", "45.7%", "<0.001%"]
    assert out["t"][0] <= 0 <= out["t"][-1] and 0 in out["t"]


def test_target_errors_show_readable_pieces():
    """A multi-token target names its pieces as text (' K' + 'ing'), not byte-level BPE
    symbols ('ĠK'): checked with a real byte-level BPE tokenizer."""
    from pathlib import Path

    from transformers import GPT2TokenizerFast

    folder = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tokenizer-gpt2"
    if not (folder / "vocab.json").is_file():
        pytest.skip("the GPT-2 tokenizer is not in the shared data")
    tok = GPT2TokenizerFast.from_pretrained(folder)

    class FakeLab:  # only what custom_target reads
        tokenizer = tok
        shape = type("S", (), {"d_vocab": len(tok)})()

    inputs = ExplorerInputs(FakeLab())
    assert inputs.custom_target(" Paris") == tok(" Paris")["input_ids"][0]
    assert inputs.custom_target("located") == tok(" located")["input_ids"][0]  # space added
    with pytest.raises(InvalidInputError) as info:
        inputs.custom_target(" Kingsbridgeworth")
    message = str(info.value)
    assert "give a single token" in message and "\u0120" not in message
    assert "' K" in message or "' Kings" in message


def test_explorer_exports_its_numbers_as_csv_and_json(explorer, lab, tmp_path):
    import csv

    ex = explorer.ablate("2.1").wait()
    m = ex.measurement
    rows = list(csv.DictReader(line for line in open(ex.save(tmp_path / "view.csv"))
                               if not line.startswith("#")))
    assert len(rows) == lab.n_layers * (lab.n_heads + 1)
    by_name = {r["component"]: r for r in rows}
    assert float(by_name["L3H0"]["delta_de"]) == pytest.approx(float(m.head_delta_de[0, 3, 0]))
    assert float(by_name["mlp1"]["de_clean"]) == pytest.approx(float(m.mlp_de_clean[0, 1]))
    assert by_name["L2H1"]["ablated"] == "True" and by_name["L2H0"]["ablated"] == "False"
    assert "SR/DE" in open(tmp_path / "view.csv").read()
    data = json.loads(open(ex.save(tmp_path / "view.json")).read())
    assert data["headline"]["sr"] == pytest.approx(float(m.self_repair[0]))
    assert data["ablated_ui"] == ["L2H1"]
    sent = []
    ex.send = lambda content, buffers=None: sent.append((content, buffers))
    ex._on_custom_msg(ex, {"type": "export", "format": "csv"}, [])
    ex.wait()
    assert sent[0][0]["mime"] == "text/csv" and sent[0][1][0].startswith(b"# model")


def test_explorer_undo_and_neuron_ablation(explorer, lab):
    ex = explorer.wait()
    ex.ablate("1.1")
    ex.ablate("2.2", add=True)
    ex.ablation = ["mlp1:3,7"]  # what a click on a neuron row sends
    ex.wait()
    ref = _direct(lab, "mlp1:3,7", target="top", measure_at=[7])
    assert ex.error == "" and ex.view["ablated_ui"] == ["mlp1:3,7"]
    assert float(ex.measurement.delta_logit[0]) == pytest.approx(float(ref.delta_logit[0]), abs=1e-9)
    assert ex.can_undo
    assert ex.undo().state["ablation"] == ["L1H1", "L2H2"]
    ex._on_custom_msg(ex, {"type": "undo"}, [])  # the browser's undo button
    assert ex.state["ablation"] == ["L1H1"]
    assert ex.undo().undo().state["ablation"] == [] and not ex.can_undo
    ex.wait()
    assert ex.view["clean_only"]


def test_explorer_logit_difference_target(lab):
    """target=(a, b): every number is measure(target=a) − measure(target=b) at the same norm
    scales; the clean difference equals the model's own logit difference (centring cancels)."""
    ex = Explorer(lab, prompt=PROMPT, target=("w42", "w17"), ablate="2.1", static_fallback=False)
    try:
        ex.wait()
        assert ex.error == "" and ex.state["target_minus"] == "w17"
        m = ex.measurement
        a = _direct(lab, "2.1", target=42, measure_at=[7])
        b = _direct(lab, "2.1", target=17, measure_at=[7])
        for name in ("logit_clean", "logit_ablated", "delta_logit", "direct_effect",
                     "self_repair", "sr_heads", "sr_mlp", "sr_ln", "self_repair_prime"):
            want = float(getattr(a, name)[0] - getattr(b, name)[0])
            assert float(getattr(m, name)[0]) == pytest.approx(want, abs=1e-9), name
        assert torch.allclose(m.head_delta_de, a.head_delta_de - b.head_delta_de)
        with torch.no_grad():
            logits = lab.hf_model(lab.tokenize(PROMPT).input_ids).logits[0, 7].double()
        assert float(m.logit_clean[0]) == pytest.approx(float(logits[42] - logits[17]), abs=1e-4)
        parts = (m.direct_effect_ablated - m.direct_effect + m.sr_heads + m.sr_mlp + m.sr_ln)
        assert float(parts[0]) == pytest.approx(float(m.delta_logit[0]), abs=1e-9)
        assert ex.view["logit"]["minus"] == lab.tokenizer.decode([17])
        assert float(m.logprob_clean[0]) == pytest.approx(float(a.logprob_clean[0]))
        ex.color_by = "sr"
        ex.wait()
        alone = _direct(lab, "1.2", target=42, measure_at=[7]).self_repair[0] - \
            _direct(lab, "1.2", target=17, measure_at=[7]).self_repair[0]
        assert ex.sweep["heads"][1][2] == pytest.approx(float(alone), abs=1e-9)
        ex.set_target("top")
        ex.wait()
        assert ex.state["target_minus"] == "" and "minus" not in ex.view["logit"]
        with pytest.raises(InvalidInputError, match="pair"):
            ex.set_target(("w1", "w2", "w3"))
    finally:
        ex.close()


def test_explorer_self_repair_at_every_token(explorer, lab):
    ex = explorer.ablate("2.1").wait()
    assert ex.token_sr == {}  # off by default: no extra work per click
    ex.token_colors = True
    ex.wait()
    ref = _direct(lab, "2.1", target="top", measure_at="all")
    assert ex.token_sr["positions"] == list(range(8))
    # float32 sums: a batch of another size may round differently (seen: 3e-6 at |x| ≈ 3)
    assert ex.token_sr["sr"] == pytest.approx(ref.self_repair.tolist(), rel=1e-5, abs=1e-5)
    assert ex.token_sr["sr"][7] == pytest.approx(float(ex.measurement.self_repair[0]), rel=1e-5, abs=1e-5)
    ex.select(3)
    ex.set_target("next")
    ex.ablate("1.0").wait()
    ref = _direct(lab, "1.0", target="next", measure_at="all")
    assert ex.token_sr["positions"] == list(range(7)) and ex.token_sr["ablated"] == ["L1H0"]
    assert ex.token_sr["dl"] == pytest.approx(ref.delta_logit.tolist(), rel=1e-5, abs=1e-5)
    assert ex.token_sr["key"] == ex.view["tokens_key"]


def test_explorer_live_repair_map_equals_lab_measure(explorer, lab):
    ex = explorer
    ex.ablate("1.0").wait()
    ex.show_map()
    ex.wait()
    md = ex.map_data
    L, H = lab.n_layers, lab.n_heads
    assert md["key"] == ex.view["key"] and md["done"] == L and md["source"] == "live"
    assert len(md["rows"]) == L * (H + 1) and len(md["columns"]) == L * (H + 1) + 1
    assert md["columns"][-1] == "LN" and md["rows"][H] == "mlp0"
    for name, comp in (("L1H2", "1.2"), ("L0H0", "0.0"), ("mlp2", "mlp2")):
        r = md["rows"].index(name)
        ref = _direct(lab, comp, target="top", measure_at=[ex.view["position"]])
        row = md["values"][r]
        layer = int(name[1]) if name.startswith("L") else int(name[3])
        for c, col in enumerate(md["columns"]):
            if col == "LN":
                want = float(ref.sr_ln[0])
            elif col.startswith("MLP"):
                want = float(ref.mlp_delta_de[0, int(col[3:])])
            else:
                lc, hc = (int(x) for x in col[1:].split("H"))
                want = float(ref.head_delta_de[0, lc, hc])
            if col.upper() == name.upper():
                assert row[c] is None  # the ablated component itself
            else:
                assert row[c] == pytest.approx(want, abs=1e-9), (name, col)
        # a row sums to its self-repair
        assert sum(v for v in row if v is not None) == pytest.approx(
            float(ref.self_repair[0]), abs=1e-6)
        assert md["row_layers"][r] == layer
    assert ex.sweep["done"] == L  # the map reused the self-repair sweep's measurements
    ex.map_on = False


def test_explorer_live_map_is_sent_at_most_every_map_every_s(lab, monkeypatch):
    """While the sweep fills the map, the whole map is re-sent at most every MAP_EVERY_S
    seconds, and always once it is complete."""
    from nbtools.widgets import explorer as explorer_module

    monkeypatch.setattr(explorer_module, "MAP_EVERY_S", 1e9)
    ex = Explorer(lab, prompt=PROMPT, ablate="1.0", static_fallback=False)
    try:
        ex.wait()
        sent = []
        ex.observe(lambda change: sent.append(change["new"].get("done")), "map_data")
        ex.show_map()
        ex.wait()
        assert sent[-1] == lab.n_layers and len(sent) <= 2  # (one early, one complete)
        assert ex.sweep["done"] == lab.n_layers
    finally:
        ex.close()


def test_explorer_shows_a_saved_repair_map(lab, tmp_path):
    from nbtools.sweeps.repair_map import repair_map

    corpus = torch.randint(1, 512, (3, 8), generator=torch.Generator().manual_seed(3))
    res = repair_map(lab, corpus, rows="0.0,1.2,mlp1", batch_rows=3, top_frac=0.1,
                     progress=False, out=tmp_path / "m.safetensors")
    ex = Explorer(lab, prompt=PROMPT, static_fallback=False, repair_map=res)
    try:
        ex.wait()
        md = ex.map_data
        assert md["source"] == "result" and md["rows"] == ["L0H0", "L1H2", "mlp1"]
        grid = res.map()
        assert md["values"][1][5] == pytest.approx(float(grid[1, 5]), abs=1e-12)
        assert md["values"][0][0] is None  # NaN (own cell) → None
        with pytest.raises(InvalidInputError, match="selection"):
            ex.show_map(res, selection="nope")
        ex.show_map().wait()  # back to the live map of this prompt
        assert ex.map_data["source"] == "live" and ex.map_data["key"] == ex.view["key"]
    finally:
        ex.close()


# --- issue 22: wrong without a word, now a clear answer -----------------------------------
def test_show_map_refuses_another_models_map(lab, tmp_path):
    from nbtools.sweeps import repair_map

    other = make_lab("llama")  # same shape, other weights
    rows = torch.randint(1, 500, (2, 6), generator=torch.Generator().manual_seed(0))
    res = repair_map(other, rows, rows="1.*", progress=False)
    ex = Explorer(lab, prompt=PROMPT, static_fallback=False)
    try:
        with pytest.raises(InvalidInputError, match="measured on 'llama'.*not on this Explorer"):
            ex.show_map(res)
        own = repair_map(lab, rows, rows="1.*", progress=False)
        ex.show_map(own)  # its own model's map is fine
        assert ex.map_on
    finally:
        ex.close()


def test_to_code_takes_a_lab_or_a_path(lab, tmp_path):
    from pathlib import Path

    ex = Explorer(lab, prompt=PROMPT, ablate="1.1", static_fallback=False)
    try:
        ex.wait()
        from_lab = ex.to_code(model=lab)
        from_path = ex.to_code(model=Path("some") / "folder")
    finally:
        ex.close()
    assert "nbtools.load(" in from_lab and "Lab(" not in from_lab
    assert f"nbtools.load({str(Path('some') / 'folder')!r}" in from_path
    for code in (from_lab, from_path):
        compile(code, "<cell>", "exec")


def test_a_nested_target_pair_is_refused(lab):
    with pytest.raises(InvalidInputError, match="pair of tokens"):
        Explorer(lab, prompt=PROMPT, target=(("w1", "w2"), "w3"), static_fallback=False)


def test_a_target_given_as_a_token_id_stays_that_token():
    """An id whose text encodes to other tokens (byte-level BPE) is measured as that id."""
    tiny = nbtools.load("tiny")
    tok = tiny.tokenizer
    odd = next(i for i in range(300, tiny.shape.d_vocab)
               if tok(tok.decode([i]), add_special_tokens=False)["input_ids"] != [i])
    ex = Explorer(tiny, prompt="The capital of France is", target=odd, ablate="1.1",
                  static_fallback=False)
    try:
        ex.wait()
        assert ex.error == "" and int(ex.measurement.target_ids[0]) == odd
    finally:
        ex.close()
