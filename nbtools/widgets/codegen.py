"""Explorer → code: a notebook cell that reproduces an Explorer view exactly.

    print(explorer.to_code())        # or explorer_code(...) from the pieces of a state

The cell loads the same model in the same dtype, makes the same `lab.measure(...)` call
(every setting written out: method, sources, positions, target, scale, fold convention,
centring) and draws the panels with `view_figure` — the function the Explorer's own export
uses — so its numbers and figure are the Explorer's. `explorer_code` is a pure function of
its arguments: it builds text and runs nothing.
"""

from __future__ import annotations

import os

from ..version import __version__

#: The Explorer's fixed measurement settings (not shown in its controls).
FIXED = dict(fold_value_biases=True, centred=True, neurons=True, logprobs=True)


def _kwargs(options: dict, indent: str = "    ") -> str:
    return "".join(f"{indent}{k}={v!r},\n" for k, v in options.items())


def explorer_code(model: str, prompt: str, ablation: list[str], options: dict, *,
                  name: str | None = None, dtype: str = "float32", top_k: int = 10,
                  n_neurons: int = 8, color_by: str = "de", n_layers: int, n_heads: int,
                  target_token: str | None = None, minus: int | None = None,
                  minus_token: str | None = None) -> str:
    """The source of a cell reproducing one Explorer view.

    model / name / dtype: the `nbtools.load` arguments. prompt, ablation (component names;
    empty = the clean run, `Lab.measure_clean`), options: the `Lab.measure` keyword
    arguments the Explorer used (method, target — a pair of ids for a logit difference —,
    measure_at, positions, scale, sources / reference). top_k, n_neurons: sizes of the
    top-predictions and neuron panels. color_by: the head grid's colouring ("de", "delta", or
    "sr", which adds the sweep of every head and MLP ablated alone). n_layers, n_heads: the
    model's sizes (for the sweep). target_token / minus_token: the custom target's text (and
    the subtracted token's), written as a comment; minus: the subtracted token's id.
    """
    load = [repr(model)] + ([f"name={name!r}"] if name and name != model else []) + \
        [f"dtype={dtype!r}"]
    clean = not ablation
    call = dict(options)
    lines = [f"# Reproduces an nbtools Explorer view (nbtools {__version__}).",
             "import nbtools",
             "from nbtools.widgets import measurement_view, view_figure"]
    if color_by == "sr":
        lines.append("from nbtools.widgets.panels import sweep_grid")
    lines += ["", f"lab = nbtools.load({', '.join(load)})", f"prompt = {prompt!r}"]
    target = call.pop("target")
    tokens = [t for t in (target_token, minus_token if minus is not None else None)
              if t is not None]
    comment = f"  # target token {' − '.join(map(repr, tokens))}" if tokens else ""
    if clean:  # the clean run alone: no ablation, so no method, source or scale
        lines += ["m = lab.measure_clean(", "    prompt,", f"    target={target!r},{comment}",
                  f"    measure_at={call['measure_at']!r},"]
    else:
        lines += ["m = lab.measure(", "    prompt,", f"    {list(ablation)!r},",
                  f"    target={target!r},{comment}", _kwargs(call).rstrip("\n")]
    lines += [_kwargs(dict(FIXED, top_k=top_k)).rstrip("\n"), ")",
              "print(m)",
              "decode = lambda i: lab.tokenizer.decode([int(i)])  # noqa: E731",
              f"view = measurement_view(m, decode, 0, {n_neurons})",
              f"view.update(ablated_ui={list(ablation)!r}, position={options['measure_at'][0]!r}"
              + (", clean_only=True)" if clean else ")"),
              *([f"view['logit']['minus'] = decode({minus!r})"] if minus is not None else [])]
    sweep = "None"
    if color_by == "sr":
        lines += ["# the head grid's colours: self-repair of every head and MLP layer ablated "
                  "alone",
                  f"singles = [c for layer in range({n_layers}) for c in "
                  f"[*(f'L{{layer}}H{{h}}' for h in range({n_heads})), f'mlp{{layer}}']]",
                  "sweep = sweep_grid(lab.measure_many(prompt, singles,",
                  _kwargs(options, " " * 36).rstrip(",\n") + f"), {n_layers}, {n_heads})"]
        sweep = "sweep"
    lines += [f"fig = view_figure(view, {color_by!r}, {sweep}, lab.to_str_tokens(prompt))",
              "fig"]
    return "\n".join(lines) + "\n"


def model_source(lab) -> tuple[str, str | None]:
    """(what `nbtools.load` takes, the name to give it) for a Lab: its embedded name or
    folder, else the folder / hub id its weights came from, with the Lab's name."""
    from ..models.sources import embedded_names

    if lab.name in embedded_names() or os.path.isdir(lab.name):
        return lab.name, None
    origin = getattr(lab.hf_model.config, "_name_or_path", "") or lab.name
    return origin, lab.name if origin != lab.name else None
