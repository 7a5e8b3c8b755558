"""The live self-repair Explorer: one cell, every panel, one traced forward pass per click.

    from nbtools.widgets import Explorer
    ex = Explorer(prompt="The Eiffel Tower is located in the city of")   # the embedded model
    ex                                   # click heads, layer labels, MLP cells, tokens
    ex.ablate("3.1", "attn4"); ex.wait(); ex.measurement
    ex.save("explorer.pdf")

How it stays live: the browser writes the state traits (prompt, position, target, ablation,
method, ...) and bumps `request_seq`; Python snapshots that state and hands it to one worker
thread with latest-wins slots (nnsight is not thread-safe, so only that thread touches the
model, and a burst of clicks never queues stale work). Each measurement is one
`Lab.measure(..., measure_at=[position])` call — the clean run is cached per prompt — and
its panels are sent back as one `view` dict. Errors land in `error`, never in a dead cell.
The static PNG kept in the notebook is drawn by a child process (`fallback.py`) that every
click pauses, so it never delays a measurement.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from dataclasses import dataclass

import torch
import traitlets

from ..components import Head, check_components, parse_components
from ..errors import InvalidInputError, NbtoolsError
from ..loading import as_lab
from . import export, panels
from .base import NbWidget
from .fallback import StaticFallback
from .inputs import ExplorerInputs, one_prompt
from .live_sweep import LiveSweeps
from .worker import LatestWins

INPUTS = ("prompt", "position", "target_mode", "target_text", "target_minus", "ablation",
          "method", "source",
          "positions", "scale", "request_seq")
DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"


@dataclass(frozen=True)
class Job:
    """A kind of work for the worker thread: its priority (lower runs first, so clicks go
    before background work), whether the widget shows it as busy, its error messages' prefix."""

    priority: int
    busy: bool
    label: str


JOBS = {"measure": Job(0, True, ""),                     # a click: the panels
        "export": Job(1, True, "export: "),              # a figure or data file for download
        "tokens": Job(2, True, "token colours: "),       # SR at every position (token_colors)
        "attention": Job(2, False, "attention pattern: "),  # the one ablated head's pattern
        "sweep": Job(3, True, "self-repair sweep: ")}    # one layer of the live sweep
MAP_EVERY_S = 1.0  # while a sweep runs, the live map is re-sent at most this often


