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


# --- issue 15: every bad input a clear error before any forward pass ---------------------------
@pytest.fixture()
def every_module():
    """A GPT-2 Lab with a forward pre-hook on every module (any forward pass is counted)."""
    lab = make_lab("gpt2")
    calls = []
    for module in lab.hf_model.modules():
        module.register_forward_pre_hook(lambda *_: calls.append(1))
    return lab, calls


NAN = float("nan")
MEASURE_CASES = [
    # crashes that were plain Python / torch errors
    (dict(prompts=None), "prompts must be a string, a list of strings, or token ids"),
    (dict(prompts=123), "prompts must be a string, a list of strings, or token ids"),
    (dict(prompts=[[1, NAN, 3]]), "a token id of prompt 0 must be a whole number .an int., not nan"),
    (dict(prompts=torch.ones(1, 2, 3, dtype=torch.long)), r"\[T\] or \[B, T\], not of shape"),
    (dict(positions=["a"]), "positions must be a whole number.*'all', 'final' or a list of ints"),
    (dict(target="top", measure_at=["x"]), "measure_at must be a whole number.*'all', 'final'"),
    (dict(method="resample", sources="others", n_sources=-1), "n_sources must be at least 1"),
    # silently wrong results
    (dict(prompts=[[1, 10.5, 3]]), "must be a whole number .an int., not 10.5"),
    (dict(prompts=torch.tensor([[True, False, True]])), "integer tensor .torch.long., not torch.bool"),
    (dict(prompts=torch.tensor([[1.0, 2.0]])), "integer tensor .torch.long., not torch.float32"),
    (dict(positions=[1.5]), "positions must be a whole number .an int., not 1.5"),
    (dict(positions=True), "positions must be 'all', 'final' or a list of ints, not True"),
    (dict(method="resample", sources="others", n_sources=0), "n_sources must be at least 1"),
    (dict(method="resample", sources="shift", n_sources=3), "applies only to sources='others'"),
    (dict(ablate=Neurons(1, [1])), None),  # control: accepted
    # unclear messages
    (dict(method="resample", sources=[""]), "source 0 is empty"),
    (dict(method="mean", reference=""), "reference prompt 0 is empty"),
    (dict(method="mean", reference=[]), "reference is an empty list.*reference=None"),
]


@pytest.mark.parametrize("kwargs,message", MEASURE_CASES, ids=[str(m) for _, m in MEASURE_CASES])
def test_bad_input_is_a_clear_error_before_any_forward(every_module, kwargs, message):
    lab, calls = every_module
    kwargs = dict(kwargs)
    prompts, ablate = kwargs.pop("prompts", PROMPT), kwargs.pop("ablate", "1.1")
    if message is None:
        lab.measure(prompts, ablate, **kwargs)
        assert calls
        return
    with pytest.raises(InvalidInputError, match=message):
        lab.measure(prompts, ablate, **kwargs)
    assert calls == [], "a forward pass ran before the error"


@pytest.mark.parametrize("make,message", [
    (lambda: Head("a", 1), "Head layer must be a whole number .an int., not 'a'"),
    (lambda: Head(1.5, 2), "Head layer must be a whole number .an int., not 1.5"),
    (lambda: Head(1, True), "Head head index must be a whole number"),
    (lambda: Neurons(5, [1.5]), "a neuron index must be a whole number .an int., not 1.5"),
    (lambda: nbtools.AttnLayer("3"), "AttnLayer layer must be a whole number"),
])
def test_components_take_whole_numbers_only(make, message):
    with pytest.raises(InvalidInputError, match=message):
        make()


