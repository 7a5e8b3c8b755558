"""Remote runs (NDIF), tested offline so that they fail where NDIF would.

`ndif_standin.py` is a stand-in NDIF server in its own interpreter, on localhost: nbtools is
not importable there, every request is unpickled under NDIF's pinned deserialization
whitelist and runs with its import whitelist, and it speaks the endpoints nnsight's own
`RemoteBackend` uses (websocket status stream, POST /request, inline or downloaded results),
so `remote="http://127.0.0.1:PORT"` goes through nnsight's real client code. A remote Lab
holds no weights (the meta device); the stand-in serves the same folder a local Lab loads, so
the numbers must be the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickletools
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import word_tokenizer
from ndif_whitelist import DESERIALIZATION_EXTRA, EXECUTION, allowed
from reference import make_gpt2, make_llama, make_neox

import nbtools
from nbtools import AttnLayer, Head, InvalidInputError, MLPLayer, Neurons
from nbtools.remote import RemoteRunError
from nbtools.sweeps import repair_map, sweep_heads, sweep_layers

STANDIN = Path(__file__).with_name("ndif_standin.py")
BUILDERS = {"gpt2": make_gpt2, "neox": lambda: make_neox(parallel=True),
            "llama_gqa_vbias": lambda: make_llama(gqa=True, bias=True)}


@contextlib.contextmanager
def standin(folder: Path, workdir: Path, *args: str):
    """Run the stand-in server on `folder`; yields (url, log) — log: its JSON lines so far."""
    ready = workdir / f"ready-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-I", str(STANDIN), "--model", str(folder),
                             "--ready", str(ready), *args], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: list[dict] = []
    reader = threading.Thread(target=lambda: [log.append(json.loads(line))
                                              for line in proc.stdout if line.startswith("{")],
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stand-in did not start: {proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{ready.read_text()}", log
    finally:
        proc.terminate()
        proc.wait(10)


def local_lab(folder: Path):
    """The folder's model, here, with eager attention as NDIF (and the stand-in) run it."""
    lab = nbtools.load(str(folder))
    lab.hf_model.set_attn_implementation("eager")
    return lab


def save_model(family: str, folder: Path) -> Path:
    BUILDERS[family]().save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """{family: (local Lab, remote Lab, server log)} for three families, one server each."""
    out, stack = {}, contextlib.ExitStack()
    env = stack.enter_context(pytest.MonkeyPatch.context())
    env.setenv("NBTOOLS_CACHE", str(tmp_path_factory.mktemp("cache")))  # remote constants
    for family in BUILDERS:
        folder = save_model(family, tmp_path_factory.mktemp(family))
        url, log = stack.enter_context(standin(folder, folder.parent))
        local = local_lab(folder)
        remote = nbtools.load(str(folder), remote=url)
        remote.weights()  # the constants: one request, once
        out[family] = (local, remote, log)
    with stack:
        yield out


@pytest.fixture()
def requests_sent(monkeypatch):
    """Every request payload nnsight serialises (bytes, as sent)."""
    from nnsight.schema.request import RequestModel

    blobs: list[bytes] = []
    real = RequestModel.serialize.__func__

    def recording(cls, tracer, compress=False):
        blob = real(cls, tracer, compress)
        blobs.append(zstd_decompress(blob) if compress else blob)
        return blob

    monkeypatch.setattr(RequestModel, "serialize", classmethod(recording))
    return blobs


def zstd_decompress(blob: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(blob)


def modules_named(blob: bytes) -> set[str]:
    """Every module a pickle names, read from its opcodes (nothing is imported or built):
    STACK_GLOBAL takes the two strings pushed just before it, directly or from the memo."""
    names: set[str] = set()
    pushed: list = []
    memo: dict = {}
    for op, arg, _ in pickletools.genops(blob):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            pushed.append(arg)
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(arg))
        elif op.name == "STACK_GLOBAL":
            names.add(pushed[-2])
            pushed.append(None)
        elif op.name == "GLOBAL":
            names.add(arg.split(" ")[0])
            pushed.append(None)
        else:
            pushed.append(None)
    return {n for n in names if isinstance(n, str)}


