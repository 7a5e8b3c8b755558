"""Exception types. Every check that can fail on user input runs before any forward pass."""


class NbtoolsError(Exception):
    """Base class of nbtools' own errors."""


class InvalidInputError(NbtoolsError, ValueError):
    """A prompt, target, component, position or option the user gave is not valid."""


class UnsupportedModelError(NbtoolsError, ValueError):
    """The model cannot be loaded, or its architecture has no adapter."""


class InterventionError(NbtoolsError, RuntimeError):
    """An ablation did not take effect in the model (a broken hook path, a changed API)."""
