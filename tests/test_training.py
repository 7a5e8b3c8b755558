"""Tests for nbtools.training: the recipe end to end on a minuscule model and corpus."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from nbtools import files
from nbtools.corpus import Document, split_documents
from nbtools.embedded import load_from_dir, verify_dir
from nbtools.errors import OutputError
from nbtools.training import (
    ARTIFACT_FILES,
    EOT,
    Batches,
    TrainConfig,
    encode_documents,
    heldout_loss,
    main,
    train_tiny,
)

TINY = dict(
    max_tokens=300 * 8 * 32,
    vocab_size=400,
    n_layer=1,
    n_head=2,
    n_embd=32,
    n_positions=64,
    seq_len=32,
    batch_size=8,
    heldout_fraction=0.15,
    subset_tokens=300,
    log_every=50,
    checkpoint_every=100,
)


def _toy_documents(count: int = 40, seed: int = 0) -> list[Document]:
    """Documents of simple English sentences from a small grammar."""
    rng = random.Random(seed)
    subjects = ["The cat", "A dog", "My friend", "The old man", "Her sister", "The teacher"]
    verbs = ["saw", "liked", "found", "called", "helped", "followed"]
    objects = ["the bird", "a small house", "the red car", "his brother", "the river"]
    endings = ["yesterday", "in the morning", "at home", "again", "with care"]
    docs = []
    for index in range(count):
        sentences = [
            f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} "
            f"{rng.choice(endings)}."
            for _ in range(rng.randint(20, 60))
        ]
        docs.append(Document(f"toy/doc{index:03d}", " ".join(sentences)))
    return docs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Minuscule models run fastest (and most predictably on a busy machine) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One minuscule training run: ``(out_dir, card, log_lines)``."""
    out = tmp_path_factory.mktemp("tiny-run")
    lines: list[str] = []
    card = train_tiny(out, documents=_toy_documents(), log=lines.append, **TINY)
    return out, card, lines


def test_split_of_toy_documents_has_heldout():
    train, heldout = split_documents(_toy_documents(), TINY["heldout_fraction"])
    assert train and heldout


def test_loss_goes_down(run):
    _, card, lines = run
    curve = [loss for _, loss in card["loss_curve"]]
    assert curve[-1] < curve[0] - 1.0
    assert card["heldout_loss"] < card["unigram_heldout_loss"] - 0.3
    assert abs(card["heldout_loss"] - card["heldout_loss_float32"]) < 0.01
    assert any(line.startswith("step 300/300") and "tok/s" in line for line in lines)
    assert card["steps"] == 300 and card["tokens_seen"] == 300 * 8 * 32


