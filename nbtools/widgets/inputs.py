"""The Explorer's inputs: its state checked and turned into one `Lab.measure` call.

    inputs = ExplorerInputs(lab)
    mode, text, minus = inputs.target(" Paris")        # a target argument → its three traits
    opts = inputs.options(explorer.state, n_tokens)     # → Options(position, measure, minus)
    lab.measure(prompt, ablation, **opts.measure)

One rule and one message per input, whoever supplies it: the Python API (constructor,
`select`, `set_target`), the browser (a state the worker measures) and `to_code()` all go
through `options`. Everything raises `InvalidInputError` before any forward pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..batching import target_token_id
from ..components import check_components, parse_components
from ..errors import InvalidInputError


@dataclass(frozen=True)
class Options:
    """One state's measurement: `position` 0..n−1, `measure` the `Lab.measure` keyword
    arguments (a logit difference as target=(a, b)), `minus` the subtracted token id or None."""

    position: int
    measure: dict
    minus: int | None


class ExplorerInputs:
    """Checks the Explorer's inputs against one Lab (its tokenizer, shape)."""

    def __init__(self, lab):
        self.lab = lab
        self.id_texts: dict[str, int] = {}  # targets given as ids: their text → the id

    def tokens(self, prompt: str, what: str = "prompt") -> list[str]:
        """The prompt's tokens; errors speak of one prompt, not of a batch."""
        try:
            return self.lab.to_str_tokens(prompt)
        except InvalidInputError as err:
            raise InvalidInputError(one_prompt(str(err), what)) from None

    def ablation(self, ablate) -> list[str]:
        """Component names as the grid shows them ("L3H1", "attn3", "mlp3:1,2")."""
        if ablate is None or (isinstance(ablate, list | tuple) and not ablate):
            return []
        comps = parse_components(ablate)
        check_components(comps, self.lab.shape)
        return [str(c) for c in comps]

    def target(self, target) -> tuple[str, str, str]:
        """(target_mode, target_text, target_minus) for a target argument: "next", "top", a
        single-token string, a token id, or a pair of tokens (a logit difference)."""
        if isinstance(target, tuple | list):
            if len(target) != 2 or any(isinstance(t, tuple | list) for t in target):
                raise InvalidInputError("a logit-difference target is a pair of tokens, e.g. "
                                        "(' Mary', ' John')")
            (_, a, _), (_, b, _) = (self.target(t) for t in target)
            return "custom", a, b
        if isinstance(target, str) and target in ("next", "top"):
            return target, "", ""
        if isinstance(target, str):
            self.custom_target(target)
            return "custom", target, ""
        token = target_token_id(target, self.lab.tokenizer, self.lab.shape.d_vocab)
        text = self.lab.tokenizer.decode([token])
        self.id_texts[text] = token  # its text may not encode back to this one token
        return "custom", text, ""

    @staticmethod
    def position(position: int, n: int, mode: str) -> int:
        """A position trait for a prompt of n tokens: −1 (the last, whatever the prompt) or
        0..n−1 (a negative one counted from the end)."""
        position = int(position)
        if not -n <= position < n:
            raise InvalidInputError(f"position {position} out of range; the prompt has "
                                    f"positions 0..{n - 1} (−1 = last)")
        if position < -1:
            position += n
        if mode == "next" and position in (-1, n - 1):
            raise InvalidInputError("target 'next' has no next token at the last position: "
                                    "pick an earlier token or the target 'top'")
        return position

    def custom_target(self, text: str) -> int:
        """The id of a one-token target typed as text (a leading space added if that makes it
        one token, as most BPE words carry theirs)."""
        tok, d_vocab = self.lab.tokenizer, self.lab.shape.d_vocab
        if text in self.id_texts:
            return self.id_texts[text]
        if not text:
            raise InvalidInputError("type a target token in the box (e.g. ' Paris')")
        for candidate in (text, " " + text) if not text.startswith(" ") else (text,):
            try:
                return target_token_id(candidate, tok, d_vocab)
            except InvalidInputError:
                pass
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise InvalidInputError(f"the target {text!r} has no tokens; type a token")
        pieces = " + ".join(repr(tok.decode([i])) for i in ids)
        raise InvalidInputError(f"the target {text!r} is {len(ids)} tokens ({pieces}); give a "
                                "single token (mind the leading space, e.g. ' Paris')")

    def options(self, state: dict, n: int) -> Options:
        """The measurement of an Explorer state (`Explorer.state`) on a prompt of n tokens."""
        mode = state["target_mode"]
        position = self.position(state["position"], n, mode)
        pos = n - 1 if position == -1 else position
        target = mode if mode in ("next", "top") else self.custom_target(state["target_text"])
        minus = None
        if mode == "custom" and state.get("target_minus", "").strip():
            minus = self.custom_target(state["target_minus"])
            if minus == target:
                raise InvalidInputError("the two tokens of a logit difference are the same")
        measure = dict(method=state["method"],
                       target=target if minus is None else (target, minus), measure_at=[pos],
                       positions="all" if state["positions"] == "all" else [pos],
                       scale=state["scale"])
        source = state["source"].strip()
        if state["method"] == "resample":
            if not source:
                raise InvalidInputError("resample needs source: a source prompt at least as "
                                        "long as the ablated positions (source='...', or type "
                                        "one in the 'source' box)")
            self.tokens(state["source"], "source prompt")
            measure["sources"] = [state["source"]]
        elif state["method"] == "mean" and source:
            measure["reference"] = [state["source"]]
        return Options(pos, measure, minus)


def one_prompt(message: str, what: str = "prompt") -> str:
    """An engine message about a batch ("prompt 0 is empty") for the Explorer's one prompt."""
    message = re.sub(r"\bprompt 0 (is|has)\b", rf"the {what} \1", message)
    return re.sub(r"\bevery prompt has\b", f"the {what} has", message)
