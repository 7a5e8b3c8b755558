"""The Explorer in a real JupyterLab (and Notebook 7) driven by headless Chromium.

Each test clicks in the browser and checks the panel numbers in the DOM *and* the kernel-side
state against a direct `lab.measure` call in this process on the same model. Needs the system
package `chromium` (skipped without it, unless CI is set: then a missing browser fails).
"""

from __future__ import annotations

import importlib.util
import json
import time
import warnings

import pytest
from browser_helpers import (
    chromium,
    chromium_path,
    dom_number,
    embedded_available,
    execute,
    in_ci,
    jupyter_server,
    open_notebook,
    run_all,
    save_random_gpt2,
    wait_settled,
    write_notebook,
)

import nbtools
from nbtools.widgets.standalone import toggle

pytestmark = pytest.mark.browser

CHROMIUM = chromium_path()
if CHROMIUM is None:
    if in_ci():
        raise RuntimeError("CI is set but Chromium is missing: apt-get install -y chromium")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

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


def test_errors_show_in_the_widget(session, lab):
    page = session["page"]
    page.click('.nbx-explorer [data-nb="target-custom"]')
    page.fill('.nbx-explorer [data-nb="target-input"]', "Eiffel Tower")
    page.press('.nbx-explorer [data-nb="target-input"]', "Enter")
    wait_settled(page)
    assert "give a single token" in page.text_content('.nbx-explorer [data-nb="error"]')
    assert kernel_state(session)["error"] != ""
    page.click('.nbx-explorer [data-nb="target-top"]')
    wait_settled(page)
    assert page.text_content('.nbx-explorer [data-nb="error"]') == ""


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
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    want = "ablated " + (" + ".join(ablated) or "nothing")
    deadline = time.monotonic() + 30
    while True:
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