class Explorer(NbWidget):
    """Click heads, layers, MLPs and tokens; see self-repair update live.

    model: a `Lab`, anything `nbtools.load` takes (default: the embedded "tiny" model) or a
        transformers model with `tokenizer=`.
    prompt: the text; position: the token whose next-token logit is measured (−1 = last).
    target: "next" (actual next token), "top" (clean top prediction), a single-token string,
        or a pair (" Mary", " John"): the logit difference, the IOI metric (every number shown
        is linear in the target direction at fixed norm scales, so it is the first token's
        measurement minus the second's; probabilities are the first token's).
    ablate: components ablated together ("3.1", "attn3", "mlp5", Head(3, 1), ...).
    method: "zero" | "mean" | "resample"; source: the resample source prompt (or the mean's
        reference prompt; default: the prompt itself). positions: ablate at "all" positions
        or only the "measured" one. scale: "clean" (R&N) or "recomputed" norm scale.
    color_by: head-grid colours — "de" (clean direct effect), "sr" (self-repair of each
        component ablated alone; a background sweep) or "delta" (ΔDE: who repaired).
    token_colors: colour the prompt's tokens by the current ablation's self-repair at every
        position (one more measurement per click, after the panels; in `token_sr`).
    repair_map: a `RepairMapResult` (or its file) to show as the who-repairs-whom map instead
        of the live one (see `show_map`).
    static_fallback: keep a PNG of the last view in the notebook output (shown where no
        kernel runs); static_delay: idle seconds before it is refreshed.
    threads: torch CPU threads for the worker thread only (torch's thread count is per
        thread, so the notebook's own setting is untouched). None: 1 for models under 200M
        parameters (one prompt's matrices are small: more threads gain little and lose badly
        when the cores are shared), else the notebook thread's count.

    Python API: `ablate()`, `undo()`, `select()`, `set_target()`, `show_map()` (the repair map;
    `map_on`, `map_data`), `wait()`, `measurement` (the last
    Measurement, None while nothing is ablated), `view`, `state`, `figure()`, `save()`,
    `close()`. Every state trait can also be set directly (`ex.method = "mean"`).
    """

    _kind = traitlets.Unicode("explorer").tag(sync=True)
    # state: written by the browser or by Python
    prompt = traitlets.Unicode(DEFAULT_PROMPT).tag(sync=True)
    position = traitlets.Int(-1).tag(sync=True)
    target_mode = traitlets.Enum(("next", "top", "custom"), "top").tag(sync=True)
    target_text = traitlets.Unicode("").tag(sync=True)
    target_minus = traitlets.Unicode("").tag(sync=True)
    ablation = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    method = traitlets.Enum(("zero", "mean", "resample"), "zero").tag(sync=True)
    source = traitlets.Unicode("").tag(sync=True)
    positions = traitlets.Enum(("all", "measured"), "all").tag(sync=True)
    scale = traitlets.Enum(("clean", "recomputed"), "clean").tag(sync=True)
    color_by = traitlets.Enum(("de", "sr", "delta"), "de").tag(sync=True)
    token_colors = traitlets.Bool(False).tag(sync=True)
    map_on = traitlets.Bool(False).tag(sync=True)
    request_seq = traitlets.Int(0).tag(sync=True)
    # results: written by Python only
    model_name = traitlets.Unicode("").tag(sync=True)
    tokens = traitlets.List(traitlets.Unicode(), []).tag(sync=True)
    view = traitlets.Dict().tag(sync=True)
    sweep = traitlets.Dict().tag(sync=True)
    token_sr = traitlets.Dict().tag(sync=True)
    attention = traitlets.Dict().tag(sync=True)  # the single ablated head's clean pattern
    map_data = traitlets.Dict().tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    remote_status = traitlets.Unicode("").tag(sync=True)  # "queued on NDIF · 3 s" while waiting
    done_seq = traitlets.Int(-1).tag(sync=True)
    can_undo = traitlets.Bool(False).tag(sync=True)

    def __init__(self, model=None, prompt: str = DEFAULT_PROMPT, ablate=None, *, tokenizer=None,
                 target: str | int = "top", position: int = -1, method: str = "zero",
                 source: str = "", positions: str = "all", scale: str = "clean",
                 color_by: str = "de", top_k: int = 10, n_neurons: int = 8,
                 static_fallback: bool = True, static_delay: float = 1.5,
                 threads: int | None = None, repair_map=None):
        self.lab = as_lab(model, tokenizer)
        if self.lab.remote:  # a Lab of its own that reports how each request proceeds
            self.lab = self.lab.on(self.lab.remote, on_status=self._on_remote_status)
        # validate everything on this thread before the worker exists (no forward pass)
        self._inputs = ExplorerInputs(self.lab)
        tokens = self._inputs.tokens(prompt)
        ablation = self._inputs.ablation(ablate)
        mode, text, minus = self._inputs.target(target)
        position = self._inputs.position(position, len(tokens), mode)
        self._inputs.options(dict(  # the method's source prompt, a logit difference's pair
            position=position, target_mode=mode, target_text=text, target_minus=minus,
            method=method, source=source, positions=positions, scale=scale), len(tokens))
        if top_k < 1 or n_neurons < 1:
            raise InvalidInputError("top_k and n_neurons must be at least 1")
        self.top_k, self.n_neurons = int(top_k), int(n_neurons)
        self.static_fallback = bool(static_fallback)
        self.measurement = None
        self.last_traceback = ""
        self.last_export: tuple[str, bytes] | None = None
        self._tokens_for = prompt
        self._sweeps = LiveSweeps(self.lab.n_layers, self.lab.n_heads)
        self._map_result = None  # a RepairMapResult shown instead of the live map
        self._map_sent = 0.0  # time.monotonic() of the last live-map update sent
        self._busy_lock = threading.Lock()
        self._fallback = StaticFallback(static_delay, self._on_static_error)
        self._history: list[list[str]] = []  # earlier ablations, for undo()
        self._undoing = False
        self._submitted: dict | None = None
        try:
            super().__init__(prompt=prompt, position=position, target_mode=mode,
                             target_text=text, target_minus=minus, ablation=ablation,
                             method=method, source=source, positions=positions, scale=scale,
                             color_by=color_by, tokens=tokens,
                             model_name=f"{self.lab.name} · {str(self.lab.dtype)[6:]}"
                             + _where(self.lab.remote))
        except traitlets.TraitError as err:
            raise InvalidInputError(str(err)) from None
        self.threads = _threads(self.lab, threads)
        self._worker = LatestWins("nbtools-explorer", on_change=self._refresh_busy,
                                  on_error=self._failed, init=self._init_worker)
        self.observe(self._on_state, names=list(INPUTS))
        self.observe(self._on_color, names="color_by")
        self.observe(self._on_token_colors, names="token_colors")
        self.observe(self._on_map, names="map_on")
        if repair_map is not None:
            self.show_map(repair_map)
        self._schedule()

    def __repr__(self) -> str:
        what = " + ".join(self.ablation) or "nothing"
        return (f"Explorer({self.lab.name!r}, prompt={self.prompt!r}, ablated: {what}, "
                f"method={self.method}, target={self.target_mode})")

    # --- Python API -------------------------------------------------------------------
    @property
    def state(self) -> dict:
        """The state the next measurement will use (a plain dict)."""
        return {name: (list(v) if isinstance(v := getattr(self, name), list) else v)
                for name in INPUTS}

    def ablate(self, *components, add: bool = False) -> Explorer:
        """Ablate these components together (replacing the current set unless add=True);
        no argument clears the ablation."""
        names = self._inputs.ablation(list(components)) if components else []
        if add:
            names = list(dict.fromkeys([*self.ablation, *names]))
        self._update(ablation=names)
        return self

    def select(self, position: int) -> Explorer:
        """Measure at token `position` (−1 = last)."""
        position = self._inputs.position(position, len(self.tokens), self.target_mode)
        self._update(position=position)
        return self

    def set_target(self, target) -> Explorer:
        """"next", "top", a single-token string (e.g. " Paris") or a pair of them for their
        logit difference ((" Mary", " John"))."""
        mode, text, minus = self._inputs.target(target)
        self._inputs.position(self.position, len(self.tokens), mode)
        self._update(target_mode=mode, target_text=text, target_minus=minus)
        return self

    def undo(self) -> Explorer:
        """Go back to the previous ablation (clicks, keys and Python calls all count); does
        nothing when there is none."""
        if self._history:
            self._undoing = True
            try:
                self._update(ablation=self._history.pop())
            finally:
                self._undoing = False
        self.can_undo = bool(self._history)
        return self

    def wait(self, timeout: float = 60.0) -> Explorer:
        """Block until the current measurement (and a pending sweep or export) is done, and
        bring the notebook's static image up to date. Raises TimeoutError after `timeout` s."""
        if not self._worker.wait(timeout, kinds=tuple(JOBS)):
            raise TimeoutError(f"the Explorer was still busy after {timeout} s")
        if not self._fallback.draw_now(self._static_payload(), timeout):
            raise TimeoutError(f"the static image was not drawn in {timeout} s")
        return self

    def figure(self, dpi: int = 100):
        """The current view as a matplotlib Figure (same numbers as the panels)."""
        if not self.view:
            raise RuntimeError("nothing measured yet; call wait() first")
        return export.view_figure(self.view, self.color_by, self.sweep, self.tokens, dpi=dpi)

    def save(self, path, dpi: int = 150) -> str:
        """Save the current view: a figure (png, svg, pdf) or its data (csv: one row per
        component; json: every panel's numbers); the format comes from the file name."""
        path = str(path)
        data = self._export_bytes(path.rsplit(".", 1)[-1].lower(), dpi)
        with open(path, "wb") as handle:
            handle.write(data)
        return path

    def to_code(self, model=None) -> str:
        """A notebook cell reproducing the current view (`nbtools.widgets.codegen`): the load,
        the exact `lab.measure(...)` call and the panels as a matplotlib figure. model: what
        the cell passes to `nbtools.load` — a name, folder or hub id, a path, or a Lab (where
        it came from); default: where this Explorer's model came from."""
        from .codegen import explorer_code, model_source

        state = self.state
        opts = self._inputs.options(state, len(self.lab.to_str_tokens(state["prompt"])))
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        elif model is not None and not isinstance(model, str):  # a Lab: where it came from
            model = model_source(as_lab(model))[0]
        source, name = model_source(self.lab) if model is None else (model, self.lab.name)
        return explorer_code(
            source, state["prompt"], list(state["ablation"]), opts.measure, name=name,
            dtype=str(self.lab.hf_model.dtype).replace("torch.", ""), top_k=self.top_k,
            n_neurons=self.n_neurons, color_by=self.color_by, n_layers=self.lab.n_layers,
            n_heads=self.lab.n_heads,
            target_token=state["target_text"] if state["target_mode"] == "custom" else None,
            minus=opts.minus,
            minus_token=state.get("target_minus") if opts.minus is not None else None)

    def show_map(self, result=None, selection: str | None = None) -> Explorer:
        """Show the who-repairs-whom map: with no result, the live one (every head and MLP
        layer ablated alone with the current settings, ΔDE of every downstream component at
        the measured position; the self-repair sweep's measurements, streamed layer by
        layer); with a `RepairMapResult` (or its file), that distribution-level map. A click
        on a row ablates that component."""
        if result is not None:
            from ..sweeps.repair_map import RepairMapResult

            if not isinstance(result, RepairMapResult):
                result = RepairMapResult.load(result)
            _check_same_model(result, self.lab)
            if selection is not None and selection not in result.selections:
                raise InvalidInputError(f"unknown selection {selection!r}; choose from "
                                        f"{', '.join(result.selections)}")
            self._map_result = (result, selection)
        elif self._map_result is not None:
            self._map_result = None
            self.map_data = {}  # until the live map's first layer is measured
        if self.map_on:
            self._on_map({"new": True})
        else:
            self.map_on = True
        return self

    def close(self):
        """Stop the worker thread and close the widget."""
        if getattr(self, "_worker", None) is not None:
            self._worker.close()
        if getattr(self, "_fallback", None) is not None:
            self._fallback.close()
        super().close()

    # --- display with a static fallback --------------------------------------------------
    def _ipython_display_(self, **kwargs):
        from IPython.display import display

        data, metadata = self._repr_mimebundle_()
        display(data, metadata=metadata, raw=True)
        if self.static_fallback:
            self._fallback.attach(display(self._fallback.bundle(), raw=True, display_id=True))
            if self.view:
                self._fallback.schedule(self._static_payload(), 0.0)

    def _static_payload(self) -> dict:
        return {"view": self.view, "color_by": self.color_by, "sweep": self.sweep,
                "tokens": self.tokens, "dpi": 72}

    def _on_static_error(self, message: str) -> None:
        self.error = "static image: " + message

    # --- scheduling --------------------------------------------------------------------
    def _update(self, **changes) -> None:
        # one message to the browser: it sees the new state and its request_seq together
        with self.hold_sync(), self.hold_trait_notifications():
            for name, value in changes.items():
                setattr(self, name, value)
            self.request_seq += 1

    def _on_state(self, change) -> None:
        if change["name"] == "ablation" and not self._undoing and change["old"] != change["new"]:
            self._history.append(list(change["old"]))
            del self._history[:-50]
            self.can_undo = True
        self._schedule()

    def _on_color(self, change) -> None:
        if change["new"] == "sr" and self.view:
            self._schedule_sweep(self.view.get("state", self.state), self.view.get("key"))

    def _on_map(self, change) -> None:
        if not change["new"]:
            return
        if self._map_result is not None:
            self.map_data = panels.result_map_data(*self._map_result)
        elif self.view:
            self._publish_map(self.view.get("key"))
            self._schedule_sweep(self.view.get("state", self.state), self.view.get("key"))

    def _publish_map(self, key: str | None) -> None:
        """Send the live map of sweep `key` (the rows done so far) to the browser."""
        data = None if key is None else self._sweeps.map_data(key)
        if data is None or self._map_result is not None or not self.map_on:
            return
        self._map_sent = time.monotonic()
        self.map_data = data

    def _schedule(self) -> None:
        state = self.state
        if self._worker.closed or state == self._submitted:
            return  # one message from the browser changes several traits: measure once
        self._submitted = state
        self._fallback.pause()  # a click: the fallback image must not hold it up
        self._submit("measure", lambda: self._run_measure(state))

    def _on_token_colors(self, change) -> None:
        if change["new"] and self.view and not self.view.get("clean_only"):
            self._schedule_tokens(self.view["state"], self.view["tokens_key"])

    def _schedule_tokens(self, state: dict, key: str) -> None:
        if self.token_sr.get("key") != key:
            self._submit("tokens", lambda: self._run_tokens(state, key))

    def _schedule_sweep(self, state: dict, key: str | None, layer: int | None = None) -> None:
        """Sweep every head and MLP layer ablated alone, one layer per job (so clicks can run
        in between), filling `sweep` progressively; finished sweeps are cached per key."""
        if key is None:
            return
        done = self._sweeps.grid(key)
        if layer is None:
            if done is not None and self.sweep.get("key") != key:
                self.sweep = done
            if done is not None and self.map_data.get("key") != key:
                self._publish_map(key)
            layer = self._sweeps.done(key)
        if layer >= self.lab.n_layers:
            return
        self._submit("sweep", lambda: self._run_sweep(state, key, layer))

    def _schedule_attention(self, state: dict, comps, pos: int) -> None:
        """The clean attention pattern of the ablated head when exactly one head is ablated,
        at low priority (clicks go first); otherwise the panel is cleared."""
        if len(comps) != 1 or not isinstance(comps[0], Head):
            self._worker.cancel("attention")
            if self.attention:
                self.attention = {}
            return
        head = comps[0]
        key = f"{head}|{pos}|{state['prompt']}"
        if self.attention.get("key") != key:
            self._submit("attention", lambda: self._run_attention(state, head, pos, key))

    def _submit(self, kind: str, job) -> None:
        self._worker.submit(kind, job, JOBS[kind].priority)

    def _refresh_busy(self) -> None:
        with self._busy_lock:
            busy = bool(self._worker.active([k for k, job in JOBS.items() if job.busy]))
            if busy != self.busy:
                self.busy = busy
            if not busy and self.remote_status:
                self.remote_status = ""

    def _on_remote_status(self, status: str, elapsed: float) -> None:
        """A remote request's progress (nnsight's status names: RECEIVED, QUEUED, RUNNING...),
        reported by the worker thread while it waits; clicks made meanwhile are coalesced
        (the worker runs only the latest state next)."""
        where = _where(self.lab.remote).removeprefix(" · ")
        self.remote_status = f"{status.lower()} {where} · {elapsed:.0f} s"

    def _failed(self, kind: str, exc: Exception, text: str) -> None:
        self.last_traceback = text
        msg = one_prompt(str(exc)) if isinstance(exc, NbtoolsError) else \
            f"{type(exc).__name__}: {exc}"
        self.error = JOBS[kind].label + msg

    # --- jobs (worker thread only) --------------------------------------------------------
    def _init_worker(self) -> None:
        torch.set_num_threads(self.threads)

    def _decode(self, i: int) -> str:
        return self.lab.tokenizer.decode([int(i)])

    def _run_measure(self, state: dict) -> None:
        t0 = time.perf_counter()
        try:
            self._measure(state, t0)
        finally:
            self.done_seq = state["request_seq"]

    def _measure(self, state: dict, t0: float) -> None:
        lab = self.lab
        if state["prompt"] != self._tokens_for or not self.tokens:
            tokens = self._inputs.tokens(state["prompt"])
            self._tokens_for = state["prompt"]
            self.tokens = tokens
        opts = self._inputs.options(state, len(self.tokens))
        pos, minus = opts.position, opts.minus
        names = state["ablation"]
        comps = parse_components(names) if names else ()
        check_components(comps, lab.shape)
        # every neuron's DE is N·L·d_mlp numbers: not fetched per click from a remote model
        far = lab.remote not in (False, "local")
        shown = dict(neurons=not far, logprobs=True, top_k=self.top_k)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if names:
                m, = lab.measure_many(state["prompt"], [comps], **shown, **opts.measure)
            else:  # nothing ablated: the clean run alone (its ablated fields mirror it)
                m = lab.measure_clean(state["prompt"], target=opts.measure["target"],
                                      measure_at=opts.measure["measure_at"], **shown)
        view = panels.measurement_view(m, self._decode, 0, self.n_neurons)
        if far:
            view["neurons"]["note"] = ("neurons are not fetched from a remote model on each "
                                       "click: lab.measure(..., neurons=True) measures them")
        if minus is not None:
            view["logit"]["minus"] = self._decode(minus)
        key = _key(state, int(m.target_ids[0]), pos, minus)
        view.update(seq=state["request_seq"], state=state, position=pos, key=key,
                    tokens_key=key + "|" + "+".join(names),
                    clean_only=not names, ablated_ui=list(names), n_layers=lab.n_layers,
                    n_heads=lab.n_heads, model=lab.name,
                    ms=round(1000 * (time.perf_counter() - t0), 1))
        notes = [str(w.message) for w in caught if names]
        self.measurement = m if names else None
        self.error = ""
        self.view = view
        what = " + ".join(names) if names else "clean run"
        self.status = f"{what} · {view['ms']:.0f} ms" + (f" · note: {notes[0]}" if notes else "")
        if self.color_by == "sr" or (self.map_on and self._map_result is None):
            self._schedule_sweep(state, key)
        if self.token_colors and names:
            self._schedule_tokens(state, view["tokens_key"])
        self._schedule_attention(state, comps if names else (), pos)
        if self.static_fallback:
            self._fallback.schedule(self._static_payload())

    def _run_tokens(self, state: dict, key: str) -> None:
        """The current ablation's SR, DE and ΔL at every position of the prompt (for "next",
        every position with a next token), in one measurement."""
        n = len(self.tokens)
        opts = self._inputs.options(state, n).measure
        at = list(range(n - 1 if state["target_mode"] == "next" else n))
        if not at:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m, = self.lab.measure_many(state["prompt"], [state["ablation"]],
                                       **{**opts, "measure_at": at})
        self.token_sr = {"key": key, "positions": at, "sr": panels.nums(m.self_repair),
                         "de": panels.nums(m.direct_effect), "dl": panels.nums(m.delta_logit),
                         "ablated": list(state["ablation"])}

    def _run_attention(self, state: dict, head: Head, pos: int, key: str) -> None:
        latest = self._submitted or {}
        if (latest.get("ablation"), latest.get("prompt")) != (state["ablation"], state["prompt"]):
            return  # another click came in since: its own measurement schedules its pattern
        pattern = self.lab.attention_pattern(state["prompt"], head.layer, head.head)
        self.attention = {"key": key, **panels.attention_data(pattern, self.tokens, pos,
                                                              head.layer, head.head)}

    def _run_sweep(self, state: dict, key: str, layer: int) -> None:
        if self._sweeps.done(key) > layer:
            return
        opts = self._inputs.options(state, len(self.tokens)).measure
        sweep = self._sweeps.measure_layer(self.lab, key, state["prompt"], layer, opts)
        if self.view.get("key") == key:
            self.sweep = sweep
            if sweep["done"] == self.lab.n_layers or \
                    time.monotonic() - self._map_sent >= MAP_EVERY_S:
                self._publish_map(key)  # (the whole map: not after every one of 30 layers)
            if self.color_by == "sr" or (self.map_on and self._map_result is None):
                self._schedule_sweep(state, key, layer + 1)

    def _export_bytes(self, fmt: str, dpi: int = 150) -> bytes:
        if fmt in export.DATA_FORMATS:
            if not self.view:
                raise RuntimeError("nothing measured yet; call wait() first")
            return export.view_data(self.view, fmt, self.sweep)
        if fmt not in export.FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(export.FORMATS)}")
        return export.figure_bytes(self.figure(dpi=dpi), fmt, dpi)

    def _export(self, fmt: str) -> None:
        data = self._export_bytes(fmt)
        label = "-".join(self.view.get("ablated_ui") or ["clean"])
        filename = f"nbtools-explorer-{label}.{fmt}"
        self.last_export = (filename, data)
        self.send({"type": "export", "format": fmt, "filename": filename,
                   "mime": export.FORMATS[fmt]}, buffers=[data])

    def _on_custom_msg(self, widget, content, buffers) -> None:
        if isinstance(content, dict) and content.get("type") == "code":
            try:
                self.send({"type": "code", "code": self.to_code()})
            except NbtoolsError as err:
                self.error = f"code: {err}"
            return
        if isinstance(content, dict) and content.get("type") == "undo":
            self.undo()
            return
        if isinstance(content, dict) and content.get("type") == "export":
            fmt = str(content.get("format", "png")).lower()
            if fmt not in export.FORMATS:
                self.error = (f"export: unknown format {fmt!r}; choose "
                              f"{', '.join(export.FORMATS)}")
                return
            self._submit("export", lambda: self._export(fmt))


