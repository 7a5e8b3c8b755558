"""Factual-recall prompts for the Hydra protocol: ROME's ``known_1000.json`` and our own set.

    facts = load_facts()                                   # the 40 embedded prompts
    facts = load_facts("path/to/known_1000.json", n=200)   # ROME's set (1,209 records)
    prompts = [f.prompt for f in facts]

The embedded prompts were written for nbtools: simple, unambiguous facts about well-known
places, people and things, each a subject followed by a relation, ending where the
attribute would start (the attribute is given with its leading space).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInputError

__all__ = ["FACTS", "Fact", "default_known_path", "load_facts", "load_known"]


@dataclass(frozen=True)
class Fact:
    """One factual prompt: `prompt` = the subject + relation; `attribute` = the true answer."""

    subject: str
    prompt: str
    attribute: str
    relation: str = ""


def _f(subject: str, template: str, attribute: str, relation: str) -> Fact:
    return Fact(subject, template.format(subject), attribute, relation)


#: Our embedded default set (40 prompts).
FACTS: tuple[Fact, ...] = (
    _f("The Eiffel Tower", "{} is located in the city of", " Paris", "located_in"),
    _f("The Colosseum", "{} is located in the city of", " Rome", "located_in"),
    _f("Big Ben", "{} is located in the city of", " London", "located_in"),
    _f("The Statue of Liberty", "{} is located in the city of", " New", "located_in"),
    _f("The Brandenburg Gate", "{} is located in the city of", " Berlin", "located_in"),
    _f("The Kremlin", "{} is located in the city of", " Moscow", "located_in"),
    _f("The Acropolis", "{} is located in the city of", " Athens", "located_in"),
    _f("The Sydney Opera House", "{} is located in the country of", " Australia", "country"),
    _f("The Taj Mahal", "{} is located in the country of", " India", "country"),
    _f("Mount Fuji", "{} is located in the country of", " Japan", "country"),
    _f("The Great Pyramid of Giza", "{} is located in the country of", " Egypt", "country"),
    _f("Machu Picchu", "{} is located in the country of", " Peru", "country"),
    _f("The capital of France", "{} is the city of", " Paris", "capital"),
    _f("The capital of Italy", "{} is the city of", " Rome", "capital"),
    _f("The capital of Japan", "{} is the city of", " Tokyo", "capital"),
    _f("The capital of Germany", "{} is the city of", " Berlin", "capital"),
    _f("The capital of Spain", "{} is the city of", " Madrid", "capital"),
    _f("The capital of Egypt", "{} is the city of", " Cairo", "capital"),
    _f("The capital of Russia", "{} is the city of", " Moscow", "capital"),
    _f("The capital of England", "{} is the city of", " London", "capital"),
    _f("People in Brazil mostly speak", "{}", " Portuguese", "language"),
    _f("People in Mexico mostly speak", "{}", " Spanish", "language"),
    _f("People in Germany mostly speak", "{}", " German", "language"),
    _f("People in France mostly speak", "{}", " French", "language"),
    _f("People in Italy mostly speak", "{}", " Italian", "language"),
    _f("People in China mostly speak", "{}", " Chinese", "language"),
    _f("William Shakespeare", "{} wrote his plays in the language of", " English", "language"),
    _f("Albert Einstein", "{} is famous for the theory of", " relativity", "field"),
    _f("Charles Darwin", "{} is famous for the theory of", " evolution", "field"),
    _f("Isaac Newton", "{} is famous for the law of", " gravity", "field"),
    _f("Wolfgang Amadeus Mozart", "{} was famous for writing", " music", "occupation"),
    _f("Pablo Picasso", "{} was famous as a", " painter", "occupation"),
    _f("The Amazon", "{} is a large river in South", " America", "continent"),
    _f("The Sahara", "{} is a large desert in North", " Africa", "continent"),
    _f("The Nile", "{} flows north through the country of", " Egypt", "country"),
    _f("The Thames", "{} flows through the city of", " London", "located_in"),
    _f("The Seine", "{} flows through the city of", " Paris", "located_in"),
    _f("The Pacific", "{} is the largest", " ocean", "instance_of"),
    _f("The Sun", "{} rises every morning in the", " east", "direction"),
    _f("Christmas", "{} is celebrated every year in the month of", " December", "month"),
)


def default_known_path() -> Path | None:
    """``<shared data>/facts/known_1000.json`` if the shared data folder has it, else None."""
    try:
        from .corpus import default_data_dir

        path = default_data_dir() / "facts" / "known_1000.json"
    except Exception:  # no shared data folder here
        return None
    return path if path.is_file() else None


def load_known(path: str | os.PathLike, n: int | None = None) -> list[Fact]:
    """Facts from ROME's ``known_1000.json`` (records with subject, prompt, attribute, ...)."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"no such facts file: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInputError(f"{path} is not a JSON file ({err})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "prompt" in r
                                                for r in records):
        raise InvalidInputError(f"{path}: expected a list of records with a 'prompt' key "
                                "(ROME's known_1000.json format)")
    facts = [Fact(subject=r.get("subject", ""), prompt=r["prompt"],
                  attribute=" " + r.get("attribute", "").lstrip(),
                  relation=r.get("relation_id", "")) for r in records]
    return facts[:n] if n is not None else facts


def load_facts(source=None, n: int | None = None) -> list[Fact]:
    """Facts from None (the embedded set), "known" (the shared known_1000.json), a JSON file
    in ROME's format, a text file with one prompt per line, or a list of strings / Facts."""
    if source is None:
        facts = list(FACTS)
    elif isinstance(source, str) and source == "known":
        path = default_known_path()
        if path is None:
            raise InvalidInputError("known_1000.json was not found in the shared data folder "
                                    "(facts/known_1000.json); give its path instead")
        facts = load_known(path)
    elif isinstance(source, str | os.PathLike) and str(source).endswith(".json"):
        facts = load_known(source)
    elif isinstance(source, str | os.PathLike) and Path(source).is_file():
        lines = Path(source).read_text(encoding="utf-8").splitlines()
        facts = [Fact("", line.strip(), "") for line in lines if line.strip()]
    elif isinstance(source, str):
        raise InvalidInputError(f"no such facts file: {source}")
    else:
        facts = [x if isinstance(x, Fact) else Fact("", str(x), "") for x in source]
    if not facts:
        raise InvalidInputError("the prompt set is empty")
    return facts[:n] if n is not None else facts