def assert_same(a, b, atol=0.0):
    for name, value in a.tensors().items():
        other = b.tensors()[name]
        assert value.shape == other.shape, name
        if value.is_floating_point():
            gap = float((value - other).abs().max()) if value.numel() else 0.0
            assert gap <= atol, (a.label, name, gap)
        else:
            assert torch.equal(value, other), (a.label, name)


ROWS = [[5, 9, 2, 8, 3, 1, 7, 4], [3, 3, 8, 1, 9, 6, 2, 5], [7, 1, 4, 4, 2, 9, 8, 3]]
CASES = {
    "heads, zero, all positions": dict(ablations=[Head(1, 2), Head(3, 0)], method="zero"),
    "attn layer, mean, final, top": dict(ablations=[AttnLayer(2)], method="mean",
                                         positions="final", target="top", logprobs=True),
    "mlp + neurons, resample shift": dict(ablations=[MLPLayer(1), Neurons(2, (3, 40))],
                                          method="resample", sources="shift", neurons=True),
    "set, resample sources, no suffix": dict(ablations=[(Head(0, 1), MLPLayer(2))],
                                             method="resample", sources=[[9, 8, 7, 6, 5, 4, 3, 2]],
                                             suffix_reuse=False, positions=[2, 5]),
    "logit difference, unfolded": dict(ablations=[Head(2, 3)], target=(5, 9), measure_at=[4, 6],
                                       fold_value_biases=False),
}


@pytest.mark.parametrize("family", list(BUILDERS))
@pytest.mark.parametrize("case", list(CASES))
def test_remote_numbers_equal_local_ones(served, requests_sent, family, case):
    local, remote, log = served[family]
    kw = dict(CASES[case])
    ablations = kw.pop("ablations")
    here = local.measure_scales(ROWS, ablations, **kw)
    before = len(log)
    there = remote.measure_scales(ROWS, ablations, **kw)
    assert len(requests_sent) == 1  # one request per call
    for scale in here:
        for a, b in zip(here[scale], there[scale], strict=True):
            assert_same(a, b)
    assert len(log) == before + 1 and "error" not in log[-1]


def test_requests_name_no_nbtools_module(served, requests_sent):
    local, remote, _ = served["gpt2"]
    remote.measure(ROWS, Head(1, 1), method="resample", sources="shift", neurons=True,
                   logprobs=True)
    remote.attention_pattern(ROWS, 2)
    assert requests_sent
    for blob in requests_sent:
        names = modules_named(blob)
        assert not [n for n in names if n.split(".")[0] == "nbtools"], names
        refused = [n for n in names if not allowed(n, EXECUTION + DESERIALIZATION_EXTRA)]
        assert not refused, refused


