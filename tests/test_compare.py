"""Compare: one ablation under two settings / in two models; a click ablates in both."""

from __future__ import annotations

import pytest
import torch
from conftest import make_lab

import nbtools
from nbtools import AttnLayer, Head, InvalidInputError, MLPLayer
from nbtools.models.adapters import Shape
from nbtools.widgets import Compare
from nbtools.widgets.compare import map_component

PROMPT = "w5 w17 w42 w8 w99 w3 w61"
SOURCE = "w7 w18 w40 w9 w98 w4 w60 w11"


@pytest.fixture(scope="module")
def lab():
    return make_lab("gpt2")


def _measure(lab, comp, **opts):
    return lab.measure(PROMPT, comp, target="top", measure_at="final", logprobs=True, top_k=5,
                       **opts)


def test_two_methods_side_by_side_equal_lab_measure(lab):
    cmp = Compare(lab, PROMPT, "1.2", left=dict(method="zero"),
                  right=dict(method="resample", sources=[SOURCE]))
    m_a, m_b = cmp.measurements
    ref_a = _measure(lab, "1.2", method="zero")
    ref_b = _measure(lab, "1.2", method="resample", sources=[SOURCE])
    for got, ref in ((m_a, ref_a), (m_b, ref_b)):
        torch.testing.assert_close(got.self_repair, ref.self_repair)
        torch.testing.assert_close(got.delta_logit, ref.delta_logit)
    wf_left, gauge_left, topk_left = cmp.panels["left"]
    wf_right = cmp.panels["right"][0]
    assert wf_left.data["steps"][-1]["value"] == pytest.approx(float(ref_a.delta_logit[0]))
    assert wf_right.data["steps"][-1]["value"] == pytest.approx(float(ref_b.delta_logit[0]))
    assert gauge_left.data["ratio"] == pytest.approx(float(ref_a.scale_ratio[0]))
    assert topk_left.data["target_id"] == int(ref_a.target_ids[0])
    diffs = {d["name"]: d for d in cmp.differences()}
    sr = float(ref_b.self_repair[0] - ref_a.self_repair[0])
    assert diffs["self_repair"]["difference"] == pytest.approx(sr)
    assert diffs["self_repair"]["differs"] == (abs(sr) > cmp.tolerance)
    assert diffs["direct_effect"]["difference"] == pytest.approx(0, abs=1e-6)  # same clean run
    assert not diffs["direct_effect"]["differs"]
    # highlighted rows in the table are exactly the ones that differ
    for name, d in diffs.items():
        row = cmp.table.value.split(f"data-nb='{name}'")[1].split("</tr>")[0]
        assert ("background" in row.split(">")[0]) == d["differs"]


def test_a_click_ablates_in_both(lab):
    cmp = Compare(lab, PROMPT, left=dict(scale="clean"), right=dict(scale="recomputed"))
    assert cmp.measurements == (None, None) and cmp.differences() == []
    cmp.grid.click("attn2")
    m_a, m_b = cmp.measurements
    assert m_a.components == (AttnLayer(2),) and m_b.components == (AttnLayer(2),)
    assert m_a.settings["scale"] == "clean" and m_b.settings["scale"] == "recomputed"
    # the two conventions share ΔL and the clean run; they split it differently
    torch.testing.assert_close(m_a.delta_logit, m_b.delta_logit)
    ref = _measure(lab, "attn2", scale="recomputed")
    torch.testing.assert_close(m_b.sr_ln, ref.sr_ln)
    cmp.grid.click("mlp1", additive=True)
    assert cmp.measurements[1].components == (AttnLayer(2), MLPLayer(1))
    assert cmp.grid.selected == ["attn2", "mlp1"]
    cmp.ablate()
    assert cmp.measurements == (None, None) and cmp.table.value == ""


def test_two_models_map_by_relative_depth(lab):
    other = make_lab("llama_gqa_vbias")
    a, b = lab.shape, other.shape
    assert map_component(Head(a.n_layers - 1, 1), a, b) == Head(b.n_layers - 1, 1 % b.n_heads)
    big = Shape(30, 9, 576, 1536, 49152, 64, 2048, 3)
    small = Shape(6, 8, 256, 1024, 8192, 32, 256, 8)
    assert map_component(Head(3, 8), big, small) == Head(round(3 * 5 / 29), 0)
    assert map_component(MLPLayer(5), small, big) == MLPLayer(29)
    cmp = Compare(lab, PROMPT, "2.1", model_b=other)
    assert "relative depth" in cmp.mapping and "L2H1 →" in cmp.header.value
    m_b = cmp.measurements[1]
    ref = other.measure(PROMPT, map_component(Head(2, 1), a, b), target="top",
                        measure_at="final", logprobs=True, top_k=5, method="mean")
    torch.testing.assert_close(m_b.self_repair, ref.self_repair)


def test_compare_validates(lab):
    with pytest.raises(InvalidInputError, match="same settings"):
        Compare(lab, PROMPT, left=dict(method="zero"), right=dict(method="zero"))
    with pytest.raises(InvalidInputError, match="unknown option"):
        Compare(lab, PROMPT, left=dict(methd="zero"))
    with pytest.raises(InvalidInputError, match="out of range"):
        Compare(lab, PROMPT, "9.9")
    assert nbtools.Compare is Compare


@pytest.mark.parametrize("kwargs,message", [
    (dict(right=dict(method="resampl")), "unknown method 'resampl'"),
    (dict(right=dict(method="mean", scale="frozen")), "unknown scale 'frozen'"),
    (dict(target=" Paris Paris"), "tokens"),
])
def test_both_sides_are_checked_before_any_forward(lab, kwargs, message):
    calls = []
    handle = lab.hf_model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(InvalidInputError, match=message):
            Compare(lab, PROMPT, "1.1", **kwargs)
    finally:
        handle.remove()
    assert calls == [], "the left side ran before the right side's error"


def test_the_same_model_loaded_twice_with_the_same_settings_is_refused(lab):
    twice = nbtools.load(lab.hf_model, tokenizer=lab.tokenizer)
    with pytest.raises(InvalidInputError, match="same settings"):
        Compare(lab, PROMPT, model_b=twice, left=dict(method="zero"), right=dict(method="zero"))
