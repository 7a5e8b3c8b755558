"""The remote (NDIF) code path, exercised with nnsight's local simulation of it.

``remote="local"`` serialises every trace exactly as for NDIF, deserialises it with local
modules hidden and runs it here. ``remote=True`` is checked by standing in a fake server
for nnsight's RemoteBackend (no network): the request is built and shipped through the same
serialisation, and the numbers must not change.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_lab
from nnsight.intervention.backends import local as local_backend
from nnsight.intervention.backends import remote as remote_backend

from nbtools import InvalidInputError
from nbtools.sweeps import sweep_heads, sweep_layers


@pytest.fixture(scope="module")
def lab():
    return make_lab("gpt2")


@pytest.fixture()
def count_local(monkeypatch):
    """Count traces that went through nnsight's LocalSimulationBackend."""
    calls = {"n": 0}
    real = local_backend.LocalSimulationBackend.__call__

    def counting(self, tracer):
        calls["n"] += 1
        return real(self, tracer)

    monkeypatch.setattr(local_backend.LocalSimulationBackend, "__call__", counting)
    return calls


def test_measure_through_local_simulation_is_identical(lab, count_local):
    rows = torch.randint(1, 512, (3, 9), generator=torch.Generator().manual_seed(0))
    here = lab.measure_many(rows, ["1.2", "mlp2"], method="resample", sources="shift",
                            neurons=True)
    there = lab.on("local").measure_many(rows, ["1.2", "mlp2"], method="resample",
                                         sources="shift", neurons=True)
    assert count_local["n"] == 1  # one request: the clean run and every ablated run
    for a, b in zip(here, there, strict=True):
        for name, value in a.tensors().items():
            assert torch.equal(value, b.tensors()[name]), name
    # the model is back to local tracing afterwards
    count_local["n"] = 0
    lab.clear_cache()
    lab.measure(rows, "0.1", method="zero")
    assert count_local["n"] == 0


def test_sweeps_through_local_simulation(lab, count_local, tmp_path):
    rows = torch.randint(1, 512, (4, 8), generator=torch.Generator().manual_seed(1))
    kw = dict(heads="2.*", batch_rows=2, anti_erasure=["3.1"], progress=False)
    here = sweep_heads(lab, rows, out=tmp_path / "here.safetensors", **kw)
    there = sweep_heads(lab, rows, out=tmp_path / "there.safetensors", remote="local", **kw)
    assert count_local["n"] > 0
    assert (tmp_path / "here.safetensors").read_bytes() == \
        (tmp_path / "there.safetensors").read_bytes()
    for key, value in here.stats.items():
        torch.testing.assert_close(there.stats[key], value, equal_nan=True, atol=0, rtol=0)
    prompts = [f"w{i} w{i + 7} w{i + 3} w{2 * i + 1}" for i in range(1, 6)]
    kw = dict(n_sources=2, kinds=["attn"], scales=["clean"], progress=False, examples=0)
    a = sweep_layers(lab, prompts, **kw)
    b = sweep_layers(lab, prompts, remote="local", **kw)
    torch.testing.assert_close(a.get("compensation", "clean"), b.get("compensation", "clean"),
                               atol=0, rtol=0)


def test_remote_true_goes_through_nnsights_remote_backend(lab, monkeypatch):
    """remote=True builds nnsight's RemoteBackend; a fake NDIF runs the shipped request here."""
    seen = []

    def fake_server(self, tracer):
        seen.append(self.model_key)
        return local_backend.LocalSimulationBackend(lab.model)(tracer)

    monkeypatch.setattr(remote_backend.RemoteBackend, "__call__", fake_server)
    monkeypatch.setattr(type(lab.model), "to_model_key",
                        lambda self: "nnsight.modeling.transformers.TransformersModel:fake")
    rows = torch.randint(1, 512, (2, 6), generator=torch.Generator().manual_seed(2))
    here = lab.measure(rows, "3.0", method="resample", sources="shift")
    there = lab.on(True).measure(rows, "3.0", method="resample", sources="shift")
    assert seen and all(k.endswith(":fake") for k in seen)
    assert torch.equal(here.self_repair, there.self_repair)


def test_remote_argument_is_checked(lab):
    with pytest.raises(InvalidInputError, match="remote="):
        sweep_heads(lab, torch.ones(2, 4, dtype=torch.long), remote="cloud")
