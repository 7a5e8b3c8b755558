"""Tests for nbtools.embedded: the shipped model loads offline, checks its files, and
reproduces the held-out loss recorded in its card."""

from __future__ import annotations

import shutil

import pytest

from nbtools.corpus import iter_documents, split_documents
from nbtools.embedded import (
    EMBEDDED_MODELS,
    EmbeddedModelError,
    embedded_dir,
    load_embedded,
    load_from_dir,
    read_card,
)
from nbtools.training import ARTIFACT_FILES, heldout_loss


@pytest.fixture(scope="module")
def tiny():
    """The shipped tiny model (loaded from local files only), its tokenizer and card."""
    model, tokenizer = load_embedded("tiny")
    return model, tokenizer, read_card(embedded_dir("tiny"))


def test_shipped_files_are_complete():
    assert "tiny" in EMBEDDED_MODELS
    folder = embedded_dir("tiny")
    for name in ARTIFACT_FILES:
        assert (folder / name).is_file(), name
    assert (folder / "model.safetensors").stat().st_size < 25_000_000


def test_card_numbers(tiny):
    _, _, card = tiny
    assert card["heldout_loss"] < card["unigram_heldout_loss"] - 1.0
    assert abs(card["heldout_loss"] - card["heldout_loss_float32"]) < 0.01
    assert card["tokens_seen"] == card["steps"] * 16 * 128
    assert card["recipe"]["vocab_size"] == 8192 and card["recipe"]["n_layer"] == 6


def test_loads_offline_in_eval_mode(tiny):
    model, tokenizer, card = tiny
    assert not model.training
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.config.n_layer == 6 and model.config.n_head == 8 and model.config.n_embd == 256
    assert len(tokenizer) == card["vocab_size"] == model.config.vocab_size
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == "<|endoftext|>"


def test_reproduces_recorded_heldout_loss(tiny, data_dir):
    model, tokenizer, card = tiny
    subset = card["heldout_subset"]
    _, heldout = split_documents(iter_documents(data_dir), card["recipe"]["heldout_fraction"])
    by_id = {doc.id: doc for doc in heldout}
    assert set(subset["ids"]) <= set(by_id), "subset documents must be held out"
    docs = [by_id[doc_id] for doc_id in subset["ids"]]
    loss, tokens = heldout_loss(model, tokenizer, docs, seq_len=card["recipe"]["seq_len"])
    assert tokens == subset["tokens"]
    assert loss == pytest.approx(subset["loss"], abs=2e-3)


def test_unknown_name():
    with pytest.raises(EmbeddedModelError, match="available: tiny"):
        load_embedded("huge")


@pytest.fixture
def copy_of_tiny(tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(embedded_dir("tiny"), folder)
    return folder


def test_corrupted_weights_raise(copy_of_tiny):
    weights = copy_of_tiny / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(EmbeddedModelError, match="model.safetensors is corrupted") as info:
        load_from_dir(copy_of_tiny)
    assert "nbtools train-tiny" in str(info.value)


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "card.json"])
def test_missing_file_raises(copy_of_tiny, name):
    (copy_of_tiny / name).unlink()
    with pytest.raises(EmbeddedModelError, match=f"{name} is missing") as info:
        load_from_dir(copy_of_tiny)
    assert "nbtools train-tiny" in str(info.value)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(EmbeddedModelError, match="does not exist"):
        load_from_dir(tmp_path / "absent")
