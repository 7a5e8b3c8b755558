"""Every walkthrough notebook runs top to bottom on the embedded model, and is committed clean."""

from __future__ import annotations

import nbformat
import pytest
from notebook_runs import notebook_paths

NAMES = [p.name for p in notebook_paths()]


def test_the_walkthroughs_exist():
    expected = {"quickstart", "hydra_effect", "head_self_repair", "final_layernorm",
                "anti_erasure", "paper_figures", "other_models"}
    assert expected <= {n.removesuffix(".ipynb") for n in NAMES}


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
