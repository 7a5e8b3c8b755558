"""The Explorer in a real JupyterLab (and Notebook 7) driven by headless Chromium.

Each test clicks in the browser and checks the panel numbers in the DOM *and* the kernel-side
state against a direct `lab.measure` call in this process on the same model. Needs the system
package `chromium` (skipped without it, unless CI is set: then a missing browser fails).
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import time
import warnings

import pytest
import torch
from browser_helpers import (
    CLICK_JS,
    chromium,
    dom_number,
    embedded_available,
    execute,
    jupyter_server,
    open_notebook,
    require_chromium,
    run_all,
    save_random_gpt2,
    wait_settled,
    write_notebook,
)

import nbtools
from nbtools.widgets.standalone import toggle

pytestmark = pytest.mark.browser

CHROMIUM = require_chromium()

PROMPT = ("In his speech to Congress, the President of the United" if embedded_available()
          else "The Eiffel Tower is located in the city of Paris")
FIELDS = ("logit_clean", "logit_ablated", "delta_logit", "direct_effect", "direct_effect_ablated",
          "self_repair", "sr_heads", "sr_mlp", "sr_ln", "scale_clean", "scale_ablated")
DUMP = """
import json
ex.wait()
_m = ex.measurement
json.dump({{"state": ex.state, "error": ex.error, "seq": ex.view["seq"],
           "ablated": ex.view["ablated_ui"], "position": ex.view["position"],
           "target_id": ex.view["logit"]["id"], "completed": ex._worker.completed,
           "fields": None if _m is None else {{k: float(getattr(_m, k)[0]) for k in {fields}}}}},
          open({path!r}, "w"))
