"""nnsight ships a session as the unparsed source of its body and finds each inner trace by
its line: in every session body of `nbtools.tracing`, unparsing must keep each inner trace on
the line it has in the file (else remote runs fail with WithBlockNotFoundError)."""

from __future__ import annotations

import ast
import inspect

import pytest

from nbtools import tracing

SESSIONS = [tracing.constants_session, tracing.measure_session, tracing.attention_session]


def _session_block(func) -> ast.With:
    lines, start = inspect.getsourcelines(func)
    tree = ast.parse(inspect.getsource(func))
    ast.increment_lineno(tree, start - 1)
    return next(n for n in ast.walk(tree) if isinstance(n, ast.With)
                and any("session" in ast.unparse(item.context_expr) for item in n.items))


def _statement_lines(nodes) -> list[tuple[int, str]]:
    return [(n.lineno, type(n).__name__) for n in nodes if isinstance(n, ast.stmt)]


@pytest.mark.parametrize("func", SESSIONS, ids=lambda f: f.__name__)
def test_inner_traces_keep_their_lines_when_unparsed(func):
    block = _session_block(func)
    # what nnsight's serialization.reduce_block ships: the body, unparsed, padded to its line
    shipped = "\n" * (block.body[0].lineno - 1) + ast.unparse(ast.Module(block.body, []))
    inner = [n for n in ast.walk(ast.Module(block.body, [])) if isinstance(n, ast.With)]
    assert inner, "a session body opens at least one trace"
    reparsed = [n for n in ast.walk(ast.parse(shipped)) if isinstance(n, ast.With)]
    for mine, theirs in zip(inner, reparsed, strict=True):
        assert mine.lineno == theirs.lineno, (
            f"{func.__name__}: the trace at line {mine.lineno} moves to {theirs.lineno} when "
            "unparsed; keep every statement before it on one line, with no comment or blank "
            "line between them except one blank line before each def (unparse adds that)")


def test_each_session_has_a_module_of_its_own():
    """nnsight caches a file's source by file name: two different session bodies in one file
    would make a server that ran one of them find the other's lines stale."""
    files = [inspect.getsourcefile(f) for f in SESSIONS]
    assert len(set(files)) == len(files)
