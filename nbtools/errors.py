"""Exception types. Every check that can fail on user input runs before any forward pass."""


class NbtoolsError(Exception):
    """Base class of nbtools' own errors."""


class InvalidInputError(NbtoolsError, ValueError):
    """A prompt, target, component, position or option the user gave is not valid."""


class UnsupportedModelError(NbtoolsError, ValueError):
    """The model cannot be loaded, or its architecture has no adapter."""


class OutputError(NbtoolsError, OSError):
    """A file or folder cannot be written (missing or read-only folder, full disk, ...)."""


class InterventionError(NbtoolsError, RuntimeError):
    """An ablation did not take effect in the model (a broken hook path, a changed API)."""


def whole_number(value, what: str, choices: str = "") -> int:
    """`value` as an int if it is a whole number (int, numpy / 0-d torch integer; not a bool or
    a float), else InvalidInputError naming `what` (and the valid `choices`, if given)."""
    import operator

    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise InvalidInputError(f"{what} must be a whole number (an int), not {value!r}"
                            + (f"; {choices}" if choices else ""))
