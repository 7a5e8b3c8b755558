"""Sphinx configuration of the nbtools documentation.

Build (offline, warnings are errors, broken references fail):

    sphinx-build -W --keep-going -n docs docs/_build/html

The walkthrough notebooks live in ``notebooks/``; they are copied into ``docs/notebooks/``
(ignored by git) and executed during the build, cached between builds by jupyter-cache.
Set ``NBTOOLS_DOCS_NOTEBOOKS`` to a folder of already executed notebooks to render those
instead (the test suite does this with the notebooks it has just executed).
"""

import os
import shutil
import sys
from pathlib import Path

import nbtools

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
executed = os.environ.get("NBTOOLS_DOCS_NOTEBOOKS")
source = Path(executed) if executed else DOCS.parent / "notebooks"
shutil.rmtree(DOCS / "notebooks", ignore_errors=True)
shutil.copytree(source, DOCS / "notebooks", ignore=shutil.ignore_patterns(".*"))

project = "nbtools"
release = nbtools.__version__
copyright = "the nbtools authors"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax ships with the site: no CDN when reading it
    "sphinxarg.ext",
    "nbtools_docstrings",
]
exclude_patterns = ["_build", "_ext", "figures/README.md", "**/.ipynb_checkpoints", "jupyter_execute"]

# Docstrings use `x` for code, as in Markdown.
default_role = "code"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

nb_execution_mode = "off" if executed else "cache"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# Broken cross-references inside the project are errors; names from other libraries
# (torch, transformers, ...) are not resolved offline and are not checked.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|transformers|nnsight|numpy|np|matplotlib|plt|anywidget|ipywidgets|"
               r"traitlets|t|pathlib|os|collections|typing|concurrent|tokenizers)(\..*)?"),
    # internal types that appear in public signatures
    (r"py:class", r"nbtools\.(batching|effects|tracing)\..*"),
    (r"py:.*", r"(Path|Iterable|Iterator|Sequence|Callable|Mapping|Any|Figure|Tensor)"),
]

smartquotes = False  # keep "zero" as typed: readers copy these

html_theme = "furo"
html_title = f"nbtools {release}"
html_static_path = []
