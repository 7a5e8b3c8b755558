"""The Explorer's who-repairs-whom map in a real JupyterLab driven by headless Chromium:
toggle it, see it drawn, check its numbers against `lab.measure`, click a row to ablate that
head. Uses the Explorer notebook session of test_explorer_browser (its own server)."""

from __future__ import annotations

import json
import time

import pytest
import test_explorer_browser as base
from browser_helpers import execute, wait_settled

# the Explorer notebook session and model of test_explorer_browser (pytest fixtures)
browser, model_source, lab, session = base.browser, base.model_source, base.lab, base.session
kernel_state, reference = base.kernel_state, base.reference

pytestmark = pytest.mark.browser

MAP = ".nbx-explorer [data-panel=map]"


def kernel_map(session) -> dict:
    path = session["root"] / f"map-{time.monotonic_ns()}.json"
    execute(session["page"], "import json\nex.wait()\njson.dump({'map': ex.map_data, 'key': "
            f"ex.view['key'], 'on': ex.map_on}}, open({str(path)!r}, 'w'))")
    return json.loads(path.read_text())


def test_repair_map_toggle_numbers_and_row_click(session, lab):
    page = session["page"]
    assert page.locator(f"{MAP} canvas").is_hidden()
    page.click(f'{MAP} [data-nb="map-toggle"]')
    page.wait_for_function(f"""() => {{ const p = document.querySelector('{MAP}');
        return p.dataset.mapKey && Number(p.dataset.done) === Number(p.dataset.total); }}""",
                           timeout=120_000)
    assert page.locator(f"{MAP} canvas").is_visible()
    km = kernel_map(session)
    md = km["map"]
    assert km["on"] and md["key"] == km["key"]
    assert page.get_attribute(MAP, "data-map-key") == md["key"]
    L, H = lab.n_layers, lab.n_heads
    assert len(md["rows"]) == L * (H + 1) and len(md["columns"]) == L * (H + 1) + 1
    assert "click a row" in page.locator(f'{MAP} [data-nb="map-note"]').text_content()
    state = kernel_state(session)["state"]
    name = "L1H3"
    r = md["rows"].index(name)
    ref = reference(lab, {**state, "ablation": [name]})
    c = md["columns"].index(f"L{L - 1}H1")
    assert md["values"][r][c] == pytest.approx(float(ref.head_delta_de[0, L - 1, 1]), abs=2e-5)
    assert md["values"][r][-1] == pytest.approx(float(ref.sr_ln[0]), abs=2e-5)

    # hover shows the pair, a click on the row ablates that head
    box = page.locator(f"{MAP} canvas").bounding_box()
    cell = box["width"] / len(md["columns"])
    x, y = box["x"] + (c + 0.5) * cell, box["y"] + (r + 0.5) * cell
    page.mouse.move(x, y)
    label = page.locator(f'{MAP} [data-nb="map-label"]').text_content()
    assert label.startswith(f"{name} ablated \u2192 L{L - 1}H1")
    if state["ablation"] == [name]:  # a click on the only ablated row would clear it
        execute(page, "ex.ablate(); ex.wait()")
        wait_settled(page)
    page.mouse.click(x, y)
    wait_settled(page)
    ks = kernel_state(session)
    assert ks["state"]["ablation"] == [name] and ks["ablated"] == [name]
    assert ks["fields"]["self_repair"] == pytest.approx(float(ref.self_repair[0]), abs=2e-5)
    chips = page.locator(".nbx-explorer .nbx-chip").all_text_contents()
    assert [t.rstrip("\u00d7") for t in chips] == [name]
    # the same settings: the map stays (no new sweep), and hides again
    assert kernel_map(session)["map"]["key"] == md["key"]
    page.click(f'{MAP} [data-nb="map-toggle"]')
    page.wait_for_function(f"() => document.querySelector('{MAP} canvas').offsetParent === null")
    assert session["errors"] == []
