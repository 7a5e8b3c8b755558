"""Tests for nbtools.corpus: reading the NLTK zips, tag stripping, the held-out split."""

from __future__ import annotations

import zipfile

import pytest

from nbtools import corpus
from nbtools.corpus import (
    DataNotFoundError,
    Document,
    default_data_dir,
    detokenize,
    iter_documents,
    iter_text_files,
    split_documents,
    strip_tags,
)


def _write_zip(path, members: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)


@pytest.fixture
def fake_data(tmp_path):
    """A data folder with two small corpora in NLTK's layout."""
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    _write_zip(
        corpora / "brown.zip",
        {
            "brown/": "",
            "brown/README": "About the corpus.",
            "brown/cats.txt": "ca01 news",
            "brown/ca01": "\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n"
            "\tIt/pps did/dod n't/* 1/2/cd ./.\n\n\n\tNew/jj paragraph/nn ./.\n",
        },
    )
    _write_zip(
        corpora / "webtext.zip",
        {
            "webtext/README": "About.",
            "webtext/grail.txt": "SCENE 1:\r\nKING ARTHUR: Whoa there!\r\n\r\n\r\n\r\nEnd.\n",
        },
    )
    return tmp_path


def test_strip_tags():
    assert strip_tags(["The/at", "1/2/cd", "Atlanta's/np$", "bare"], "/") == [
        "The",
        "1/2",
        "Atlanta's",
        "bare",
    ]
    assert strip_tags(["I_PRP", "n't_RB", "a_b_NN", "__NN", "_UH"], "_") == ["I", "n't", "a_b", "_"]


def test_detokenize():
    words = ["``", "Only", "a", "handful", "''", ",", "the", "jury", "said", "."]
    assert detokenize(words) == '"Only a handful", the jury said.'
    assert detokenize(["I", "do", "n't", "know", "(", "yet", ")", "Jr.", "."]) == (
        "I don't know (yet) Jr."
    )
    assert detokenize(['"', "Hi", "!", '"', "she", "said", ".", ".", "."]) == '"Hi!" she said...'


def test_iter_documents_reads_zips(fake_data):
    docs = list(iter_documents(fake_data, corpora=["brown", "webtext"]))
    assert [doc.id for doc in docs] == ["brown/ca01", "webtext/grail"]
    brown, grail = docs
    assert brown.corpus == "brown"
    assert brown.text == 'The jury said "no". It didn\'t 1/2.\nNew paragraph.'
    assert grail.text == "SCENE 1:\nKING ARTHUR: Whoa there!\n\nEnd."


def test_missing_corpus_zip(fake_data):
    with pytest.raises(DataNotFoundError, match="abc.zip"):
        list(iter_documents(fake_data, corpora=["abc"]))


def test_long_documents_are_cut_into_parts(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("".join(f"Line number {i} of a long file.\n" for i in range(100)))
    parts = list(iter_text_files([path], max_chars=500))
    assert len(parts) > 1
    assert [doc.id for doc in parts][:2] == [
        f"{tmp_path.as_posix()}/long#000",
        f"{tmp_path.as_posix()}/long#001",
    ]
    assert all(len(doc.text) <= 500 for doc in parts)
    assert "\n".join(doc.text for doc in parts) == path.read_text().strip()


def test_iter_text_files_folder(tmp_path):
    folder = tmp_path / "stories"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes("caf\xe9\n".encode("cp1252"))
    (folder / "sub" / "b.txt").write_text("Second.\n")
    (folder / "skip.md").write_text("not text")
    docs = list(iter_text_files([folder]))
    assert docs == [Document("stories/a", "caf\xe9"), Document("stories/sub/b", "Second.")]


def test_split_is_deterministic_disjoint_and_about_three_percent():
    docs = [Document(f"corpus/doc{i:05d}", "text") for i in range(20_000)]
    train, heldout = split_documents(docs)
    train_rev, heldout_rev = split_documents(reversed(docs))
    assert {d.id for d in heldout} == {d.id for d in heldout_rev}
    assert {d.id for d in train} == {d.id for d in train_rev}
    assert not {d.id for d in train} & {d.id for d in heldout}
    assert len(train) + len(heldout) == len(docs)
    assert 0.025 < len(heldout) / len(docs) < 0.035


def test_default_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("NBTOOLS_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.setenv("NBTOOLS_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataNotFoundError, match="NBTOOLS_DATA"):
        default_data_dir()


def test_default_data_dir_missing(monkeypatch, tmp_path):
    monkeypatch.delenv("NBTOOLS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(corpus, "__file__", str(tmp_path / "pkg" / "corpus.py"))
    with pytest.raises(DataNotFoundError, match="shared/data"):
        default_data_dir()


def test_shared_corpora(data_dir):
    docs = list(iter_documents(data_dir))
    ids = [doc.id for doc in docs]
    assert len(ids) == len(set(ids))
    assert {doc.corpus for doc in docs} == set(corpus.CORPORA)
    by_id = {doc.id: doc for doc in docs}
    assert by_id["brown/ca01"].text.startswith(
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's"
    )
    tagged = [doc for doc in docs if doc.corpus in ("brown", "masc_tagged")]
    assert not any("/at " in doc.text or "_NN " in doc.text or "_DT " in doc.text for doc in tagged)
    assert not any(doc.id.lower().endswith(("readme", "cats", "categories")) for doc in docs)
    train, heldout = split_documents(docs)
    assert 0.02 < len(heldout) / len(docs) < 0.04
    assert not {d.id for d in train} & {d.id for d in heldout}
