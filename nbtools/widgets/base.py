"""The anywidget base class shared by every nbtools widget, and its static assets.

All widgets load one ES module (`static/core.js` + `panels.js` + `attention.js` + `mapview.js` +
`app.js`, concatenated — plain ESM, no bundler, no CDN) and one stylesheet; the `_kind` trait
picks the renderer.
"""

from __future__ import annotations

import math
from pathlib import Path

import anywidget
import traitlets

STATIC = Path(__file__).parent / "static"
JS_FILES = ("core.js", "panels.js", "attention.js", "mapview.js", "app.js")
CSS_FILES = ("widgets.css",)


def bundle(files) -> str:
    """The static files concatenated in order (the widgets' ESM or CSS)."""
    return "\n".join((STATIC / f).read_text(encoding="utf-8") for f in files)


ESM = bundle(JS_FILES)
CSS = bundle(CSS_FILES)


class NbWidget(anywidget.AnyWidget):
    """Base class: one shared front-end module; `_kind` names the panel renderer."""

    _esm = ESM
    _css = CSS
    _kind = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("", help="optional panel title").tag(sync=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._click_handlers: list = []
        self.on_msg(self._on_custom_msg)

    def _on_custom_msg(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and content.get("type") == "click":
            self._clicked(content)

    def _clicked(self, content: dict) -> None:  # overridden by clickable widgets
        pass

    def _fire(self, event: dict) -> None:
        for handler in list(self._click_handlers):
            handler(event)


def finite(x, what: str) -> float:
    """A finite float, or a TraitError naming `what`."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise traitlets.TraitError(f"{what} must be a number, not {x!r}") from None
    if not math.isfinite(value):
        raise traitlets.TraitError(f"{what} must be finite, not {value}")
    return value