def test_clean_run_attention_and_weights_remotely(served):
    local, remote, _ = served["llama_gqa_vbias"]
    assert_same(local.measure_clean(ROWS, top_k=3), remote.measure_clean(ROWS, top_k=3))
    for a, b in zip(local.attention_pattern(ROWS, 1), remote.attention_pattern(ROWS, 1),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    for name in ("gamma", "W_U_mean", "b_O", "b_out", "c_V", "c_V_W_O"):
        torch.testing.assert_close(getattr(remote.weights(), name), getattr(local.weights(), name))


def test_sweeps_remotely(served, tmp_path):
    local, remote, log = served["gpt2"]
    rows = torch.randint(1, 512, (4, 8), generator=torch.Generator().manual_seed(1))
    kw = dict(heads="2.*", batch_rows=2, anti_erasure=["3.1"], progress=False)
    here = sweep_heads(local, rows, out=tmp_path / "here.safetensors", **kw)
    there = sweep_heads(local, rows, out=tmp_path / "there.safetensors", remote=remote.remote,
                        **kw)
    for key, value in here.stats.items():
        torch.testing.assert_close(there.stats[key], value, equal_nan=True, atol=0, rtol=0)
    prompts = [f"w{i} w{i + 7} w{i + 3} w{2 * i + 1}" for i in range(1, 6)]
    kw = dict(n_sources=2, kinds=["attn"], scales=["clean"], progress=False, examples=0)
    a, b = sweep_layers(local, prompts, **kw), sweep_layers(remote, prompts, **kw)
    torch.testing.assert_close(a.get("compensation", "clean"), b.get("compensation", "clean"),
                               atol=0, rtol=0)
    kw = dict(rows="3.*", n_rows=2, row_len=6, batch_rows=2, progress=False)
    a, b = repair_map(local, rows, **kw), repair_map(remote, rows, **kw)
    torch.testing.assert_close(a.map("all"), b.map("all"), equal_nan=True, atol=0, rtol=0)


def test_local_simulation_is_one_request_and_identical(served, monkeypatch):
    from nnsight.intervention.backends import local as local_backend

    calls = []
    real = local_backend.LocalSimulationBackend.__call__
    monkeypatch.setattr(local_backend.LocalSimulationBackend, "__call__",
                        lambda self, tracer: (calls.append(1), real(self, tracer))[1])
    local, _, _ = served["neox"]
    kw = dict(method="resample", sources="shift", neurons=True, logprobs=True)
    here = local.measure_many(ROWS, ["1.2", "mlp2"], **kw)
    there = local.on("local").measure_many(ROWS, ["1.2", "mlp2"], **kw)
    assert len(calls) == 1
    for a, b in zip(here, there, strict=True):
        assert_same(a, b)
    calls.clear()
    local.measure(ROWS, "0.1", method="zero")  # the Lab itself still runs here
    assert calls == []


def test_a_labs_remote_setting_never_leaks(served):
    """A remote sibling measuring on another thread leaves the local Lab local."""
    local, remote, log = served["gpt2"]
    sibling = local.on(remote.remote)
    before = len(log)
    thread = threading.Thread(target=lambda: sibling.measure(ROWS, Head(0, 0), method="zero"))
    thread.start()
    for _ in range(3):
        local.measure(ROWS, Head(1, 0), method="zero")
    thread.join()
    assert len(log) == before + 1 and local.remote is False


def test_downloaded_results(tmp_path):
    """Results bigger than the server's inline limit come back as a URL nnsight downloads."""
    folder = save_model("gpt2", tmp_path / "gpt2")
    local = local_lab(folder)
    with standin(folder, tmp_path, "--inline-limit", "0") as (url, log):
        remote = nbtools.load(str(folder), remote=url)
        assert_same(local.measure(ROWS, Head(2, 2), method="zero"),
                    remote.measure(ROWS, Head(2, 2), method="zero"))


@pytest.mark.parametrize("behaviour,timeout,message", [
    ("error", 60, "refuses every request"),
    ("silent", 3, "did not answer within 3 s"),
])
def test_server_failures_are_clear_errors(tmp_path, behaviour, timeout, message):
    folder = save_model("gpt2", tmp_path / "gpt2")
    with standin(folder, tmp_path, "--behaviour", behaviour) as (url, _):
        remote = nbtools.load(str(folder), remote=url).on(url, timeout=timeout)
        start = time.monotonic()
        with pytest.raises(RemoteRunError, match=message):
            remote.measure(ROWS, Head(1, 1), method="zero")
        assert time.monotonic() - start < timeout + 30


def test_missing_api_key_fails_before_anything_is_sent(tmp_path, monkeypatch, requests_sent):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "APIKEY", "")
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "HOST", "https://api.ndif.us")
    folder = save_model("gpt2", tmp_path / "gpt2")
    remote = nbtools.load(str(folder), remote=True)
    with pytest.raises(RemoteRunError, match="NDIF_API_KEY"):
        remote.measure(ROWS, Head(1, 1), method="zero")
    assert requests_sent == []


def test_remote_setting_is_checked():
    with pytest.raises(InvalidInputError, match="remote="):
        nbtools.load("tiny", remote="cloud")
    with pytest.raises(InvalidInputError, match="remote="):
        sweep_heads(nbtools.load("tiny"), torch.ones(2, 4, dtype=torch.long), remote=1)
    with pytest.raises(nbtools.UnsupportedModelError, match="hub id"):
        nbtools.load("tiny", remote=True)


