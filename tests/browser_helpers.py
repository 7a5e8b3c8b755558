"""Helpers for real-browser tests and benchmarks: a model folder, a JupyterLab server, Chromium.

Needs the system package `chromium` (Debian: `apt-get install -y chromium`) driven through
Python Playwright with `executable_path` (never `playwright install`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path

import nbformat

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]

#: Words for the random model's word-level tokenizer (so prompts read naturally).
WORDS = ("The Eiffel Tower is located in the city of Paris France London Rome Berlin . , a an "
         "and to was he she it they his her said that when Mary John went store gave drink "
         "capital famous river tower museum built by people visit every year").split()


def chromium_path() -> str | None:
    """The Chromium binary ($NBTOOLS_CHROMIUM, then chromium / chromium-browser on PATH)."""
    env = os.environ.get("NBTOOLS_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_chromium() -> str:
    """The Chromium binary for a browser-test module: skips the module when there is none,
    except under CI, where a missing browser is an error."""
    import pytest

    path = chromium_path()
    if path is None:
        if in_ci():
            raise RuntimeError("CI is set but Chromium is missing: apt-get install -y chromium")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)",
                    allow_module_level=True)
    return path


def embedded_available() -> bool:
    from nbtools.embedded import embedded_dir

    return (embedded_dir("tiny") / "model.safetensors").is_file()


def word_tokenizer(vocab_size: int = 512):
    """A word-level tokenizer: WORDS first, then fillers "w<i>"; unknown words map to w0."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    while len(vocab) < vocab_size:
        vocab[f"w{len(vocab)}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", eos_token="<|endoftext|>")


