"""The talk style: a wide canvas with every text and line scaled; a bad style is refused
before any figure is drawn, naming the styles."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from nbtools import figures
from nbtools.errors import InvalidInputError
from nbtools.figures.style import TALK, restyle
from nbtools.sweeps import load_result

LAYERS = Path(__file__).resolve().parents[1] / "docs/results/smollm2_layers.safetensors"


def _texts(fig):
    return {t.get_text(): t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)
            if t.get_text()}


def test_talk_scales_canvas_text_and_lines():
    res = load_result(LAYERS)
    paper = figures.delta_by_layer(res)
    paper.canvas.draw()
    sizes, size_in = _texts(paper), paper.get_size_inches()
    talk = restyle(figures.delta_by_layer(res), "talk")
    assert talk.get_size_inches() == pytest.approx(size_in * [TALK["width"], TALK["height"]])
    scaled = _texts(talk)
    caption = paper._nbtools["caption"]
    assert scaled[caption] == pytest.approx(sizes[caption] * TALK["text"])
    assert scaled["logit"] == pytest.approx(sizes["logit"] * TALK["text"])  # axis label
    assert scaled["0"] == pytest.approx(sizes["0"] * TALK["text"])          # tick label
    widths = [line.get_linewidth() for line in paper.axes[0].get_lines()]
    assert [line.get_linewidth() for line in talk.axes[0].get_lines()] == \
        pytest.approx([w * TALK["lines"] for w in widths])


def test_an_unknown_style_names_the_styles(tmp_path):
    with pytest.raises(InvalidInputError, match="choose from paper, talk"):
        figures.render_all([LAYERS], tmp_path, style="poster")
    assert not any(tmp_path.iterdir())