# --- the Explorer, Compare and the CLI on a remote Lab ----------------------------------
PROMPT = "The Eiffel Tower is located in the city of Paris"


def _explorer_measurement(lab, ablation, n_tokens):
    return lab.measure(PROMPT, ablation, method="zero", target="top", measure_at=[n_tokens - 1],
                       neurons=True, logprobs=True, top_k=10)


def test_explorer_on_a_remote_lab(tmp_path, monkeypatch):
    """Each click is one request, its progress is shown while it waits (QUEUED, RUNNING and
    the time elapsed), clicks made meanwhile are coalesced into the latest one, and the
    numbers are the local ones."""
    from nbtools.widgets import Explorer

    monkeypatch.setenv("NBTOOLS_CACHE", str(tmp_path / "cache"))
    folder = save_model("gpt2", tmp_path / "gpt2")
    local = local_lab(folder)
    with standin(folder, tmp_path, "--queue-seconds", "1.5") as (url, log):
        remote = nbtools.load(str(folder), remote=url)
        remote.weights()
        ex = Explorer(remote, prompt=PROMPT, static_fallback=False)
        seen: list[str] = []
        ex.observe(lambda change: seen.append(change["new"]), names="remote_status")
        try:
            ex.wait(120)
            assert ex.error == "" and "on 127.0.0.1" in ex.model_name
            host = url.split("://")[1]
            assert f"queued on {host} · 1 s" in seen  # the 1.5 s wait, as it passes
            assert any(text.startswith(f"running on {host} · ") for text in seen)
            assert ex.remote_status == ""  # cleared once the answer is in
            n = len(local.to_str_tokens(PROMPT))
            before = len(log)
            for layer in range(4):  # one in flight, three while it waits: only the last runs
                ex.ablate(f"mlp{layer}")
                time.sleep(0.2)
            ex.wait(120)
            assert len(log) == before + 2 and ex.view["ablated_ui"] == ["mlp3"]
            assert_same(ex.measurement, _explorer_measurement(local, "mlp3", n), atol=1e-6)
            assert ex.measurement.neuron_de_clean is None  # N·L·d_mlp numbers: not per click
            assert "not fetched" in ex.view["neurons"]["note"]
        finally:
            ex.close()


def test_compare_on_remote_labs(served):
    from nbtools.widgets import Compare

    local, remote, log = served["gpt2"]
    here = Compare(local, right=dict(scale="recomputed"), prompt=PROMPT, ablate="2.1")
    there = Compare(remote, right=dict(scale="recomputed"), prompt=PROMPT, ablate="2.1")
    for a, b in zip(here.measurements, there.measurements, strict=True):
        assert_same(a, b)


