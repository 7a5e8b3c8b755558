"""Forward passes from two threads at once (the Explorer's worker and a notebook cell).

nnsight binds a trace to the thread that runs it; two traces interleaving across threads
fail inside nnsight. The Lab must serialise them, and each thread must get the same numbers
it gets alone.
"""

from __future__ import annotations

import threading

import pytest
import torch

import nbtools

PROMPT = "The Eiffel Tower is located in the city of Paris"


@pytest.fixture(scope="module")
def lab():
    return nbtools.load("tiny")


def test_concurrent_measurements_match_serial(lab):
    jobs = {"measure": lambda: lab.measure(PROMPT, "L2H3").self_repair,
            "pattern": lambda: lab.attention_pattern(PROMPT, 1, 2),
            "scales": lambda: lab.measure(PROMPT, "attn1", scale="recomputed").self_repair}
    alone = {name: job() for name, job in jobs.items()}
    results: dict[str, list] = {name: [] for name in jobs}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def repeat(name):
        start.wait()
        try:
            for _ in range(8):
                results[name].append(jobs[name]())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=repeat, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for name, outs in results.items():
        assert len(outs) == 8
        for out in outs:
            assert torch.equal(out, alone[name]), name


def test_two_labs_in_two_threads():
    """Two models measured at the same time from two threads (a Compare of two models
    beside an Explorer) each give their numbers alone."""
    labs = [nbtools.load("tiny"), nbtools.load("tiny")]
    alone = [lab.measure(PROMPT, "L3H1").self_repair for lab in labs]
    results: list[list] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def repeat(i):
        start.wait()
        try:
            for _ in range(8):
                results[i].append(labs[i].measure(PROMPT, "L3H1").self_repair)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=repeat, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for i in range(2):
        assert len(results[i]) == 8 and all(torch.equal(r, alone[i]) for r in results[i])
