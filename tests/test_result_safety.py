"""No result is lost or silently wrong: one writer per result file, checksums on every array."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import make_lab, random_rows
from safetensors import safe_open

from nbtools.sweeps import ResultFileError, load_result, store, sweep_heads

KW = dict(heads=["1.0", "2.1"], batch_rows=2, progress=False, checkpoint_every=0)
TESTS = Path(__file__).resolve().parent

# One writer: builds its Lab, says it is ready, waits for "go", then sweeps into `out` with
# `method`; its first batch is slowed down so that both writers are inside the sweep at once.
WRITER = """
import sys, time
from pathlib import Path
import torch
from conftest import make_lab
from nbtools.sweeps import ResultFileError, sweep_heads
out, method, ready, go = sys.argv[1:5]
lab = make_lab("gpt2")
real = type(lab).measure_many
calls = []
def slow(self, *a, **k):
    calls.append(1)
    time.sleep(1.5)
    return real(self, *a, **k)
type(lab).measure_many = slow
rows = torch.randint(1, 512, (4, 10), generator=torch.Generator().manual_seed(3))
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.01)
try:
    sweep_heads(lab, rows, method=method, out=out, heads=["1.0"], batch_rows=2,
                progress=False, checkpoint_every=0)
    print("WROTE", method)
except ResultFileError as err:
    print(f"REFUSED after {len(calls)} measurements: {err}")
"""


@pytest.fixture(scope="module")
def lab():
    return make_lab("gpt2")


@pytest.fixture(scope="module")
def rows():
    return random_rows(4, 10)


@pytest.fixture(scope="module")
def result_file(lab, rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("safety") / "heads.safetensors"
    sweep_heads(lab, rows, out=path, **KW)
    return path


def test_two_writers_started_at_once_one_is_refused_at_once(tmp_path):
    """Two processes, different settings (resample vs zero), same file, same moment."""
    out, go = tmp_path / "heads.safetensors", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(out), method,
                               str(tmp_path / f"ready-{method}"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for method in ("resample", "zero")]
    deadline = time.time() + 240
    while not all((tmp_path / f"ready-{m}").exists() for m in ("resample", "zero")):
        assert time.time() < deadline and all(p.poll() is None for p in procs), \
            [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()
    outputs = [p.communicate(timeout=240) for p in procs]
    lines = [o.strip().splitlines()[-1] if o.strip() else e for o, e in outputs]
    wrote = [line for line in lines if line.startswith("WROTE")]
    refused = [line for line in lines if line.startswith("REFUSED")]
    assert len(wrote) == 1 and len(refused) == 1, lines
    assert "another sweep (process" in refused[0] and "is writing" in refused[0]
    assert str(out) in refused[0]
    assert refused[0].startswith("REFUSED after 0 measurements")  # at once
    res = load_result(out)
    assert res.complete and res.settings["method"] == wrote[0].split()[1]
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob(".*.tmp"))


def test_a_second_writer_in_the_same_process_is_refused(lab, rows, tmp_path):
    out = tmp_path / "heads.safetensors"
    errors = []
    with store.locked(out):  # as a sweep running in another thread holds it
        def other():
            try:
                sweep_heads(lab, rows, out=out, **KW)
            except ResultFileError as err:
                errors.append(str(err))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert errors and "is writing" in errors[0] and "choose another out=" in errors[0]
    assert not out.exists()
    sweep_heads(lab, rows, out=out, **KW)  # free again once released
    assert load_result(out).complete and not list(tmp_path.glob("*.lock"))


def test_the_lock_is_released_when_a_sweep_fails(lab, rows, tmp_path, monkeypatch):
    out = tmp_path / "heads.safetensors"

    def boom(*_, **__):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(type(lab), "measure_many", boom)
        with pytest.raises(KeyboardInterrupt):
            sweep_heads(lab, rows, out=out, **KW)
    assert not list(tmp_path.glob("*.lock"))
    assert sweep_heads(lab, rows, out=out, **KW).complete


def test_saving_a_result_onto_a_file_being_written_is_refused(result_file, tmp_path):
    res = load_result(result_file)
    target = tmp_path / "copy.safetensors"
    with store.locked(target), pytest.raises(ResultFileError, match="is writing"):
        res.save(target)
    res.save(target)
    a, b = target.read_bytes(), result_file.read_bytes()
    assert a == b, (a[:300], b[:300])


def _array_span(path: Path, name: str) -> tuple[int, int]:
    """Byte range [start, end) of array `name` in a safetensors file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    info = json.loads(raw[8: 8 + n])[name]
    return 8 + n + info["data_offsets"][0], 8 + n + info["data_offsets"][1]


def test_a_flipped_byte_inside_an_array_is_detected(result_file, tmp_path):
    bad = tmp_path / "flipped.safetensors"
    raw = bytearray(result_file.read_bytes())
    start, end = _array_span(result_file, "stat/all/self_repair/mean")
    raw[(start + end) // 2] ^= 0x40
    bad.write_bytes(bytes(raw))
    with safe_open(str(bad), "pt") as f:  # still a valid safetensors file
        assert not torch.equal(f.get_tensor("stat/all/self_repair/mean"),
                               load_result(result_file).stats["stat/all/self_repair/mean"])
    with pytest.raises(ResultFileError, match=r"is damaged: array\(s\) stat/all/self_repair/mean "
                                              "do not match the checksums"):
        load_result(bad)


def test_a_changed_header_is_detected(result_file, tmp_path):
    bad = tmp_path / "header.safetensors"
    raw = result_file.read_bytes()
    assert raw.count(b'\\"seed\\": 0') == 1
    bad.write_bytes(raw.replace(b'\\"seed\\": 0', b'\\"seed\\": 7'))
    with pytest.raises(ResultFileError, match="header does not match its checksum"):
        load_result(bad)


def test_a_file_without_checksums_is_refused_clearly(result_file, tmp_path):
    from safetensors.torch import save_file

    old = tmp_path / "old.safetensors"
    tensors, header = store.read(result_file)
    header = {**header, "format": 1}
    del header["checksums"]
    save_file(tensors, str(old), metadata={"nbtools": json.dumps(header)})
    with pytest.raises(ResultFileError, match="older nbtools .result format 1, without checksums"):
        load_result(old)


def test_out_is_a_folder_or_a_foreign_file(lab, rows, tmp_path):
    with pytest.raises(ResultFileError, match="is a folder; give a result file name such as"):
        sweep_heads(lab, rows, out=tmp_path, **KW)
    with pytest.raises(ResultFileError, match="is a folder, not a result file"):
        load_result(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("my notes")
    with pytest.raises(ResultFileError, match="not a readable nbtools result file.*"
                                              "overwrite=True / --overwrite to replace it"):
        sweep_heads(lab, rows, out=text, **KW)
    assert text.read_text() == "my notes"


def test_a_settings_diff_is_short(lab, rows, result_file):
    with pytest.raises(ResultFileError, match="different settings") as info:
        sweep_heads(lab, rows[:2], out=result_file, **{**KW, "heads": "all"})
    message = str(info.value)
    assert "n_rows: 4 → 2" in message and "heads" in message
    assert len(message) < 500 and "L3H3" not in message, message


def test_checksum_of_a_strided_size_one_view():
    """A [1]-shaped view with a stride (a slice of a wider tensor) is hashed like its copy."""
    wide = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    view = wide.t()[0, 1:]  # shape [1], stride 3
    assert view.stride() == (3,)
    assert store.array_sha256(view) == store.array_sha256(view.clone())