def test_components_accept_numpy_and_torch_integers():
    import numpy as np

    assert Head(np.int64(2), torch.tensor(1)) == Head(2, 1)
    assert Neurons(1, 7).neurons == (7,) and Neurons(1, torch.tensor([3, 4])).neurons == (3, 4)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(device="bogus"), InvalidInputError, "unknown device 'bogus'; use 'cpu', 'cuda'"),
    (dict(device="cuda:99"), InvalidInputError, "device 'cuda:99'"),
])
def test_bad_device(kwargs, error, message):
    with pytest.raises(error, match=message):
        nbtools.load("tiny", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_cuda_without_cuda():
    with pytest.raises(InvalidInputError, match="sees no CUDA GPU; use device='cpu'"):
        nbtools.load("tiny", device="cuda")


def test_a_module_that_is_not_a_language_model():
    with pytest.raises(UnsupportedModelError, match="not a transformers causal language model.*"
                                                    "supported architectures: gpt2"):
        nbtools.load(torch.nn.Linear(2, 2), tokenizer=word_tokenizer())


def test_embedded_names_are_case_insensitive():
    assert nbtools.load("Tiny").name == "tiny"


def test_an_unknown_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnsupportedModelError,
                       match="(?s)hub is unreachable .offline. and the local cache has no copy.*"
                             "embedded model name .tiny"):
        nbtools.load("no-such-org/no-such-model")


def test_the_hub_check_without_a_connection(monkeypatch):
    import socket

    from nbtools.models import sources as loading

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def refuse(*_, **__):
        raise OSError("no network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert loading._hub_unreachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert not loading._hub_unreachable()  # a proxy decides; transformers tries


# --- sweeps -------------------------------------------------------------------------------------
ROWS = torch.randint(1, 512, (4, 10), generator=torch.Generator().manual_seed(3))
FACTS = [f"w{i} w{i + 1} w{i + 2}" for i in range(1, 40, 3)]


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_rows=0, method="zero"), r"n_rows must be at least 1 \(or None: every row"),
    (dict(n_rows=0), r"n_rows must be at least 1 \(or None: every row"),
    (dict(n_rows=1), "resample ablation needs at least two rows .row i ← row i\\+1.; the corpus gave 1"),
    (dict(corpus="missing_corpus.md"), "corpus file 'missing_corpus.md' does not exist"),
    (dict(corpus="data/missing"), "corpus file 'data/missing' does not exist"),
    (dict(corpus=ROWS.double()), "integer tensor, not torch.float64"),
    (dict(heads=[("a", 1)]), "Head layer must be a whole number"),
])
def test_bad_head_sweep_input(every_module, kwargs, message):
    from nbtools.sweeps import sweep_heads

    lab, calls = every_module
    kwargs = {"corpus": ROWS, **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        sweep_heads(lab, progress=False, **kwargs)
    assert calls == []


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_sources=0), r"n_sources must be at least 1 \(resample sources per prompt; the paper"),
    (dict(n_sources=-1), "n_sources must be at least 1"),
    (dict(n_sources=2.5), "n_sources must be a whole number"),
    (dict(n_sources=40), "n_sources=40 needs at least 41 prompts; got 13"),
    (dict(n_sources=3, layers=[1.5]), "a layer in layers must be a whole number"),
    (dict(n_sources=3, layers="first"), "layers must be 'all' or a list of layer indices"),
    (dict(n_sources=3, n_prompts=0), "n_prompts must be at least 1"),
])
def test_bad_layer_sweep_input(every_module, kwargs, message):
    from nbtools.sweeps import sweep_layers

    lab, calls = every_module
    with pytest.raises(InvalidInputError, match=message):
        sweep_layers(lab, FACTS, progress=False, **kwargs)
    assert calls == []


def test_layer_sweep_progress_counts_prompts(monkeypatch):
    from nbtools.sweeps import engine, sweep_layers

    seen, real = [], engine.progress_bar

    def bar(enabled, total, initial, desc, unit):
        seen.append(total)
        return real(False, total, initial, desc, unit)

    monkeypatch.setattr(engine, "progress_bar", bar)  # every sweep's bar is the engine's
    sweep_layers(make_lab("gpt2"), FACTS[:5], n_sources=2, kinds=["attn"], scales=["clean"],
                 examples=1)
    assert seen == [5]


