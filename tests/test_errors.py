"""Bad input raises a clear error naming the valid choices, before any forward pass."""

from __future__ import annotations

import pytest
import torch
from conftest import make_lab, word_tokenizer

import nbtools
from nbtools import Head, InvalidInputError, Neurons, UnsupportedModelError


@pytest.fixture()
def counted():
    """A GPT-2 Lab whose forward passes are counted."""
    lab = make_lab("gpt2")
    calls = []
    lab.hf_model.register_forward_pre_hook(lambda *_: calls.append(1))
    return lab, calls


PROMPT = "w1 w2 w3 w4 w5"
CASES = [
    (dict(ablate=Head(4, 0)), "layer 4 is out of range; this model has layers 0..3"),
    (dict(ablate=Head(1, 4)), "heads 0..3"),
    (dict(ablate=Neurons(1, (256,))), "neurons 0..255"),
    (dict(ablate="L1X2"), "cannot read 'L1X2' as a component"),
    (dict(ablate=[]), "ablation is empty"),
    (dict(ablate="1.1", method="shuffle"), "choose from zero, mean, resample"),
    (dict(ablate="1.1", scale="both"), "choose from clean, recomputed"),
    (dict(ablate="1.1", method="resample"), "needs sources"),
    (dict(ablate="1.1", method="resample", sources=["w1 w2"]), "at least as long"),
    (dict(ablate="1.1", method="resample", sources=[["w1"]] * 3), "got 3 lists for 1 prompts"),
    (dict(ablate="1.1", method="resample", sources="shift"), "at least two prompts"),
    (dict(ablate="1.1", method="resample", sources="others"), "needs at least 16 prompts"),
    (dict(ablate="1.1", method="resample", sources="everything"), "unknown sources"),
    (dict(ablate="1.1", target="w1 w2"), "is 2 tokens"),
    (dict(ablate="1.1", target=10_000), "outside the vocabulary 0..511"),
    (dict(ablate="1.1", target=None), "target must be"),
    (dict(ablate="1.1", measure_at="final"), "no next token at the final position"),
    (dict(ablate="1.1", positions=[7]), "every prompt has positions 0..4"),
    (dict(ablate="1.1", positions="middle"), "positions must be"),
    (dict(ablate="1.1", target="top", measure_at=[9]), "valid: 0..4"),
]


@pytest.mark.parametrize("kwargs,message", CASES, ids=[m for _, m in CASES])
def test_bad_measure_input(counted, kwargs, message):
    lab, calls = counted
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        lab.measure(PROMPT, **kwargs)
    assert calls == [], "a forward pass ran before the error"


@pytest.mark.parametrize("prompts,message", [
    ("", "prompt 0 is empty"),
    (["w1 w2", ""], "prompt 1 is empty"),
    ([], "no prompts given"),
    (" ".join(["w1"] * 129), "has 129 tokens; this model takes at most 128"),
    ([[1, 2, 600]], "outside 0..511"),
    ([1.5], "prompts must be"),
])
def test_bad_prompts(counted, prompts, message):
    lab, calls = counted
    with pytest.raises(InvalidInputError, match=message):
        lab.measure(prompts, "1.1")
    assert calls == []


def test_measure_many_needs_a_list(counted):
    lab, calls = counted
    with pytest.raises(InvalidInputError, match="list of ablations"):
        lab.measure_many(PROMPT, "1.1")
    assert calls == []


def test_unknown_model_names_the_choices(tmp_path):
    with pytest.raises(UnsupportedModelError, match="embedded model name"):
        nbtools.load(str(tmp_path / "no-such-model"))


def test_unsupported_architecture_lists_supported():
    from transformers import BertConfig, BertLMHeadModel
    model = BertLMHeadModel(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                       intermediate_size=64, vocab_size=512, is_decoder=True))
    with pytest.raises(UnsupportedModelError, match="supported: gpt2, gpt_neox, llama"):
        nbtools.load(model, tokenizer=word_tokenizer())


def test_unsupported_architecture_in_a_folder(tmp_path):
    from transformers import OPTConfig
    OPTConfig(num_hidden_layers=1, hidden_size=32).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="'opt' model; supported architectures"):
        nbtools.load(str(tmp_path))


def test_model_object_needs_tokenizer():
    from reference import make_gpt2
    with pytest.raises(UnsupportedModelError, match="needs its tokenizer"):
        nbtools.load(make_gpt2())


def test_bad_dtype():
    with pytest.raises(UnsupportedModelError, match="choose from float32"):
        nbtools.load("tiny", dtype="int8")


def test_local_folder_round_trip(tmp_path):
    """A saved model folder loads offline by path and measures the same numbers."""
    lab = make_lab("gpt2")
    lab.hf_model.save_pretrained(tmp_path)
    lab.tokenizer.save_pretrained(tmp_path)
    again = nbtools.load(str(tmp_path))
    a, b = (x.measure(PROMPT, "1.1") for x in (lab, again))
    assert torch.equal(a.self_repair, b.self_repair)
