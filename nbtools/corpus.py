"""Natural-English corpora for training and evaluating small language models.

Reads the NLTK corpus zips kept in the shared data folder (``<data_dir>/corpora/*.zip``)
and plain text files, yielding :class:`Document` objects with stable ids. Tagged corpora
(Brown, MASC) are turned back into readable text. :func:`split_documents` makes a
held-out split from a hash of each id, so it does not depend on file order.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CORPORA",
    "DataNotFoundError",
    "Document",
    "default_data_dir",
    "detokenize",
    "heldout_score",
    "iter_documents",
    "iter_text_files",
    "read_text",
    "split_documents",
    "strip_tags",
]

#: The NLTK corpora used by default, in reading order.
CORPORA = (
    "abc",
    "brown",
    "inaugural",
    "masc_tagged",
    "movie_reviews",
    "state_union",
    "webtext",
)

#: Tagged corpora and the separator between a word and its part-of-speech tag.
TAG_SEPARATORS = {"brown": "/", "masc_tagged": "_"}

#: Documents longer than this many characters are cut into parts at paragraph breaks.
DEFAULT_MAX_CHARS = 32_000

#: Default fraction of documents held out from training.
HELDOUT_FRACTION = 0.03

_SKIPPED_NAMES = re.compile(r"^(readme|contents|licen[cs]e|cats|categories)(\.txt)?$", re.I)
_ENV_VAR = "NBTOOLS_DATA"


class DataNotFoundError(FileNotFoundError):
    """The shared data folder (or a file in it) cannot be found."""


@dataclass(frozen=True)
class Document:
    """One document: a stable id such as ``"brown/ca01"`` and its text."""

    id: str
    text: str

    @property
    def corpus(self) -> str:
        """The corpus name, the first component of the id."""
        return self.id.split("/", 1)[0]


def default_data_dir() -> Path:
    """Find the shared data folder.

    Looks at ``$NBTOOLS_DATA`` first, then for ``shared/data`` next to the repository
    (walking up from the working directory and from this package).
    """
    env = os.environ.get(_ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"${_ENV_VAR} is set to {env!r}, which is not a directory.")
        return path
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data"
            if (candidate / "corpora").is_dir():
                return candidate
    raise DataNotFoundError(
        "Cannot find the shared data folder. Put it at ../shared/data next to the "
        f"repository root (with a corpora/ subfolder holding the NLTK zips), or set "
        f"${_ENV_VAR} to its path."
    )


def read_text(raw: bytes) -> str:
    """Decode bytes as UTF-8, falling back to Windows-1252 and then Latin-1."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def strip_tags(tokens: Iterable[str], separator: str) -> list[str]:
    """Drop the ``<separator>TAG`` suffix of each tagged token (``"dog/nn"`` -> ``"dog"``).

    Tokens that are only a tag (an empty word, as in ``"_NN"``) are dropped; untagged
    tokens are kept as they are.
    """
    words = []
    for token in tokens:
        word, sep, _tag = token.rpartition(separator)
        if not sep:
            words.append(token)
        elif word:
            words.append(word)
    return words


_ATTACH_LEFT = {",", ".", ";", ":", "!", "?", "%", ")", "]", "}", "...", "'"}
_CLITICS = {"n't", "'s", "'m", "'re", "'ve", "'ll", "'d"}
_ATTACH_RIGHT = {"(", "[", "{", "$", "#"}


def detokenize(words: Iterable[str]) -> str:
    """Join word tokens into readable text (spacing around punctuation, quotes, clitics)."""
    out: list[str] = []
    glue_next = True  # no space before the first word
    quote_open = False
    for word in words:
        if word in ("``", "''", '"'):
            opening = word == "``" or (word == '"' and not quote_open)
            quote_open = opening
            if opening:
                if not glue_next:
                    out.append(" ")
                out.append('"')
                glue_next = True
            else:
                out.append('"')
                glue_next = False
            continue
        if word == "." and out and out[-1].endswith(".") and out[-1].strip("."):
            continue  # "Jr." followed by the sentence's full stop
        attach = word in _ATTACH_LEFT or word.lower() in _CLITICS
        if not (glue_next or attach):
            out.append(" ")
        out.append(word)
        glue_next = word in _ATTACH_RIGHT
    return "".join(out)


