"""Sphinx glue for nbtools' docstring style.

nbtools docstrings are plain text that reads well in `help()`: parameter lines
``name: description`` with hanging indents, code examples indented after a blank line, and
`backticks` for code. `to_rest` turns that into reStructuredText for autodoc (parameter
lines become bullet items, examples become literal blocks). The ``nbtools-dict`` directive
renders a module-level ``{name: description}`` dict (e.g. the sweep quantities) as a table.
"""

from __future__ import annotations

import importlib
import re

from docutils import nodes
from docutils.parsers.rst import Directive

# "name: ...", "`name`: ...", "on_click(event): ...", "sources (resample): ..."
KEY_LINE = re.compile(r"^[`\"']?[\w./*()\-]+[`\"']?( \([^)]{0,40}\))?: ")
PIPE_OUTSIDE_CODE = re.compile(r"(`[^`]*`)|\|")


def _escape_pipes(line: str) -> str:
    return PIPE_OUTSIDE_CODE.sub(lambda m: m.group(1) or r"\|", line)


def _paragraphs(lines: list[str]) -> list[list[str]]:
    """Split into blocks separated by blank lines; hanging indents joined to their line."""
    blocks: list[list[str]] = [[]]
    for line in lines:
        if not line.strip():
            blocks.append([])
        elif line.startswith(" ") and blocks[-1] and not blocks[-1][0].startswith(" "):
            blocks[-1][-1] += " " + line.strip()
        else:
            blocks[-1].append(line)
    return [b for b in blocks if b]


def to_rest(lines: list[str]) -> list[str]:
    """Our plain-text docstring lines → reST lines."""
    out: list[str] = []
    for i, block in enumerate(_paragraphs(lines)):
        if block[0].startswith(" "):  # an example: a literal block
            previous = [line for line in out if line.strip()]
            if not (previous and previous[-1].rstrip().endswith("::")):
                out += ["::", ""]
            out += block + [""]
        elif i > 0 and KEY_LINE.match(block[0]) and len(block) > 1:  # not the summary
            items: list[str] = []
            for line in block:
                if KEY_LINE.match(line) or not items:
                    items.append(line.strip())
                else:
                    items[-1] += " " + line.strip()
            out += ["- " + _escape_pipes(item) for item in items] + [""]
        else:
            out += [_escape_pipes(line) for line in block] + [""]
    return out


def _process(app, what, name, obj, options, lines: list[str]) -> None:
    if what == "module" and obj.__doc__:
        # autodoc dedents a module docstring's later lines together, which would flatten
        # examples that are the only indented lines; start again from the raw text.
        first, _, rest = obj.__doc__.partition("\n")
        lines[:] = [first.strip(), *rest.rstrip().splitlines()]
    lines[:] = to_rest(lines)


class DictTable(Directive):
    """``.. nbtools-dict:: module.NAME`` — a two-column table of a {name: description} dict."""

    required_arguments = 1

    def run(self):
        module, _, attr = self.arguments[0].rpartition(".")
        table = getattr(importlib.import_module(module), attr)
        body = nodes.tbody()
        for key, text in table.items():
            row = nodes.row()
            for cell in (nodes.literal(text=key), nodes.Text(text)):
                row += nodes.entry("", nodes.paragraph("", "", cell))
            body += row
        group = nodes.tgroup(cols=2)
        group += [nodes.colspec(colwidth=1), nodes.colspec(colwidth=3), body]
        return [nodes.table("", group)]


def setup(app):
    app.connect("autodoc-process-docstring", _process)
    app.add_directive("nbtools-dict", DictTable)
    return {"parallel_read_safe": True}
