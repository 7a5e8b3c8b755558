"""The Explorer on a remote Lab, clicked in a real JupyterLab in Chromium: every request goes
through nnsight's real client to the stand-in NDIF server on localhost (`ndif_standin.py`),
which keeps each request queued for a while, so the page shows the wait as it passes."""

from __future__ import annotations

import warnings

import pytest
from browser_helpers import (
    chromium,
    dom_number,
    jupyter_server,
    open_notebook,
    require_chromium,
    run_all,
    wait_settled,
    write_notebook,
)
from test_remote import PROMPT, local_lab, save_model, standin

pytestmark = pytest.mark.browser

CHROMIUM = require_chromium()


def test_clicks_through_the_loopback_server(tmp_path):
    folder = save_model("gpt2", tmp_path / "gpt2")
    local = local_lab(folder)
    root = tmp_path / "lab"
    root.mkdir()
    with standin(folder, tmp_path, "--queue-seconds", "1.5") as (url, log):
        write_notebook(root / "remote.ipynb", [
            "import warnings\nwarnings.simplefilter('ignore')\nimport nbtools\n"
            "from nbtools.widgets import Explorer\n"
            f"lab = nbtools.load({str(folder)!r}, remote={url!r})",
            f"ex = Explorer(lab, prompt={PROMPT!r}, static_fallback=False)\nex"])
        env = {"NBTOOLS_CACHE": str(tmp_path / "cache")}
        with jupyter_server(root, env=env) as server, chromium(CHROMIUM) as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            open_notebook(page, server, "remote.ipynb")
            run_all(page)
            page.wait_for_selector(".nbx-explorer", timeout=120_000)
            wait_settled(page, timeout=120_000)
            host = url.split("://")[1]
            assert f"on {host}" in page.text_content('.nbx-explorer [data-nb="model"]')
            before = len(log)
            page.click('.nbx-explorer [data-name="mlp2"]')
            page.wait_for_function(  # the wait, shown while it passes
                """(host) => document.querySelector('.nbx-explorer [data-nb="status"]')
                              .textContent.startsWith('queued on ' + host)""",
                arg=host, timeout=30_000)
            wait_settled(page, timeout=120_000)
            assert page.text_content('.nbx-explorer [data-nb="error"]') == ""
            assert len(log) == before + 1  # one request per click
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                n = len(local.to_str_tokens(PROMPT))
                ref = local.measure(PROMPT, "mlp2", method="zero", target="top",
                                    measure_at=[n - 1], neurons=True, logprobs=True, top_k=10)
            for key, value in {"logit-clean": ref.logit_clean, "logit-delta": ref.delta_logit,
                               "wf-sr_heads": ref.sr_heads, "wf-sr_ln": ref.sr_ln,
                               "s-ablated": ref.scale_ablated}.items():
                assert dom_number(page, key) == pytest.approx(float(value[0]), abs=1e-5), key
            assert errors == []
            page.close()