def test_cli_remote_reaches_the_remote_path(served, tmp_path):
    """`nbtools sweep layers --remote URL` builds the model without weights and runs every
    measurement through the server; the numbers are the local ones."""
    local, remote, log = served["gpt2"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"w{i} w{i + 7} w{i + 3} w{2 * i + 1}" for i in range(1, 5)))
    before = len(log)
    out = tmp_path / "layers.safetensors"
    done = subprocess.run(
        [sys.executable, "-m", "nbtools.cli", "sweep", "layers", "--model", local.name,
         "--prompts", str(prompts), "--n-sources", "2", "--kinds", "attn", "--scales", "clean",
         "--examples", "0", "--remote", remote.remote, "--out", str(out), "--no-progress"],
        capture_output=True, text=True, env={**os.environ, "NBTOOLS_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(log) > before and not [e for e in log[before:] if "error" in e]
    here = sweep_layers(local, prompts.read_text().splitlines(), n_sources=2, kinds=["attn"],
                        scales=["clean"], examples=0, progress=False)
    there = nbtools.sweeps.load_result(out)
    torch.testing.assert_close(there.get("compensation", "clean"),
                               here.get("compensation", "clean"), atol=0, rtol=0)


# --- what travels -------------------------------------------------------------------------
def _llama_70b_shape(folder: Path) -> Path:
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                max_position_embeddings=131072, rms_norm_eps=1e-5).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


class _Captured(Exception):
    pass


def upload_bytes(lab, monkeypatch, call) -> int:
    """The compressed payload a call would send, captured instead of sent."""
    from nnsight.schema.request import RequestModel

    sizes = []

    class Capture:
        def __call__(self, tracer):
            sizes.append(len(RequestModel.serialize(tracer, compress=True)))
            raise _Captured

    monkeypatch.setattr("nbtools.lab.backend_for", lambda *a, **k: Capture())
    with contextlib.suppress(RemoteRunError):
        call()
    monkeypatch.undo()
    return sizes[0]


@pytest.mark.slow
def test_upload_budget_on_a_70b_shape(tmp_path, monkeypatch):
    """A Llama-3.1-70B-shaped model (meta device): ≤ 1 MB per call beyond the token ids."""
    from nbtools.effects import Weights

    lab = nbtools.load(str(_llama_70b_shape(tmp_path / "llama70b")), remote="http://127.0.0.1:9")
    L, d = lab.n_layers, lab.shape.d_model
    zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
    lab._weights = Weights(gamma=zeros(d), beta=zeros(d), W_U_mean=zeros(d), b_U_mean=zeros(()),
                           b_O=zeros(L, d), b_out=zeros(L, d), c_V=None, c_V_W_O=zeros(L, d))
    rows = torch.randint(1, 500, (8, 128), generator=torch.Generator().manual_seed(0))
    ids_bytes = 3 * rows.numel() * 8  # input ids, attention mask, a suffix's ids (int64)
    for call in (lambda: lab.measure_many(rows, [Head(40, h) for h in range(64)],
                                          method="resample", sources="shift"),
                 lambda: lab.measure(rows[:1, :16], AttnLayer(60), method="resample",
                                     sources=[[7] * 16], positions="final", target="top",
                                     logprobs=True)):
        assert upload_bytes(lab, monkeypatch, call) <= 1_000_000 + ids_bytes


@pytest.mark.slow
def test_download_budget_at_70b_depth_and_width(tmp_path):
    """What comes back depends on the sites N, layers L and heads H only (not d_model): on a
    random Llama with the 70B's 80 layers × 64 heads (narrow), one ablation's call returns
    ≤ 4·N·(L·H + L + 8 + E) float32-sized numbers (clean + ablated run, float64) + top-k."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "deep"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=80,
                                 num_attention_heads=64, num_key_value_heads=8, head_dim=2,
                                 vocab_size=512, max_position_embeddings=256)).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    rows = torch.randint(1, 500, (2, 24), generator=torch.Generator().manual_seed(0))
    with standin(folder, tmp_path) as (url, log):
        lab = nbtools.load(str(folder), remote=url)
        lab.weights()
        for call, n_sites, top_k in (
                (lambda: lab.measure(rows, Head(40, 3), method="resample", sources="shift"),
                 2 * 23, 0),
                (lambda: lab.measure(rows, AttnLayer(60), method="resample", sources="shift",
                                     positions="final", target="top", logprobs=True, top_k=10),
                 2, 10)):
            call()
            L, H, E = 80, 64, 1
            budget = 4 * 4 * n_sites * (L * H + L + 8 + E) + 2 * 8 * 2 * n_sites * top_k
            assert log[-1]["result_tensor_bytes"] <= budget, (log[-1], budget)


@pytest.mark.skipif(not os.environ.get("NDIF_API_KEY"), reason="opt-in: needs NDIF_API_KEY and "
                    "network access to NDIF (not available on the project's machines)")
def test_live_ndif():
    """The real thing: openai-community/gpt2 measured on NDIF equals the same model here up
    to bf16 (NDIF runs bfloat16)."""
    remote = nbtools.load("openai-community/gpt2", remote=True)
    prompt = "The Eiffel Tower is located in the city of"
    m = remote.measure(prompt, "9.6", method="zero", positions="final", target=" Paris",
                       logprobs=True)
    assert m.settings["dtype"] == "bfloat16" and torch.isfinite(m.self_repair).all()
    local = nbtools.load("openai-community/gpt2")
    here = local.measure(prompt, "9.6", method="zero", positions="final", target=" Paris")
    torch.testing.assert_close(m.logit_clean, here.logit_clean, atol=0.3, rtol=0.05)
