"""Deterministic recipe for the small GPT-2 shipped with nbtools (``nbtools train-tiny``).

Trains a byte-level BPE tokenizer and a ``transformers.GPT2LMHeadModel`` on the natural-English
corpora of :mod:`nbtools.corpus`, evaluates it on the held-out documents and writes a folder
that ``transformers`` (and :func:`nbtools.embedded.load_from_dir`) load offline: weights
(safetensors), ``config.json``, tokenizer files, ``MODEL_CARD.md`` and ``card.json``.

Training writes an atomic checkpoint under ``<out>/work/`` every few hundred steps and resumes
from it when run again with the same settings.

The parts: ``config`` (the settings and learning-rate schedule), ``data`` (documents,
tokenizer, token streams, batches), ``loop`` (model, optimiser, steps, checkpoints),
``evaluation`` (held-out loss, unigram baseline, samples), ``card`` (the model card),
``recipe`` (:func:`train_tiny`, which runs them in order) and ``command`` (the CLI).
"""

from .card import ARTIFACT_FILES, CARD_VERSION, HASHED_FILES, render_model_card, sha256_file
from .command import main
from .config import TrainConfig
from .data import EOT, Batches, encode_documents, train_tokenizer
from .evaluation import SAMPLE_PROMPTS, greedy_samples, heldout_loss, unigram_loss
from .recipe import train_tiny

__all__ = [
    "ARTIFACT_FILES",
    "CARD_VERSION",
    "EOT",
    "HASHED_FILES",
    "SAMPLE_PROMPTS",
    "Batches",
    "TrainConfig",
    "encode_documents",
    "greedy_samples",
    "heldout_loss",
    "main",
    "render_model_card",
    "sha256_file",
    "train_tiny",
    "train_tokenizer",
    "unigram_loss",
]