# --- figures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def attn_sweep():
    from nbtools.sweeps import sweep_layers

    return sweep_layers(make_lab("gpt2"), FACTS[:6], n_sources=2, kinds=["attn"],
                        scales=["clean"], progress=False)


def test_bad_figure_input(attn_sweep, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nbtools import figures

    res = attn_sweep
    cases = [
        (lambda: figures.render_all([object()], tmp_path), "cannot draw figures from a value of type object; "
         "give HeadSweepResult / LayerSweepResult / RepairMapResult objects or result-file paths"),
        (lambda: figures.render_all(["x"], tmp_path), "no result file at x"),
        (lambda: figures.render_all([], tmp_path), "no results given"),
        (lambda: figures.self_repair_vs_depth([]), "no results given; pass a HeadSweepResult"),
        (lambda: figures.self_repair_vs_depth([res]), "needs HeadSweepResults"),
        (lambda: figures.delta_by_layer(res, "bogus"), "unknown kind 'bogus'; choose from attn, mlp"),
        (lambda: figures.delta_by_layer(res, "mlp"), "no mlp layer ablations; it swept attn0"),
        (lambda: figures.compensation_vs_unembed(res, "attn", "recomputed"),
         "did not measure scale 'recomputed'; it has clean"),
        (lambda: figures.layer_de(res, 999, "attn1"), "prompt 999 is not in the sweep; it "
         "measured prompts 0..5"),
        (lambda: figures.layer_de(res, 0, "attn9"), "'attn9' was not swept; choose from attn0"),
    ]
    for make, message in cases:
        with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            make()
    fig = figures.delta_by_layer(res, "attn")
    with pytest.raises(InvalidInputError, match="choose from pdf, svg, png"):
        figures.save(fig, tmp_path / "f", formats=("jpg",))
    with pytest.raises(InvalidInputError, match="unsupported figure format 'jpg' .from the file "
                                                "name fig.jpg.; choose from pdf, svg, png"):
        figures.save(fig, tmp_path / "fig.jpg")
    assert not list(tmp_path.glob("fig.jpg*"))
    assert [p.name for p in figures.save(fig, tmp_path / "fig.v2", formats=("png",))] == \
        ["fig.v2.png"]  # a dot that is not a format suffix stays part of the name
    plt.close(fig)
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidInputError, match="is a file; give a folder for the figures"):
        figures.render_all(res, tmp_path / "file")


# --- issue 22: argument types at one validation point, before any forward pass -------------
@pytest.mark.parametrize("kwargs,message", [
    (dict(neurons="yes"), "neurons must be True or False"),
    (dict(suffix_reuse=1), "suffix_reuse must be True or False"),
    (dict(top_k=0, logprobs=True), "top_k must be in 1..512"),
    (dict(top_k="5"), "top_k must be a whole number"),
    (dict(max_rows=0), "max_rows must be at least 1"),
    (dict(max_rows=2.5), "max_rows must be a whole number"),
    (dict(seed="abc"), "seed must be a whole number"),
    (dict(target="w1\ud83d"), "lone surrogate"),
    (dict(method="resample", sources=["w1 w2 w3 w4 \udc00"]), "source 0 is not valid text"),
])
def test_option_types_are_checked_first(counted, kwargs, message):
    lab, calls = counted
    with pytest.raises(InvalidInputError, match=message):
        lab.measure(PROMPT, "1.1", **kwargs)
    assert calls == []


def test_a_lone_surrogate_in_a_prompt(counted):
    lab, calls = counted
    with pytest.raises(InvalidInputError, match=r"prompt 1 is not valid text: character 3"):
        lab.measure(["w1 w2", "w1 \ud800 w2"], "1.1")
    assert calls == []