def _threads(lab, threads: int | None) -> int:
    if threads is not None:
        if int(threads) < 1:
            raise InvalidInputError(f"threads must be at least 1, not {threads}")
        return int(threads)
    n_params = sum(p.numel() for p in lab.hf_model.parameters())
    return 1 if n_params < 200_000_000 else torch.get_num_threads()


def _check_same_model(result, lab) -> None:
    """InvalidInputError unless a repair map was measured on this Lab's model (its weights'
    fingerprint, else its shape)."""
    from ..sweeps.store import model_digest

    s = result.settings
    if (s.get("n_layers"), s.get("n_heads")) != (lab.n_layers, lab.n_heads) or \
            s.get("model_digest") not in (None, model_digest(lab.hf_model)):
        raise InvalidInputError(
            f"this repair map was measured on {s.get('model')!r} ({s.get('n_layers')} layers × "
            f"{s.get('n_heads')} heads), not on this Explorer's model {lab.name!r} "
            f"({lab.n_layers} × {lab.n_heads}); open it in an Explorer of that model")


def _where(remote) -> str:
    """Where a Lab runs, for labels: "" here, " · on NDIF", " · on <host>", " · local
    simulation of a remote run"."""
    if not remote:
        return ""
    if remote == "local":
        return " · local simulation of a remote run"
    from ..remote import NDIF_HOST, host_of

    host = host_of(remote).rstrip("/")
    return " · on NDIF" if host == NDIF_HOST else f" · on {host.split('://')[-1]}"


def _key(state: dict, target_id: int, pos: int, minus: int | None = None) -> str:
    """Identifies what a self-repair sweep depends on (everything but the ablation)."""
    parts = [state["prompt"], pos, target_id, minus, state["method"], state["source"],
             state["positions"], state["scale"]]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]
