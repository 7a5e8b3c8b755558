"""The documentation site builds offline with warnings as errors, from the executed notebooks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from notebook_runs import notebook_paths

DOCS = Path(__file__).resolve().parents[1] / "docs"


def sphinx_build(docs: Path, out: Path, notebooks: Path) -> subprocess.CompletedProcess:
    """The docs' one command (`sphinx-build -W --keep-going -n`), run on a copy of docs/."""
    env = {**os.environ, "NBTOOLS_DOCS_NOTEBOOKS": str(notebooks)}
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
         str(docs), str(out)], env=env, capture_output=True, text=True, timeout=1200)


def copy_docs(dest: Path) -> Path:
    shutil.copytree(DOCS, dest, ignore=shutil.ignore_patterns("_build", "notebooks"))
    return dest


@pytest.mark.slow
def test_docs_build(tmp_path, notebook_runs, data_dir):
    executed = tmp_path / "executed"
    executed.mkdir()
    for path in notebook_paths():
        shutil.copy(notebook_runs.executed(path.name), executed / path.name)
    out = tmp_path / "html"
    run = sphinx_build(copy_docs(tmp_path / "docs"), out, executed)
    assert run.returncode == 0, run.stdout + run.stderr

    api = (out / "api" / "measure.html").read_text()
    assert "measure_many" in api and "self_repair" in api  # docstrings reached the page
    cli = (out / "cli.html").read_text()
    assert "--corpus" in cli and "train-tiny" in cli  # the argparse reference
    for path in notebook_paths():
        page = (out / "notebooks" / f"{path.stem}.html").read_text()
        assert "cell_output" in page, f"{path.stem}: rendered without outputs"
    concepts = (out / "concepts.html").read_text()
    assert "SR}_" in concepts and "_static/mathjax/tex-chtml.js" in concepts
    assert (out / "_static" / "mathjax" / "tex-chtml.js").is_file()  # math renders offline


@pytest.mark.slow
def test_broken_reference_fails_the_build(tmp_path):
    docs = copy_docs(tmp_path / "docs")
    with open(docs / "concepts.md", "a") as f:
        f.write("\nSee [the missing page](no_such_page.md) and {func}`nbtools.no_such_function`.\n")
    run = sphinx_build(docs, tmp_path / "html", Path(__file__).resolve().parents[1] / "notebooks")
    assert run.returncode != 0
    log = run.stdout + run.stderr
    assert "no_such_page" in log and "no_such_function" in log