def test_numpy_integers_are_integers(labs):
    import numpy as np

    lab = labs["gpt2"]
    assert torch.equal(lab.attention_pattern(PROMPT, np.int64(1), np.int32(2)),
                       lab.attention_pattern(PROMPT, 1, 2))
    m = lab.measure(PROMPT, "1.1", top_k=np.int64(3), logprobs=True, max_rows=np.int16(8),
                    neurons=np.bool_(False), seed=np.uint8(1))
    assert m.topk_ids_clean.shape[-1] == 3


# --- issue 22: every sweep checks its whole request first (one engine) ---------------------
ROWS4 = torch.randint(1, 500, (4, 8), generator=torch.Generator().manual_seed(3))
SWEEP_CASES = [
    ("heads", dict(seed="abc"), "seed must be a whole number"),
    ("heads", dict(seed=True), "seed must be a whole number"),
    ("layers", dict(seed="abc"), "seed must be a whole number"),
    ("map", dict(seed=1.5), "seed must be a whole number"),
    ("heads", dict(checkpoint_every="abc"), "checkpoint_every must be a number of seconds"),
    ("layers", dict(checkpoint_every=-1), "checkpoint_every must be a number of seconds"),
    ("map", dict(checkpoint_every=None), "checkpoint_every must be a number of seconds"),
    ("heads", dict(batch_rows=1), "batch_rows must be at least 2 for resample ablation"),
    ("map", dict(batch_rows=1), "batch_rows must be at least 2 for resample ablation"),
    ("heads", dict(batch_rows="2"), "batch_rows must be a whole number"),
    ("layers", dict(batch_prompts=0), "batch_prompts must be at least 1"),
    ("map", dict(rows=None), "rows"),
]


@pytest.mark.parametrize("sweep,kwargs,message", SWEEP_CASES,
                         ids=[f"{s}-{m}" for s, _, m in SWEEP_CASES])
def test_sweep_options_are_checked_before_any_forward(every_module, tmp_path, sweep, kwargs,
                                                      message):
    from nbtools.sweeps import repair_map, sweep_heads, sweep_layers

    lab, calls = every_module
    run = {"heads": lambda **kw: sweep_heads(lab, ROWS4, heads="1.*", **kw),
           "layers": lambda **kw: sweep_layers(lab, [f"w{i} w{i + 1} w{i + 2}" for i in range(1, 9)],
                                               n_sources=2, **kw),
           "map": lambda **kw: repair_map(lab, ROWS4, **{"rows": "1.*", **kw})}[sweep]
    with pytest.raises(InvalidInputError, match=message):
        run(out=tmp_path / "out.safetensors", progress=False, **kwargs)
    assert calls == [], "a forward pass ran before the error"
    assert not (tmp_path / "out.safetensors").exists()


def test_two_repair_maps_on_one_file_the_second_stops_at_once(every_module, tmp_path):
    from nbtools.sweeps import repair_map, store
    from nbtools.sweeps.store import ResultFileError

    lab, calls = every_module
    out = tmp_path / "map.safetensors"
    with store.locked(out), pytest.raises(ResultFileError, match="is writing"):
        repair_map(lab, ROWS4, rows="1.*", out=out, progress=False)
    assert calls == [] and not out.exists()
    res = repair_map(lab, ROWS4, rows="1.*", out=out, progress=False)
    with store.locked(out), pytest.raises(ResultFileError, match="is writing"):
        res.save(out)  # saving a map takes the writer lock too
    assert res.settings["model"] == lab.name


def test_an_unwritable_output_fails_before_any_forward(every_module, tmp_path):
    from nbtools.errors import OutputError
    from nbtools.sweeps import repair_map

    lab, calls = every_module
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError, match="a-file"):
        repair_map(lab, ROWS4, rows="1.*", out=tmp_path / "a-file" / "map.safetensors",
                   progress=False)
    assert calls == []