def save_random_gpt2(folder, n_layer=6, n_head=8, n_embd=256, vocab_size=512, seed=0,
                     tokenizer=None) -> str:
    """Save a random-initialised GPT-2 and a tokenizer where `nbtools.load(folder)` reads them."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    marker = folder / "done.json"
    spec = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size, seed=seed)
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return str(folder)
    tokenizer = tokenizer or word_tokenizer(vocab_size)
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size,
                        n_positions=256, bos_token_id=0, eos_token_id=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GPT2LMHeadModel(config).eval().save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    marker.write_text(json.dumps(spec))
    return str(folder)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_notebook(path, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, str(path))


@contextmanager
def jupyter_server(root, app: str = "lab", timeout: float = 60.0, env: dict | None = None):
    """Run `jupyter lab` (or `notebook`) in `root` on a free port; yields the base URL."""
    port = free_port()
    settings = Path(root) / ".settings"
    quiet = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    quiet.parent.mkdir(parents=True, exist_ok=True)
    quiet.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    cmd = [sys.executable, "-m", "jupyter", app, "--no-browser", "--allow-root",
           f"--port={port}", "--ip=127.0.0.1", f"--ServerApp.root_dir={root}",
           "--IdentityProvider.token=", "--ServerApp.password=",
           "--ServerApp.disable_check_xsrf=True",
           "--LabApp.expose_app_in_browser=True" if app == "lab"
           else "--JupyterNotebookApp.expose_app_in_browser=True",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabServerApp.user_settings_dir={settings}",
           "--LabServerApp.workspaces_dir=" + str(Path(root) / ".workspaces")]
    log = open(Path(root) / f"jupyter-{app}.log", "w")  # noqa: SIM115 (closed below)
    proc_env = {**os.environ, "JUPYTER_PLATFORM_DIRS": "1", **(env or {})}
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=proc_env)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited: {Path(log.name).read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/api/status", timeout=2):
                    break
            except OSError:
                if time.monotonic() > end:
                    raise TimeoutError(f"jupyter {app} did not start in {timeout} s") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def chromium(executable: str):
    """A headless Chromium browser (Playwright, sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            yield browser
        finally:
            browser.close()


# --- driving JupyterLab --------------------------------------------------------------------

def open_notebook(page, url: str, name: str, timeout: float = 90_000) -> None:
    """Open a notebook in JupyterLab and wait until its kernel is idle."""
    page.goto(f"{url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
    page.wait_for_function(
        """() => { const app = window.jupyterapp; const w = app && app.shell.currentWidget;
                   const k = w && w.sessionContext && w.sessionContext.session
                             && w.sessionContext.session.kernel;
                   return k && k.status === 'idle'; }""", timeout=timeout)


def shutdown_kernel(page) -> None:
    """Shut down the current notebook's kernel (frees the CPU for the next one)."""
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")


def run_all(page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def execute(page, code: str, timeout: float = 60_000) -> None:
    """Run code in the current notebook's kernel (no cell); raises if the code raised."""
    result = page.evaluate(
        """async (code) => {
             const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
             const future = k.requestExecute({code, store_history: false});
             let error = null;
             future.onIOPub = (msg) => { if (msg.header.msg_type === 'error')
                 error = msg.content.ename + ': ' + msg.content.evalue; };
             const reply = await future.done;
             return error || (reply.content.status === 'ok' ? null : reply.content.status);
           }""", code)
    if result:
        raise RuntimeError(f"kernel error: {result}")


def wait_settled(page, timeout: float = 60_000) -> dict:
    """Wait until the Explorer shows the view for its latest request; returns its data-*."""
    page.wait_for_function(
        """() => { const r = document.querySelector('.nbx-explorer');
                   return r && r.dataset.busy === '0' && r.dataset.requestSeq !== undefined
                          && Number(r.dataset.doneSeq) >= Number(r.dataset.requestSeq); }""",
        timeout=timeout)
    return page.evaluate("() => ({...document.querySelector('.nbx-explorer').dataset})")


#: Click a cell (a real click event) and resolve with the ms until the animation frame after
#: the panels show that click's measurement (page.evaluate(CLICK_JS, name)).
CLICK_JS = """
async (name) => {
  const root = document.querySelector('.nbx-explorer');
  const target = root.querySelector(`[data-name="${name}"]`);
  const t0 = performance.now();
  target.dispatchEvent(new MouseEvent('click', {bubbles: true}));
  const want = root.dataset.requestSeq;
  await new Promise((resolve) => {
    const done = () => root.dataset.seq === want;
    if (done()) return resolve();
    const obs = new MutationObserver(() => { if (done()) { obs.disconnect(); resolve(); } });
    obs.observe(root, {attributes: true, attributeFilter: ['data-seq']});
  });
  await new Promise((r) => requestAnimationFrame(() => r()));
  return performance.now() - t0;
}
"""


def dom_number(page, key: str) -> float:
    """The full-precision value behind a panel number (its data-value attribute)."""
    value = page.get_attribute(f'.nbx-explorer [data-nb="{key}"]', "data-value")
    return float(value)


def screenshot(out, model: str | None = None, prompt: str = "The Eiffel Tower is located in the city of",
               ablate=(), color_by: str = "de", hover: str | None = None, width: int = 1180,
               scale: float = 1.5, cell_width: int | None = None, dark: bool = False,
               bad_target: str | None = None, focus: str | None = None) -> str:
    """Render the Explorer in JupyterLab and save a PNG of the widget (the docs picture).

    cell_width: make the widget this wide (a narrow notebook); dark: JupyterLab's dark theme;
    bad_target: type this custom target (an error: the stale state); focus: keyboard focus on
    this grid cell (e.g. "L3H1")."""
    import tempfile

    out = str(Path(out).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if model is None:
            model = "tiny" if embedded_available() else save_random_gpt2(root / "model")
        write_notebook(root / "shot.ipynb", [
            "import warnings\nwarnings.simplefilter('ignore')\nimport nbtools\n"
            f"from nbtools.widgets import Explorer\nlab = nbtools.load({model!r})",
            f"ex = Explorer(lab, prompt={prompt!r}, ablate={list(ablate)!r}, "
            f"color_by={color_by!r}, static_fallback=False)\nex",
            "ex.wait(); None",
        ])
        with jupyter_server(root) as url, chromium(chromium_path()) as browser:
            page = browser.new_page(viewport={"width": width + 420, "height": 2600},
                                    device_scale_factor=scale)
            open_notebook(page, url, "shot.ipynb")
            page.evaluate("() => window.jupyterapp.commands.execute('application:toggle-left-area')")
            if dark:
                page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                              " {theme: 'JupyterLab Dark'})")
                page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'",
                                       timeout=60_000)
            run_all(page)
            page.wait_for_selector(".nbx-explorer", timeout=120_000)
            wait_settled(page, timeout=120_000)
            if color_by == "sr":
                page.wait_for_function("() => !document.querySelector('.nbx-grid.nbx-dim')",
                                       timeout=120_000)
            if cell_width:
                page.evaluate(f"() => {{ document.querySelector('.nbx-explorer').style.width ="
                              f" '{cell_width}px'; }}")
            if bad_target:
                page.click('.nbx-explorer [data-nb="target-custom"]')
                page.fill('.nbx-explorer [data-nb="target-input"]', bad_target)
                page.press('.nbx-explorer [data-nb="target-input"]', "Enter")
                wait_settled(page, timeout=120_000)
            if hover:
                page.hover(f'.nbx-explorer [data-name="{hover}"]')
            else:
                page.mouse.move(0, 0)
            if focus:
                page.focus(f'.nbx-explorer [data-name="{focus}"]')
                page.keyboard.press("Shift")  # keyboard use: the focus ring shows
            page.wait_for_timeout(300)
            page.locator(".nbx-explorer").screenshot(path=out)
    return out


if __name__ == "__main__":  # python tests/browser_helpers.py docs/explorer.png [model] [prompt]
    import argparse

    parser = argparse.ArgumentParser(description="Screenshot the Explorer (docs picture).")
    parser.add_argument("out")
    parser.add_argument("--model")
    parser.add_argument("--prompt", default="The Eiffel Tower is located in the city of")
    parser.add_argument("--ablate", nargs="*", default=[])
    parser.add_argument("--color-by", default="de")
    parser.add_argument("--hover")
    parser.add_argument("--cell-width", type=int)
    parser.add_argument("--dark", action="store_true")
    parser.add_argument("--bad-target")
    parser.add_argument("--focus")
    a = parser.parse_args()
    print(screenshot(a.out, a.model, a.prompt, a.ablate, a.color_by, a.hover,
                     cell_width=a.cell_width, dark=a.dark, bad_target=a.bad_target,
                     focus=a.focus))