def test_files_load_with_transformers(run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, card, _ = run
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert type(model).__name__ == "GPT2LMHeadModel"
    eot = tokenizer.convert_tokens_to_ids(EOT)
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id == eot
    assert model.config.n_layer == 1 and model.config.vocab_size == len(tokenizer)
    assert model.config.resid_pdrop == model.config.embd_pdrop == model.config.attn_pdrop == 0
    text = "The cat saw the bird."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    saved = json.loads((out / "card.json").read_text())
    assert saved == json.loads(json.dumps(card))
    assert "Greedy continuations" in (out / "MODEL_CARD.md").read_text()


def test_loader_reproduces_heldout_loss(run):
    out, card, _ = run
    assert verify_dir(out)["sha256"] == card["sha256"]
    model, tokenizer = load_from_dir(out)
    assert not model.training
    docs = {doc.id: doc for doc in _toy_documents()}
    subset = [docs[doc_id] for doc_id in card["heldout_subset"]["ids"]]
    loss, tokens = heldout_loss(model, tokenizer, subset, seq_len=TINY["seq_len"])
    assert tokens == card["heldout_subset"]["tokens"]
    assert loss == pytest.approx(card["heldout_subset"]["loss"], abs=1e-3)


def test_interrupted_run_resumes_exactly(run, tmp_path):
    out, card, _ = run

    class Interrupt(Exception):
        pass

    def stop_at_150(line: str) -> None:
        if line.startswith("step 150/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_tiny(tmp_path, documents=_toy_documents(), log=stop_at_150, **TINY)
    lines: list[str] = []
    resumed = train_tiny(tmp_path, documents=_toy_documents(), log=lines.append, **TINY)
    assert "resuming from step 100" in lines
    assert resumed["sha256"] == card["sha256"]
    assert resumed["loss_curve"] == card["loss_curve"]


def test_finished_run_is_not_retrained(run):
    out, card, _ = run
    lines: list[str] = []
    again = train_tiny(out, documents=_toy_documents(), log=lines.append, **TINY)
    assert "resuming from step 300" in lines
    assert not any(line.startswith("step ") for line in lines)
    assert again["sha256"] == card["sha256"]
    with pytest.raises(ValueError, match="other settings"):
        train_tiny(out, documents=_toy_documents(), log=lines.append, **{**TINY, "seed": 1})


def test_schedule():
    config = TrainConfig()
    assert config.total_steps == 8_300_000 // 2048
    assert config.effective_warmup == 300
    assert config.lr_at(0) == pytest.approx(1e-3 / 300)
    assert config.lr_at(299) == pytest.approx(1e-3)
    assert config.lr_at(config.total_steps - 1) == pytest.approx(1e-4)
    lrs = [config.lr_at(step) for step in range(300, config.total_steps)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_batches_cover_each_epoch_once():
    stream = np.arange(32 * 20 + 5, dtype=np.uint32)
    batches = Batches(stream, seq_len=32, batch_size=4, seed=3)
    epoch_rows = batches.rows_per_epoch // 4
    starts = []
    for step in range(epoch_rows):
        inputs, targets = batches[step]
        assert torch.equal(inputs[:, 1:], targets[:, :-1])
        starts += inputs[:, 0].tolist()
    assert len(set(starts)) == len(starts)
    assert torch.equal(Batches(stream, 32, 4, seed=3)[7][0], batches[7][0])


def test_heldout_loss_predicts_each_token_once(run):
    out, _, _ = run
    model, tokenizer = load_from_dir(out)
    docs = _toy_documents(3, seed=5)
    _, tokens = heldout_loss(model, tokenizer, docs, seq_len=16, batch_size=3)
    assert tokens == len(encode_documents(tokenizer, docs)) - len(docs)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--tokens" in capsys.readouterr().out


def test_cli_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "nbtools.training", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "nbtools train-tiny" in done.stdout


def test_run_leaves_no_temporary_files(run):
    out, _, _ = run
    assert sorted(p.name for p in out.iterdir()) == sorted([*ARTIFACT_FILES, "work"])
    assert sorted(p.name for p in (out / "work").iterdir()) == [
        "checkpoint.pt",
        "train_tokens.npy",
    ]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_folder_files_replace_each_file(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    (tmp_path / "keep.txt").write_text("kept")
    with files.atomic_folder_files(tmp_path) as staging:
        assert staging.parent == tmp_path
        (staging / "a.txt").write_text("new")
        (staging / "b.txt").write_text("b")
        (staging / "b.txt").chmod(0o600)  # as a writer using mkstemp leaves it
        assert (tmp_path / "a.txt").read_text() == "old"  # nothing moves before the block ends
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "keep.txt"]
    assert (tmp_path / "a.txt").read_text() == "new" and (tmp_path / "keep.txt").read_text() == "kept"
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_folder_files_leave_nothing_on_failure(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="writer broke"):
        with files.atomic_folder_files(tmp_path / "model") as staging:
            (staging / "a.txt").write_text("half")
            raise RuntimeError("writer broke")
    assert list((tmp_path / "model").iterdir()) == []
    with pytest.raises(OutputError, match="cannot write into .*a.txt"):
        with files.atomic_folder_files(tmp_path / "a.txt"):
            pass
    assert (tmp_path / "a.txt").read_text() == "old"