def _untag(text: str, separator: str) -> str:
    """Readable text from a tagged corpus file: lines are sentences, blank lines paragraphs."""
    paragraphs: list[list[str]] = [[]]
    for line in text.splitlines():
        tokens = line.split()
        if tokens:
            paragraphs[-1].extend(strip_tags(tokens, separator))
        elif paragraphs[-1]:
            paragraphs.append([])
    return "\n".join(detokenize(words) for words in paragraphs if words)


def _clean(text: str) -> str:
    """Normalise newlines, strip trailing spaces and runs of blank lines."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _split_long(doc_id: str, text: str, max_chars: int | None) -> Iterator[Document]:
    """Yield the document, or numbered parts (``id#000``) cut at line breaks if it is long."""
    if not max_chars or len(text) <= max_chars:
        yield Document(doc_id, text)
        return
    part: list[str] = []
    size = 0
    index = 0
    for paragraph in re.split(r"(?<=\n)", text):
        if part and size + len(paragraph) > max_chars:
            yield Document(f"{doc_id}#{index:03d}", "".join(part).strip())
            index += 1
            part, size = [], 0
        part.append(paragraph)
        size += len(paragraph)
    if part:
        yield Document(f"{doc_id}#{index:03d}", "".join(part).strip())


def _member_id(name: str) -> str:
    return name[:-4] if name.endswith(".txt") else name


def _is_text_member(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return bool(base) and not name.endswith("/") and not _SKIPPED_NAMES.match(base)


def iter_documents(
    data_dir: str | os.PathLike | None = None,
    corpora: Iterable[str] = CORPORA,
    max_chars: int | None = DEFAULT_MAX_CHARS,
) -> Iterator[Document]:
    """Yield the documents of the NLTK corpus zips in ``<data_dir>/corpora``.

    Members are read in sorted order; README, licence and category files are skipped.
    Ids are the member path without ``.txt`` (``"brown/ca01"``, ``"abc/science#004"``
    for a part of a long file).
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    for corpus in corpora:
        path = root / "corpora" / f"{corpus}.zip"
        if not path.is_file():
            raise DataNotFoundError(f"Missing corpus zip {path}.")
        separator = TAG_SEPARATORS.get(corpus)
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if not _is_text_member(name):
                    continue
                text = read_text(archive.read(name))
                text = _untag(text, separator) if separator else _clean(text)
                if text:
                    yield from _split_long(_member_id(name), text, max_chars)


def iter_text_files(
    paths: Iterable[str | os.PathLike], max_chars: int | None = DEFAULT_MAX_CHARS
) -> Iterator[Document]:
    """Yield documents from plain text files; a folder contributes its ``*.txt`` files.

    A file's id is its path as given (for files found in a folder: the folder's name
    joined with the relative path), without ``.txt``.
    """
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files = [
                (f, f"{path.name}/{f.relative_to(path).as_posix()}")
                for f in sorted(path.rglob("*.txt"))
            ]
        elif path.is_file():
            files = [(path, path.as_posix())]
        else:
            raise DataNotFoundError(f"No such file or folder: {path}")
        for file, name in files:
            text = _clean(read_text(file.read_bytes()))
            if text:
                yield from _split_long(_member_id(name), text, max_chars)


def heldout_score(doc_id: str, salt: str = "nbtools-heldout-v1") -> float:
    """A number in [0, 1) derived from a hash of the id; low scores are held out."""
    digest = hashlib.sha256(f"{salt}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_documents(
    documents: Iterable[Document], heldout_fraction: float = HELDOUT_FRACTION
) -> tuple[list[Document], list[Document]]:
    """Split documents into ``(train, heldout)``, each document by a hash of its id."""
    train: list[Document] = []
    heldout: list[Document] = []
    for doc in documents:
        (heldout if heldout_score(doc.id) < heldout_fraction else train).append(doc)
    return train, heldout
