"""Every walkthrough notebook runs top to bottom on the embedded model, and is committed clean."""

from __future__ import annotations

import nbformat
import pytest
from notebook_runs import NOTEBOOKS, notebook_paths

import nbtools
from nbtools import walkthroughs

NAMES = [p.name for p in notebook_paths()]


def test_the_walkthroughs_exist():
    expected = {"quickstart", "hydra_effect", "head_self_repair", "final_layernorm",
                "anti_erasure", "paper_figures", "other_models"}
    assert expected <= {n.removesuffix(".ipynb") for n in NAMES}


def test_the_walkthroughs_have_one_reading_order():
    """Every notebook is in `walkthroughs.ORDER`, says where it stands in the order, and ends with
    a "Next:" link to the one after it (the last says it is the last)."""
    order = list(walkthroughs.ORDER)
    assert sorted(order) == sorted(n.removesuffix(".ipynb") for n in NAMES)
    for i, name in enumerate(order):
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert f"*Walkthrough {i + 1} of {len(order)}*" in nb.cells[0].source, name
        last = nb.cells[-1]
        assert last.cell_type == "markdown" and last.source.startswith("**Next:**"), name
        following = walkthroughs.next_walkthrough(name)
        if following is None:
            assert "last walkthrough" in last.source, name
        else:
            assert f"]({following}.ipynb)" in last.source, name
            assert (NOTEBOOKS / f"{following}.ipynb").exists()
    with pytest.raises(nbtools.InvalidInputError, match="known: quickstart"):
        walkthroughs.next_walkthrough("nope")


@pytest.mark.parametrize("path", notebook_paths(), ids=NAMES)
def test_notebook_has_a_checked_exercise(path):
    """A "Predict, then run" exercise: the question in markdown, then a code cell that asserts
    the measured answer."""
    nb = nbformat.read(path, as_version=4)
    asks = [i for i, c in enumerate(nb.cells)
            if c.cell_type == "markdown" and "Predict, then run" in c.source]
    assert asks, "no 'Predict, then run' exercise"
    assert any(c.cell_type == "code" and "assert " in c.source for c in nb.cells[asks[0] + 1:]), (
        "no checking cell after the exercise")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, notebook_runs, data_dir):
    nb = nbformat.read(notebook_runs.executed(name), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "every code cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors


@pytest.mark.parametrize("path", notebook_paths(), ids=NAMES)
def test_notebook_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: clear the outputs before committing")
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", notebook_paths(), ids=NAMES)
def test_notebook_has_one_title(path):
    """The docs site takes a notebook's single `#` heading as its page title."""
    nb = nbformat.read(path, as_version=4)
    headings = [line for c in nb.cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("#")]
    assert headings and headings[0].startswith("# "), "first heading is the title"
    assert sum(h.startswith("# ") for h in headings) == 1


# --- every model a walkthrough may pick ---------------------------------------------------
class _Validated(Exception):
    """Raised by the first measurement: every check before it passed."""


@pytest.fixture()
def validating_lab(monkeypatch):
    """The embedded model, stopped at its first measurement (no forward pass runs)."""
    import nbtools
    from nbtools.lab import Lab

    def stop(*args, **kwargs):
        raise _Validated

    monkeypatch.setattr(Lab, "_measure", stop)
    return nbtools.load("tiny")


@pytest.mark.parametrize("model", walkthroughs.candidates())
def test_walkthrough_sizes_pass_the_sweeps_checks(model, validating_lab):
    """The sizes each model-switching walkthrough picks pass the sweeps' own validation (the
    check that stopped paper_figures on SmolLM2: n_sources=15 needs 16 prompts)."""
    from nbtools.corpus import iter_documents, split_documents
    from nbtools.sweeps import sweep_heads, sweep_layers

    lab, L = validating_lab, validating_lab.n_layers
    hydra = walkthroughs.sizes("hydra_effect", model)
    with pytest.raises(_Validated):
        sweep_layers(lab, n_prompts=hydra["n_prompts"], n_sources=hydra["n_sources"],
                     progress=False)
    figs = walkthroughs.sizes("paper_figures", model)
    with pytest.raises(_Validated):
        sweep_layers(lab, n_prompts=figs["n_prompts"], n_sources=figs["n_sources"],
                     progress=False)
    texts = [d.text for d in split_documents(iter_documents())[1]]
    with pytest.raises(_Validated):
        sweep_heads(lab, texts, n_rows=figs["n_rows"], row_len=figs["row_len"],
                    per_token=[f"{L // 2}.0", f"{L - 2}.0"], anti_erasure=[f"{L - 2}.0"],
                    progress=False)


def test_walkthrough_model_choice(monkeypatch):
    from nbtools.models import registry

    monkeypatch.setenv(walkthroughs.ENV, "gpt2")
    assert walkthroughs.pick_model() == "gpt2"
    monkeypatch.delenv(walkthroughs.ENV)
    monkeypatch.setattr(registry, "cached", lambda name: False)
    assert walkthroughs.pick_model() == "tiny"
    first = next(iter(registry.REGISTRY))
    monkeypatch.setattr(registry, "cached", lambda name: name == first)
    assert walkthroughs.pick_model() == first
    assert walkthroughs.sizes("paper_figures", first) != walkthroughs.sizes("paper_figures", "tiny")
    with pytest.raises(nbtools.InvalidInputError, match="known: hydra_effect"):
        walkthroughs.sizes("nope", "tiny")


#: The walkthroughs that switch to a real model when one is cached.
SWITCHING = ["hydra_effect.ipynb", "paper_figures.ipynb"]


_RUNS: dict = {}


def real_runs(name, tmp_path_factory):
    """The walkthroughs executed on registered model `name` (once per session); skips,
    saying so, when it is not in the cache."""
    from nbtools.models.registry import cached

    if not cached(name):
        pytest.skip(f"{name} is not cached (nbtools fetch {name}): the walkthroughs' "
                    "real-model path is not run on it")
    from notebook_runs import NotebookRuns

    if name not in _RUNS:
        _RUNS[name] = NotebookRuns(tmp_path_factory.mktemp(f"notebooks-{name}"), model=name)
    return _RUNS[name]


@pytest.mark.slow
@pytest.mark.parametrize("model", [m for m in walkthroughs.candidates() if m != "tiny"])
@pytest.mark.parametrize("name", SWITCHING)
def test_switching_walkthroughs_run_on_each_cached_real_model(name, model, tmp_path_factory):
    runs = real_runs(model, tmp_path_factory)
    nb = nbformat.read(runs.executed(name), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "every code cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    shown = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                    for c in code for o in c.outputs)
    assert model in shown, "the notebook ran on the real model"
