"""The Explorer's Code button and the side-by-side Compare in a real JupyterLab (Chromium).

Clicks in the browser, sees the DOM change, and checks the kernel side: the code the button
delivers is `Explorer.to_code()`, and a click on Compare's grid ablates in both sides, with
the differences table in the DOM equal to the kernel's `Compare.differences()`.
"""

from __future__ import annotations

import json
import time

import pytest
from browser_helpers import (
    chromium,
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

pytestmark = pytest.mark.browser

CHROMIUM = require_chromium()

PROMPT = "The Eiffel Tower is located in the city of Paris"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    model = "tiny" if embedded_available() else save_random_gpt2(root / "random-gpt2")
    cells = [
        "import warnings\nwarnings.simplefilter('ignore')\nimport nbtools\n"
        f"lab = nbtools.load({model!r})",
        f"ex = nbtools.Explorer(lab, prompt={PROMPT!r}, ablate='2.3', static_fallback=False)\nex",
        f"cmp = nbtools.Compare(lab, {PROMPT!r}, left=dict(scale='clean'), "
        "right=dict(scale='recomputed'))\ncmp",
    ]
    write_notebook(root / "compare.ipynb", cells)
    with chromium(CHROMIUM) as browser, jupyter_server(root) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        open_notebook(page, url, "compare.ipynb")
        run_all(page)
        page.wait_for_selector(".nbx-explorer", timeout=90_000)
        page.wait_for_selector(".nbx-compare-head", state="attached", timeout=90_000)
        wait_settled(page, timeout=90_000)
        yield {"page": page, "root": root, "errors": errors}
        page.close()


def kernel(session, expr: str):
    path = session["root"] / f"out-{time.monotonic_ns()}.json"
    execute(session["page"], f"import json\njson.dump({expr}, open({str(path)!r}, 'w'))")
    return json.loads(path.read_text())


def test_code_button_delivers_to_code(session):
    page = session["page"]
    page.click('.nbx-explorer [data-nb="code"]')
    page.wait_for_function("() => !!document.querySelector('.nbx-explorer').dataset.code",
                           timeout=60_000)
    code = page.evaluate("() => document.querySelector('.nbx-explorer').dataset.code")
    assert code == kernel(session, "ex.to_code()")
    assert "['L2H3']" in code and "lab.measure(" in code
    status = page.text_content('.nbx-explorer [data-nb="status"]')
    assert "copied" in status or "Ctrl-C" in status
    assert not session["errors"]


def test_compare_click_ablates_in_both(session):
    page = session["page"]
    assert kernel(session, "[m is None for m in cmp.measurements]") == [True, True]
    page.click('.nbx-compare-head >> xpath=ancestor::div[contains(@class, "widget-vbox")][1]'
               ' >> [data-name="L1H2"]')
    page.wait_for_selector(".nbx-compare-table [data-nb='self_repair']", timeout=60_000)
    got = kernel(session, "[[str(c) for c in m.components] for m in cmp.measurements]")
    assert got == [["L1H2"], ["L1H2"]]
    diffs = {d["name"]: d for d in kernel(session, "cmp.differences()")}
    for name in ("delta_logit", "self_repair", "sr_ln"):
        cells = page.locator(f".nbx-compare-table [data-nb='{name}'] td").all_text_contents()
        assert float(cells[1]) == pytest.approx(diffs[name]["left"], abs=1e-4)
        assert float(cells[2]) == pytest.approx(diffs[name]["right"], abs=1e-4)
    # the two scale conventions agree on ΔL and split it differently
    assert not diffs["delta_logit"]["differs"]
    assert not session["errors"]
