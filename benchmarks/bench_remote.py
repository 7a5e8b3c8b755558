"""What a remote (NDIF) measurement sends and receives, per `Lab.measure_many` call (prints
sizes and ratios to the budgets of issue 20).

    python benchmarks/bench_remote.py

For each call: the requests it makes, the compressed payload nnsight would upload (bytes,
and beyond the token ids ÷ the 1 MB budget), and the result it downloads (the tensors'
bytes ÷ the budget 4·N·(L·H + L + 8 + E) float32-sized numbers + top-k, plus the neuron dots
when neurons are asked). Calls on the embedded model: an Explorer click on a remote Lab (no
neurons), a measurement with neurons, a head-sweep batch; the same on a Llama-3.1-70B shape,
whose upload is captured from a model without weights (meta device) and whose download is
measured on a narrow random Llama with the 70B's 80 layers × 64 heads (what comes back does
not depend on d_model). Every run goes through nnsight's serialising local simulation (remote="local").
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import nbtools
import nbtools.lab as lab_module
from nbtools import AttnLayer, Head
from nbtools.effects import Weights


def word_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(512)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", pad_token="w0")


class _Captured(Exception):
    pass


@contextlib.contextmanager
def watching():
    """Records, per session: the compressed payload size, and the result's tensor bytes."""
    from nnsight.schema.request import RequestModel

    seen = {"upload": [], "download": []}
    real_serialize = RequestModel.serialize.__func__
    real_measure = lab_module.measure_session

    def serialize(cls, tracer, compress=False):
        blob = real_serialize(cls, tracer, compress)
        seen["upload"].append(len(real_serialize(cls, tracer, True)))
        return blob

    def measure(lm, job, backend):
        got = real_measure(lm, job, backend)
        seen["download"].append(tensor_bytes(got))
        return got

    RequestModel.serialize = classmethod(serialize)
    lab_module.measure_session = measure
    try:
        yield seen
    finally:
        RequestModel.serialize = classmethod(real_serialize)
        lab_module.measure_session = real_measure


def tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    return 0


def budget(n_sites: int, lab, top_k: int, runs: int = 1, neurons: bool = False) -> int:
    """Issue 20's download budget in bytes; with neurons, plus every neuron's dot (float64) per
    site in the clean run and each ablated one (the issue's formula has no neuron term, and
    the remote Explorer asks none)."""
    s = lab.shape
    E = len(lab.adapter.paths["embeddings"])
    neuron_dots = 8 * n_sites * s.n_layers * s.d_mlp * (runs + 1) if neurons else 0
    return 4 * 4 * n_sites * (s.n_layers * s.n_heads + s.n_layers + 8 + E) * runs \
        + 2 * 8 * 2 * n_sites * top_k + neuron_dots


def report(name: str, lab, call, ids_bytes: int, n_sites: int, top_k: int, runs: int = 1,
           neurons: bool = False):
    lab.weights()  # the constants: one request, once per model (kept on disk for NDIF)
    with watching() as seen:
        call()
    up, down = seen["upload"][-1], seen["download"][-1]
    b = budget(n_sites, lab, top_k, runs, neurons)
    print(f"{name}: {len(seen['upload'])} request(s); upload {up:,} B "
          f"({max(0, up - ids_bytes) / 1e6:.3f} of the 1 MB beyond the token ids); download "
          f"{down:,} B = {down / b:.2f} × the budget ({b:,} B)")


def upload_only(name: str, lab, call, ids_bytes: int):
    from nnsight.schema.request import RequestModel

    sizes = []

    class Capture:
        def __call__(self, tracer):
            sizes.append(len(RequestModel.serialize(tracer, compress=True)))
            raise _Captured

    real = lab_module.backend_for
    lab_module.backend_for = lambda *a, **k: Capture()
    try:
        with contextlib.suppress(Exception):
            call()
    finally:
        lab_module.backend_for = real
    print(f"{name}: upload {sizes[0]:,} B ({max(0, sizes[0] - ids_bytes) / 1e6:.3f} of the "
          "1 MB beyond the token ids)")


def main() -> None:
    tiny = nbtools.load("tiny").on("local")
    prompt = "The Eiffel Tower is located in the city of"
    n = len(tiny.to_str_tokens(prompt))
    for neurons in (False, True):  # the remote Explorer's click asks no neurons
        name = "a measurement with neurons=True" if neurons else "an Explorer click on a remote Lab"
        report(f"tiny, {name} (top-10)", tiny,
               lambda neurons=neurons: tiny.measure(prompt, Head(3, 1), neurons=neurons,
                                                    logprobs=True, top_k=10, target="top",
                                                    measure_at=[n - 1]),
               3 * n * 8, 1, 10, neurons=neurons)
    rows = torch.randint(1, tiny.shape.d_vocab, (8, 32), generator=torch.Generator().manual_seed(0))
    report("tiny, a head-sweep batch (8 × 32 tokens, the 8 heads of layer 2)", tiny,
           lambda: tiny.measure_many(rows, [Head(2, h) for h in range(tiny.n_heads)],
                                     method="resample", sources="shift"),
           3 * rows.numel() * 8, 8 * 31, 0, runs=tiny.n_heads)
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "llama70b"
        LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                    num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                    max_position_embeddings=131072).save_pretrained(big)
        word_tokenizer().save_pretrained(big)
        lab = nbtools.load(str(big), remote="http://127.0.0.1:9")
        L, d = lab.n_layers, lab.shape.d_model
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        lab._weights = Weights(gamma=zeros(d), beta=zeros(d), W_U_mean=zeros(d),
                               b_U_mean=zeros(()), b_O=zeros(L, d), b_out=zeros(L, d), c_V=None,
                               c_V_W_O=zeros(L, d))
        rows = torch.randint(1, 500, (8, 128), generator=torch.Generator().manual_seed(0))
        upload_only("70B shape, a head-sweep batch (8 × 128 tokens, 64 heads of layer 40)", lab,
                    lambda: lab.measure_many(rows, [Head(40, h) for h in range(64)],
                                             method="resample", sources="shift"),
                    3 * rows.numel() * 8)
        upload_only("70B shape, a Hydra call (attn60 at the final position, 15 sources)", lab,
                    lambda: lab.measure(rows[:1, :16], AttnLayer(60), method="resample",
                                        sources=[[7] * 16] * 15, positions="final",
                                        target="top", logprobs=True), 16 * 16 * 8)
        narrow = Path(tmp) / "narrow"
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(hidden_size=128, intermediate_size=256,
                                     num_hidden_layers=80, num_attention_heads=64,
                                     num_key_value_heads=8, head_dim=2, vocab_size=512,
                                     max_position_embeddings=256)).save_pretrained(narrow)
        word_tokenizer().save_pretrained(narrow)
        deep = nbtools.load(str(narrow), remote="local")
        rows = torch.randint(1, 500, (2, 32), generator=torch.Generator().manual_seed(0))
        report("70B depth × heads, one head over 2 × 32 tokens", deep,
               lambda: deep.measure(rows, Head(40, 3), method="resample", sources="shift"),
               3 * rows.numel() * 8, 2 * 31, 0)


if __name__ == "__main__":
    main()