"""


@pytest.fixture(scope="module")
def model_source(tmp_path_factory):
    if embedded_available():
        return "tiny"
    return save_random_gpt2(tmp_path_factory.mktemp("model") / "random-gpt2")


@pytest.fixture(scope="module")
def lab(model_source):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nbtools.load(model_source)


def notebook_cells(model_source: str) -> list[str]:
    return [
        "import warnings\nwarnings.simplefilter('ignore')\nimport nbtools\n"
        "from nbtools.widgets import Explorer\n"
        f"lab = nbtools.load({model_source!r})",
        f"ex = Explorer(lab, prompt={PROMPT!r}, static_delay=0.3)\nex",
    ]


@pytest.fixture(scope="module")
def browser():
    with chromium(CHROMIUM) as b:  # one Playwright instance per module
        yield b


@pytest.fixture(scope="module")
def session(tmp_path_factory, model_source, browser):
    """JupyterLab with the Explorer notebook open and run, in headless Chromium."""
    root = tmp_path_factory.mktemp("lab")
    write_notebook(root / "explorer.ipynb", notebook_cells(model_source))
    with jupyter_server(root) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page_errors: list[str] = []
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        open_notebook(page, url, "explorer.ipynb")
        run_all(page)
        page.wait_for_selector(".nbx-explorer", timeout=90_000)
        wait_settled(page, timeout=90_000)
        yield {"page": page, "root": root, "errors": page_errors}
        page.close()


def ablate_in_browser(page, name: str) -> None:
    """Click `name` until it is the only ablated component (a plain click toggles it), and
    wait for its view. (Driven from the page: display updates of the static image that a
    silent kernel request triggers do not reach JupyterLab's notebook.)"""
    for _ in range(2):
        page.click(f'.nbx-explorer [data-name="{name}"]')
        wait_settled(page)
        chips = page.locator(".nbx-explorer .nbx-chip").all_text_contents()
        if [c.rstrip("\u00d7") for c in chips] == [name]:
            return
    raise AssertionError(f"could not ablate {name} alone: {chips}")


def kernel_state(session) -> dict:
    path = session["root"] / f"state-{time.monotonic_ns()}.json"
    execute(session["page"], DUMP.format(path=str(path), fields=FIELDS))
    return json.loads(path.read_text())


def reference(lab, state: dict):
    """The direct Lab.measure call for an Explorer state."""
    n = len(lab.to_str_tokens(state["prompt"]))
    pos = n - 1 if state["position"] < 0 else state["position"]
    target = {"next": "next", "top": "top"}.get(state["target_mode"], state["target_text"])
    kw = dict(method=state["method"], target=target, measure_at=[pos], scale=state["scale"],
              positions="all" if state["positions"] == "all" else [pos],
              neurons=True, logprobs=True, top_k=10)
    if state["method"] == "resample":
        kw["sources"] = [state["source"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lab.measure(state["prompt"], state["ablation"], **kw)


def check_against_reference(session, lab, expected_ablation, *, position=None):
    """DOM numbers and kernel state both equal a direct lab.measure for the current state."""
    page = session["page"]
    data = wait_settled(page)
    assert page.text_content('.nbx-explorer [data-nb="error"]') == ""
    ks = kernel_state(session)
    assert ks["error"] == "" and ks["state"]["ablation"] == expected_ablation
    assert ks["ablated"] == expected_ablation and ks["seq"] == ks["state"]["request_seq"]
    assert int(data["seq"]) == ks["seq"]
    if position is not None:
        assert ks["position"] == position
    ref = reference(lab, ks["state"])
    got = {k: float(getattr(ref, k)[0]) for k in FIELDS}
    for k in FIELDS:
        assert ks["fields"][k] == pytest.approx(got[k], abs=2e-5), k
    dom = {"logit-clean": got["logit_clean"], "logit-ablated": got["logit_ablated"],
           "logit-delta": got["delta_logit"], "s-clean": got["scale_clean"],
           "s-ablated": got["scale_ablated"], "gauge-sr-ln": got["sr_ln"],
           "wf-de_lost": got["direct_effect_ablated"] - got["direct_effect"],
           "wf-sr_heads": got["sr_heads"], "wf-sr_mlp": got["sr_mlp"], "wf-sr_ln": got["sr_ln"],
           "wf-delta_logit": got["delta_logit"],
           "p-ablated": float(ref.logprob_ablated[0].exp())}
    for key, value in dom.items():
        assert dom_number(page, key) == pytest.approx(value, abs=2e-5), key
    # the headline row: SR, the ablated parts' DE, SR/DE (R&N), ΔL
    headline = {"hl-sr": got["self_repair"], "hl-de": got["direct_effect"],
                "hl-share": got["self_repair"] / got["direct_effect"],
                "hl-dl": got["delta_logit"]}
    for key, value in headline.items():
        assert dom_number(page, key) == pytest.approx(value, abs=2e-5, rel=1e-5), key
    # anti-erasure rows: clean DE < 0 and ΔDE > 0, the largest ΔDE first
    clean, delta = ref.neuron_de_clean[0], ref.neuron_delta_de[0]
    ae = (clean < 0) & (delta > 0)
    if ae.any():
        best = float(delta[ae].max())
        row = '.nbx-explorer [data-nb="neuron-0"]'
        assert float(page.get_attribute(row + " [data-value]", "data-value")) == \
            pytest.approx(best, abs=2e-5)
        assert page.locator(row + " .nbx-ae-badge").count() == 1
    shown = page.text_content('.nbx-explorer [data-nb="logit-ablated"]')
    assert float(shown.replace("\u2212", "-")) == pytest.approx(got["logit_ablated"], abs=1e-3)
    assert int(page.get_attribute('.nbx-explorer [data-nb="ablated-0"]', "data-id")) == \
        int(ref.topk_ids_ablated[0, 0])
    return ks


def test_clicks_match_lab_measure(session, lab):
    page = session["page"]
    n_layers, n_heads = lab.n_layers, lab.n_heads
    ablation: list[str] = []

    def click(name, shift=False):
        nonlocal ablation
        page.click(f'.nbx-explorer [data-name="{name}"]', modifiers=["Shift"] if shift else [])
        ablation = toggle(ablation, name, shift)

    click(f"L{n_layers - 2}H1")                      # one head
    check_against_reference(session, lab, ablation)
    click(f"attn{n_layers // 2}", shift=True)        # + a whole attention layer (label)
    click(f"mlp{n_layers - 3}", shift=True)          # + an MLP layer (MLP cell)
    check_against_reference(session, lab, ablation)
    click(f"L{n_layers - 2}H1", shift=True)          # shift-click removes it again
    assert len(ablation) == 2
    check_against_reference(session, lab, ablation)
    page.click('.nbx-explorer .nbx-tok[data-pos="4"]')  # measure at another token
    page.click('.nbx-explorer [data-nb="target-next"]')  # actual next token
    page.select_option('.nbx-explorer select[data-nb="method"]', "mean")
    page.select_option('.nbx-explorer select[data-nb="scale"]', "recomputed")
    ks = check_against_reference(session, lab, ablation, position=4)
    assert ks["state"]["method"] == "mean" and ks["state"]["scale"] == "recomputed"
    assert ks["target_id"] == lab.tokenize(PROMPT).input_ids[0, 5].item()
    click(f"L{n_layers - 1}H{n_heads - 1}")          # plain click: a new single ablation
    assert ablation == [f"L{n_layers - 1}H{n_heads - 1}"]
    check_against_reference(session, lab, ablation, position=4)
    # back to the defaults for the following tests
    page.select_option('.nbx-explorer select[data-nb="method"]', "zero")
    page.select_option('.nbx-explorer select[data-nb="scale"]', "clean")
    page.click(f'.nbx-explorer .nbx-tok[data-pos="{len(lab.to_str_tokens(PROMPT)) - 1}"]')
    wait_settled(page)
    assert session["errors"] == []


def test_burst_of_50_clicks_ends_on_the_last_state(session, lab):
    page = session["page"]
    before = kernel_state(session)
    names = [f"L{(7 * i) % lab.n_layers}H{(5 * i + 1) % lab.n_heads}" for i in range(45)]
    names += [f"mlp{i % lab.n_layers}" for i in range(3)] + ["attn1", f"L0H{lab.n_heads - 1}"]
    shifts = [i % 3 != 0 for i in range(50)]
    ablation = list(before["state"]["ablation"])
    for name, shift in zip(names, shifts, strict=True):
        ablation = toggle(ablation, name, shift)
    # 50 real click events as fast as the page can take them (one JS task, no waits)
    page.evaluate(
        """([names, shifts]) => {
             const root = document.querySelector('.nbx-explorer');
             names.forEach((name, i) => root.querySelector(`[data-name="${name}"]`).dispatchEvent(
                 new MouseEvent('click', {bubbles: true, shiftKey: shifts[i]})));
           }""", [names, shifts])
    ks = check_against_reference(session, lab, ablation)
    ran = ks["completed"]["measure"] - before["completed"]["measure"]
    assert 1 <= ran < 50, f"{ran} measurements for 50 clicks: stale work was queued"
    assert session["errors"] == []
    classes = page.get_attribute(".nbx-explorer", "class")
    assert "nbx-busy" not in classes and "nbx-stale" not in classes


def test_colour_modes(session, lab):
    """'who repaired' colours by ΔDE under the ablation; 'self-repair' by each head's own SR."""
    page = session["page"]
    name = f"L{lab.n_layers - 3}H2"
    for _ in range(2):  # a second click if the first toggled an identical selection off
        page.click(f'.nbx-explorer [data-name="{name}"]')
        wait_settled(page)
        ks = kernel_state(session)
        if ks["state"]["ablation"] == [name]:
            break
    ref = reference(lab, ks["state"])
    page.click('.nbx-explorer [data-nb="color-delta"]')
    last = f"L{lab.n_layers - 1}H1"
    value = page.get_attribute(f'.nbx-explorer [data-name="{last}"]', "data-value")
    assert float(value) == pytest.approx(float(ref.head_delta_de[0, lab.n_layers - 1, 1]), abs=2e-5)
    page.click('.nbx-explorer [data-nb="color-sr"]')
    page.wait_for_function("() => document.querySelector('.nbx-explorer .nbx-legend')"
                           ".textContent.includes('self-repair when ablated alone (logits)')",
                           timeout=60_000)
    alone = reference(lab, {**ks["state"], "ablation": ["L1H3"]})
    value = page.get_attribute('.nbx-explorer [data-name="L1H3"]', "data-value")
    assert float(value) == pytest.approx(float(alone.self_repair[0]), abs=2e-5)
    page.click('.nbx-explorer [data-nb="color-de"]')
    value = page.get_attribute('.nbx-explorer [data-name="L1H3"]', "data-value")
    assert float(value) == pytest.approx(float(ref.head_de_clean[0, 1, 3]), abs=2e-5)
    assert session["errors"] == []


SLOT_OPACITY = """() => getComputedStyle(document.querySelector(
    '.nbx-explorer .nbx-result .nbx-slot[data-panel="logit"]')).opacity"""
TITLE_BADGE = """() => getComputedStyle(document.querySelector(
    '.nbx-explorer .nbx-result .nbx-panel-title'), '::after').content"""


def test_errors_show_in_the_widget_and_mark_the_panels_stale(session, lab):
    page = session["page"]
    wait_settled(page)
    good = page.text_content('.nbx-explorer [data-nb="target-token"]')
    assert page.get_attribute(".nbx-explorer", "data-outdated") == "0"
    assert float(page.evaluate(SLOT_OPACITY)) == 1.0
    page.click('.nbx-explorer [data-nb="target-custom"]')
    page.fill('.nbx-explorer [data-nb="target-input"]', "Eiffel Tower")
    page.press('.nbx-explorer [data-nb="target-input"]', "Enter")
    wait_settled(page)
    error = page.text_content('.nbx-explorer [data-nb="error"]')
    assert "give a single token" in error and "prompt 0" not in error
    assert "\u0120" not in error  # readable pieces (' Tower'), not byte-level ones ('ĠTower')
    assert kernel_state(session)["error"] != ""
    # the panels still show the last good result: dimmed, labelled stale, the note names it
    assert page.get_attribute(".nbx-explorer", "data-outdated") == "1"
    assert float(page.evaluate(SLOT_OPACITY)) < 0.5
    assert page.evaluate(TITLE_BADGE) == '"stale"'
    note = page.text_content('.nbx-explorer [data-nb="stale-note"]')
    assert "last good result" in note and good in note
    assert page.is_visible('.nbx-explorer [data-nb="stale-note"]')
    page.click('.nbx-explorer [data-nb="target-top"]')
    wait_settled(page)
    assert page.text_content('.nbx-explorer [data-nb="error"]') == ""
    assert page.get_attribute(".nbx-explorer", "data-outdated") == "0"
    assert float(page.evaluate(SLOT_OPACITY)) == 1.0
    assert not page.is_visible('.nbx-explorer [data-nb="stale-note"]')
    assert session["errors"] == []


GRID_TOKENS_OPACITY = """() => [".nbx-grid", ".nbx-tokens-box"].map((s) =>
    Number(getComputedStyle(document.querySelector(".nbx-explorer " + s)).opacity))"""


def test_an_empty_prompt_marks_the_grid_and_tokens_stale_too(session, lab):
    """The token strip and the grid still show the last good prompt after an empty one: they
    are marked with the result panels (they were left looking current)."""
    page = session["page"]
    wait_settled(page)
    assert page.evaluate(GRID_TOKENS_OPACITY) == [1.0, 1.0]
    box = '.nbx-explorer [data-nb="prompt-input"]'
    page.click('.nbx-explorer [data-nb="edit-prompt"]')
    page.fill(box, "")
    page.press(box, "Enter")
    wait_settled(page)
    assert "empty" in page.text_content('.nbx-explorer [data-nb="error"]')
    assert page.get_attribute(".nbx-explorer", "data-outdated") == "1"
    assert all(x < 0.5 for x in page.evaluate(GRID_TOKENS_OPACITY))
    page.click('.nbx-explorer [data-nb="edit-prompt"]')
    page.fill(box, PROMPT)
    page.press(box, "Enter")
    wait_settled(page)
    assert page.text_content('.nbx-explorer [data-nb="error"]') == ""
    assert page.evaluate(GRID_TOKENS_OPACITY) == [1.0, 1.0]
    assert session["errors"] == []


def test_a_click_held_through_a_redraw_registers(session, lab):
    """Press 60 ms after the previous click, hold while that click's result redraws the
    grid (at least 120 ms): the cells are updated in place, so the click still lands."""
    page = session["page"]
    wait_settled(page)
    # a model as slow as a bigger one (+250 ms a measurement), so each press overlaps a redraw
    execute(page, "import time as _time\n_measure = ex._measure\n"
                  "ex._measure = lambda state, t0: (_time.sleep(0.25), _measure(state, t0))")
    names = [f"L{lab.n_layers - 1}H0", f"L{lab.n_layers - 2}H1"]

    def centre(name):
        box = page.locator(f'.nbx-explorer [data-name="{name}"]').bounding_box()
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    points = {name: centre(name) for name in names}
    during = 0
    for i in range(6):
        first, second = names[i % 2], names[1 - i % 2]
        cell = f'.nbx-explorer [data-name="{second}"]'
        page.evaluate("([sel, i]) => { document.querySelector(sel).__mark = i; }", [cell, i])
        page.mouse.click(*points[first])
        want = int(page.get_attribute(".nbx-explorer", "data-request-seq"))
        page.wait_for_timeout(60)
        page.mouse.move(*points[second])
        page.mouse.down()
        t0 = time.monotonic()
        if int(page.get_attribute(".nbx-explorer", "data-seq")) < want:
            during += 1  # the redraw happens while the button is held
        page.wait_for_function(f"() => Number(document.querySelector('.nbx-explorer')"
                               f".dataset.seq) >= {want}", timeout=60_000)
        page.wait_for_timeout(max(0, 120 - 1000 * (time.monotonic() - t0)))
        page.mouse.up()
        ks = check_against_reference(session, lab, [second])
        assert ks["state"]["ablation"] == [second], f"click {i} on {second} was lost"
        assert page.evaluate("([sel, i]) => document.querySelector(sel).__mark === i",
                             [cell, i]), "the grid cell was replaced by the redraw"
    execute(page, "ex._measure = _measure")
    assert during >= 3, f"only {during} of 6 presses overlapped a redraw"
    assert session["errors"] == []


def test_a_click_after_a_pause_is_as_fast_as_an_immediate_one(session, lab):
    """After 2 s idle the static fallback image is being drawn (static_delay=0.3 here); it is
    drawn in a child process that the click pauses, so the click does not wait for it."""
    page = session["page"]
    wait_settled(page)
    execute(page, "_r0 = ex._fallback.renderer.rendered")
    immediate, paused = [], []
    for i in range(7):  # medians of 7 interleaved pairs: the machine's load is shared by both
        name = f"L{(3 * i + 1) % lab.n_layers}H{(5 * i + 2) % lab.n_heads}"
        other = f"L{(3 * i + 2) % lab.n_layers}H{(5 * i + 3) % lab.n_heads}"
        immediate.append(page.evaluate(CLICK_JS, name))
        page.wait_for_timeout(2000)
        paused.append(page.evaluate(CLICK_JS, other))
        page.wait_for_timeout(150)
    path = session["root"] / "rendered.json"
    execute(page, f"import json; json.dump(ex._fallback.renderer.rendered - _r0, open({str(path)!r}, 'w'))")
    assert json.loads(path.read_text()) >= 1, "the fallback image was never drawn in the pauses"
    fast, slow = statistics.median(immediate), statistics.median(paused)
    assert slow <= 1.5 * fast, (immediate, paused)
    wait_settled(page)
    assert session["errors"] == []


def test_keyboard_only_navigation_ablates_a_head(session, lab):
    page = session["page"]
    wait_settled(page)
    cells = page.evaluate("""() => [...document.querySelectorAll(
        '.nbx-explorer .nbx-grid [role=gridcell], .nbx-explorer .nbx-grid [role=rowheader]')]
        .map(c => [c.getAttribute('tabindex'), c.getAttribute('aria-label') || ''])""")
    assert len(cells) == lab.n_layers * (lab.n_heads + 2)
    assert all(t in ("0", "-1") and label for t, label in cells)
    assert sum(t == "0" for t, _ in cells) == 1  # one tab stop (roving tabindex)
    # from the first control of the widget, Tab until the grid has the focus
    page.focus('.nbx-explorer select[data-nb="method"]')
    for _ in range(80):
        if page.evaluate("() => document.activeElement.getAttribute('role')") == "gridcell":
            break
        page.keyboard.press("Tab")
    start = page.evaluate("() => document.activeElement.dataset.name")
    assert start and start.startswith("L"), start
    layer, head = (int(x) for x in start[1:].split("H"))
    goal_layer, goal_head = lab.n_layers - 2, 2
    for key, n in (("ArrowDown", goal_layer - layer), ("ArrowUp", layer - goal_layer),
                   ("ArrowRight", goal_head - head), ("ArrowLeft", head - goal_head)):
        for _ in range(max(0, n)):
            page.keyboard.press(key)
    name = f"L{goal_layer}H{goal_head}"
    assert page.evaluate("() => document.activeElement.dataset.name") == name
    ablation = toggle(kernel_state(session)["state"]["ablation"], name, False)
    page.keyboard.press("Enter")
    check_against_reference(session, lab, ablation)
    assert ablation == [name]
    # the focus survives the redraw; Shift+Space adds the MLP cell of the same layer
    assert page.evaluate("() => document.activeElement.dataset.name") == name
    page.keyboard.press("End")
    page.keyboard.press("Shift+Space")
    check_against_reference(session, lab, [name, f"mlp{goal_layer}"])
    label = page.get_attribute(f'.nbx-explorer [data-name="{name}"]', "aria-label")
    assert label.startswith(f"{name}: head {goal_head} of layer {goal_layer}") and "ablated" in label
    page.keyboard.press("Escape")
    wait_settled(page)
    assert kernel_state(session)["state"]["ablation"] == []
    assert page.is_visible('.nbx-explorer [data-nb="clean-note"]')
    assert not page.is_visible('.nbx-explorer [data-panel="waterfall"]')  # compact clean state
    assert session["errors"] == []


def test_headline_sr_prime_switch(session, lab):
    page = session["page"]
    name = f"L{lab.n_layers - 2}H3"
    page.click(f'.nbx-explorer [data-name="{name}"]')
    ks = check_against_reference(session, lab, [name])
    ref = reference(lab, ks["state"])
    page.click('.nbx-explorer [data-nb="sr-prime"]')
    prime = float(ref.self_repair_prime[0])
    assert dom_number(page, "hl-sr") == pytest.approx(prime, abs=2e-5)
    assert prime == pytest.approx(float(ref.delta_logit[0] + ref.direct_effect[0]), abs=1e-6)
    assert dom_number(page, "hl-share") == pytest.approx(prime / float(ref.direct_effect[0]),
                                                         rel=1e-5)
    page.click('.nbx-explorer [data-nb="sr-plain"]')
    assert dom_number(page, "hl-sr") == pytest.approx(float(ref.self_repair[0]), abs=2e-5)
    de_change = float(ref.direct_effect_ablated[0] - ref.direct_effect[0])
    label = page.text_content(".nbx-explorer .nbx-waterfall")
    assert ("direct effect lost" in label) == (de_change <= 0)
    assert session["errors"] == []


def single_token_texts(lab, prompt: str, n: int = 2) -> list[tuple[str, int]]:
    """The model's top predictions after `prompt` that type back as exactly one token."""
    with torch.no_grad():
        logits = lab.hf_model(lab.tokenize(prompt).input_ids).logits[0, -1]
    out = []
    for i in logits.argsort(descending=True).tolist():
        text = lab.tokenizer.decode([i])
        if text.strip() and lab.tokenizer(text, add_special_tokens=False)["input_ids"] == [i]:
            out.append((text, i))
        if len(out) == n:
            return out
    raise AssertionError("no single-token predictions")


def test_logit_difference_boxes(session, lab):
    """Typing a token in the target box and a second one in the '− token' box measures the
    logit difference: every number shown is measure(target=a) − measure(target=b)."""
    page = session["page"]
    name = f"L{lab.n_layers - 2}H1"
    ablate_in_browser(page, name)
    (a_text, a_id), (b_text, b_id) = single_token_texts(lab, PROMPT)
    page.click('.nbx-explorer [data-nb="target-custom"]')
    page.fill('.nbx-explorer [data-nb="target-input"]', a_text)
    page.fill('.nbx-explorer [data-nb="target-minus-input"]', b_text)
    page.press('.nbx-explorer [data-nb="target-minus-input"]', "Enter")
    page.wait_for_selector('.nbx-explorer [data-nb="target-minus"]', timeout=60_000)
    wait_settled(page)
    ks = kernel_state(session)
    assert ks["error"] == "" and ks["state"]["target_minus"] == b_text
    assert ks["state"]["ablation"] == [name] and ks["target_id"] == a_id
    a = reference(lab, {**ks["state"], "target_text": a_text})
    b = reference(lab, {**ks["state"], "target_text": b_text})
    assert int(b.target_ids[0]) == b_id
    diff = {k: float(getattr(a, k)[0] - getattr(b, k)[0]) for k in FIELDS if "scale" not in k}
    for k, value in diff.items():
        assert ks["fields"][k] == pytest.approx(value, abs=2e-5), k
    dom = {"logit-clean": diff["logit_clean"], "logit-ablated": diff["logit_ablated"],
           "logit-delta": diff["delta_logit"], "hl-sr": diff["self_repair"],
           "wf-sr_heads": diff["sr_heads"], "wf-sr_ln": diff["sr_ln"]}
    for key, value in dom.items():
        assert dom_number(page, key) == pytest.approx(value, abs=2e-5), key
    page.click('.nbx-explorer [data-nb="target-top"]')  # back to the default target
    wait_settled(page)
    assert kernel_state(session)["state"]["target_mode"] == "top"
    assert session["errors"] == []


def test_narrow_cell_long_prompt_and_dark_theme(session, lab):
    """At a 568 px wide cell nothing is clipped (the rows wrap); a long prompt's tokens
    collapse to one row around the measured token; the error box follows a dark theme."""
    page = session["page"]
    wait_settled(page)
    page.evaluate("() => { document.querySelector('.nbx-explorer').style.width = '568px'; }")
    page.wait_for_timeout(200)
    overflow = page.evaluate("""() => {
        const root = document.querySelector('.nbx-explorer'), box = root.getBoundingClientRect();
        const out = [];
        for (const el of root.querySelectorAll('.nbx-panel, .nbx-cell, .nbx-bar > *, .nbx-target > *'))
          { const b = el.getBoundingClientRect();
            if (b.width && (b.right > box.right + 0.5 || b.left < box.left - 0.5))
              out.push(el.className.baseVal ?? el.className); }
        return {out, scroll: root.scrollWidth - root.clientWidth}; }""")
    assert overflow == {"out": [], "scroll": 0}, overflow
    page.evaluate("() => { document.querySelector('.nbx-explorer').style.width = ''; }")
    long_prompt = " ".join([PROMPT] * 4)
    page.click('.nbx-explorer [data-nb="edit-prompt"]')
    page.fill('.nbx-explorer [data-nb="prompt-input"]', long_prompt)
    page.press('.nbx-explorer [data-nb="prompt-input"]', "Enter")
    wait_settled(page)
    n = len(lab.to_str_tokens(long_prompt))
    shown = page.locator(".nbx-explorer .nbx-tok").count()
    assert n > 24 and shown <= 20
    assert page.is_visible(f'.nbx-explorer .nbx-tok[data-pos="{n - 1}"]')
    page.click('.nbx-explorer [data-nb="tokens-toggle"]')
    assert page.locator(".nbx-explorer .nbx-tok").count() == n
    page.click('.nbx-explorer [data-nb="edit-prompt"]')
    page.fill('.nbx-explorer [data-nb="prompt-input"]', PROMPT)
    page.press('.nbx-explorer [data-nb="prompt-input"]', "Enter")
    wait_settled(page)
    light = page.evaluate("() => getComputedStyle(document.querySelector("
                          "'.nbx-explorer [data-nb=error]')).backgroundColor")
    page.evaluate("() => { document.body.dataset.jpThemeLight = 'false'; }")
    dark = page.evaluate("() => getComputedStyle(document.querySelector("
                         "'.nbx-explorer [data-nb=error]')).backgroundColor")
    page.evaluate("() => { document.body.dataset.jpThemeLight = 'true'; }")
    assert light == "rgb(253, 236, 238)" and dark.startswith("rgba(209, 73, 91")
    assert session["errors"] == []


def test_neuron_rows_undo_and_csv_export(session, lab):
    page = session["page"]
    head = f"L{lab.n_layers - 3}H1"
    ablate_in_browser(page, head)
    check_against_reference(session, lab, [head])
    row = page.locator(".nbx-explorer tr[data-neuron]").first
    neuron = row.get_attribute("data-neuron")
    row.click(modifiers=["Shift"])  # shift: add the neuron to the head
    check_against_reference(session, lab, [head, neuron])
    before = int(page.get_attribute(".nbx-explorer", "data-request-seq"))
    page.click('.nbx-explorer [data-nb="undo"]')  # the kernel makes this request: wait for it
    page.wait_for_function(f"() => Number(document.querySelector('.nbx-explorer')"
                           f".dataset.requestSeq) > {before}", timeout=60_000)
    check_against_reference(session, lab, [head])
    page.select_option('.nbx-explorer select[aria-label="export format"]', "csv")
    with page.expect_download(timeout=60_000) as info:
        page.click('.nbx-explorer [data-nb="export"]')
    text = open(info.value.path()).read()
    assert info.value.suggested_filename.endswith(".csv")
    lines = [x for x in text.splitlines() if not x.startswith("#")]
    assert lines[0].startswith("component,kind,layer,head,de_clean")
    assert len(lines) == 1 + lab.n_layers * (lab.n_heads + 1)
    page.select_option('.nbx-explorer select[aria-label="export format"]', "png")
    assert session["errors"] == []


def test_tokens_coloured_by_self_repair(session, lab):
    page = session["page"]
    name = f"L{lab.n_layers - 2}H4"
    ablate_in_browser(page, name)
    page.click('.nbx-explorer [data-nb="tokens-sr"]')
    n = len(lab.to_str_tokens(PROMPT))
    page.wait_for_function(f"() => document.querySelectorAll('.nbx-explorer .nbx-tok[data-sr]')"
                           f".length === {n}", timeout=60_000)
    ks = kernel_state(session)
    ref = reference(lab, {**ks["state"], "position": 4})
    got = float(page.get_attribute('.nbx-explorer .nbx-tok[data-pos="4"]', "data-sr"))
    assert got == pytest.approx(float(ref.self_repair[0]), abs=2e-5)
    last = float(page.get_attribute(f'.nbx-explorer .nbx-tok[data-pos="{n - 1}"]', "data-sr"))
    assert last == pytest.approx(dom_number(page, "hl-sr"), abs=2e-5)
    page.click('.nbx-explorer [data-nb="tokens-sr"]')
    assert page.locator(".nbx-explorer .nbx-tok[data-sr]").count() == 0
    assert session["errors"] == []


def test_sortable_component_table(session, lab):
    page = session["page"]
    wait_settled(page)
    ks = kernel_state(session)
    ref = reference(lab, {**ks["state"], "ablation": ks["state"]["ablation"] or ["L0H0"]})
    page.click('.nbx-explorer [data-nb="sort-de_clean"]')  # largest clean DE first
    de = ref.head_de_clean[0]
    values = [(float(de[layer, head]), f"L{layer}H{head}") for layer in range(lab.n_layers)
              for head in range(lab.n_heads)]
    values += [(float(ref.mlp_de_clean[0, layer]), f"mlp{layer}") for layer in range(lab.n_layers)]
    best = max(values)
    first = '.nbx-explorer [data-nb="comp-0"]'
    assert page.get_attribute(first, "data-component") == best[1]
    page.click('.nbx-explorer [data-nb="sort-de_clean"]')  # again: ascending
    assert page.get_attribute(first, "data-component") == min(values)[1]
    name = page.get_attribute(first, "data-component")
    page.click(first)
    check_against_reference(session, lab, toggle(ks["state"]["ablation"], name, False))
    assert session["errors"] == []


def test_export_and_static_fallback(session):
    page = session["page"]
    with page.expect_download(timeout=60_000) as info:
        page.click('.nbx-explorer [data-nb="export"]')
    path = info.value.path()
    assert open(path, "rb").read(4) == b"\x89PNG"
    assert info.value.suggested_filename.startswith("nbtools-explorer-")
    # the static image is refreshed once the view is idle; hidden while the widget is live
    page.wait_for_function(
        """() => [...document.querySelectorAll('.nbtools-static img')]
                 .some(img => img.alt.includes('static image of the last view'))""",
        timeout=60_000)
    assert page.evaluate("() => getComputedStyle(document.querySelector('.nbtools-static'))"
                         ".display") == "none"
    ablated = kernel_state(session)["ablated"]
    want = "ablated " + (" + ".join(ablated) or "nothing")
    deadline = time.monotonic() + 30
    while True:  # save until the saved file has the image of the current view
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_timeout(500)
        nb = json.loads((session["root"] / "explorer.ipynb").read_text())
        outputs = nb["cells"][1]["outputs"]
        static = [o for o in outputs if "image/png" in o.get("data", {})]
        if static and want in "".join(static[0]["data"]["text/plain"]):
            break
        assert time.monotonic() < deadline, outputs
        time.sleep(0.5)
    assert "nbtools-static" in "".join(static[0]["data"]["text/html"])
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


@pytest.mark.skipif(importlib.util.find_spec("notebook") is None,
                    reason="Notebook 7 is not installed (pip install notebook)")
def test_notebook7(tmp_path, model_source, lab, browser):
    write_notebook(tmp_path / "nb7.ipynb", notebook_cells(model_source))
    with jupyter_server(tmp_path, app="notebook") as url:
        page = browser.new_page(viewport={"width": 1300, "height": 1200})
        errors: list[str] = []
        # Notebook 7.6 itself throws "reading 'schema'" from notebook_core on running cells;
        # keep only errors with a frame outside Notebook's own bundle (e.g. our blob: module)
        page.on("pageerror", lambda e: errors.append(str(e)) if any(
            "/static/notebook/" not in line for line in (e.stack or "").splitlines()[1:]
            if "://" in line or "blob:" in line) else None)
        page.goto(f"{url}/notebooks/nb7.ipynb", wait_until="domcontentloaded")
        page.wait_for_function(
            """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                       const k = w && w.sessionContext && w.sessionContext.session
                                 && w.sessionContext.session.kernel;
                       return k && k.status === 'idle'; }""", timeout=90_000)
        run_all(page)
        page.wait_for_selector(".nbx-explorer", timeout=90_000)
        wait_settled(page, timeout=90_000)
        name = f"L{lab.n_layers - 2}H0"
        page.click(f'.nbx-explorer [data-name="{name}"]')
        wait_settled(page)
        ref = reference(lab, {"prompt": PROMPT, "position": -1, "target_mode": "top",
                              "target_text": "", "ablation": [name], "method": "zero",
                              "source": "", "positions": "all", "scale": "clean"})
        assert dom_number(page, "logit-ablated") == pytest.approx(float(ref.logit_ablated[0]),
                                                                  abs=2e-5)
        assert dom_number(page, "wf-sr_ln") == pytest.approx(float(ref.sr_ln[0]), abs=2e-5)
        assert errors == []
        page.close()


def test_clicked_heads_attention_pattern(session, lab):
    """Clicking a head shows its clean attention pattern: T × T cells (causal) whose weights
    equal lab.attention_pattern; the panel hides for an MLP layer or a set of heads."""
    page = session["page"]
    head = f"L{lab.n_layers - 1}H2"
    ablate_in_browser(page, head)
    panel = '.nbx-explorer [data-nb="attention"]'
    page.wait_for_selector(f"{panel}:not(.nbx-hidden) .nbx-attn-cell", timeout=30_000)
    ks = kernel_state(session)
    prompt, pos = ks["state"]["prompt"], ks["position"]
    expected = lab.attention_pattern(prompt, lab.n_layers - 1, 2)
    cells = page.eval_on_selector_all(
        f"{panel} .nbx-attn-cell",
        "els => els.map(e => [+e.dataset.q, +e.dataset.k, +e.dataset.w])")
    T = expected.shape[0]
    assert T == len(lab.to_str_tokens(prompt))
    assert sorted((q, k) for q, k, _ in cells) == [(q, k) for q in range(T) for k in range(q + 1)]
    for q, k, w in cells:
        assert w == pytest.approx(float(expected[q, k]), abs=1e-7), (q, k)
    row = page.locator(f'{panel} [data-nb="attention-row"]')
    cell = page.locator(f'{panel} .nbx-attn-cell[data-q="{pos}"][data-k="0"]')
    assert float(row.get_attribute("y")) + 1 == float(cell.get_attribute("y"))  # measured row
    assert f"L{lab.n_layers - 1}H2" in page.text_content(f"{panel} .nbx-panel-title")
    page.click('.nbx-explorer [data-name="L0H0"]', modifiers=["Shift"])  # a set: no pattern
    wait_settled(page)
    page.wait_for_selector(f"{panel}.nbx-hidden", state="attached", timeout=10_000)
    ablate_in_browser(page, f"mlp{lab.n_layers - 1}")
    page.wait_for_selector(f"{panel}.nbx-hidden", state="attached", timeout=10_000)
    # a long prompt: the measured position's row as a strip over the tokens
    long_prompt = " ".join([prompt] * 6)
    page.click('.nbx-explorer [data-nb="edit-prompt"]')
    page.fill('.nbx-explorer [data-nb="prompt-input"]', long_prompt)
    page.press('.nbx-explorer [data-nb="prompt-input"]', "Enter")
    wait_settled(page)
    ablate_in_browser(page, "L1H0")
    page.wait_for_selector(f"{panel}:not(.nbx-hidden) .nbx-attn-tok", timeout=30_000)
    assert page.locator(f"{panel} .nbx-attn-cell").count() == 0
    row = lab.attention_pattern(long_prompt, 1, 0)[-1]
    strip = page.eval_on_selector_all(f"{panel} .nbx-attn-tok",
                                      "els => els.map(e => [+e.dataset.k, +e.dataset.w])")
    assert [k for k, _ in strip] == list(range(len(row))) and len(row) > 48
    for k, w in strip:
        assert w == pytest.approx(float(row[k]), abs=1e-7), k
    assert not session["errors"]
