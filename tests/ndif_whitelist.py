"""NDIF's sandbox whitelist, pinned: the modules its server lets a request's pickle name, and
the modules a request's code may import while it runs.

Read from github.com/ndif-team/ndif, src/ndif/services/ray/nn/security/whitelist.yaml at
commit 09d8624bf823f7a6b0e374f5a9122a35198b70c6 ("modules" and "deserialization_modules";
strict: the module itself only; otherwise the module and its submodules, minus the blocked
ones). Update it from a newer commit when NDIF changes it; `ndif_standin.py` enforces it.
"""

NDIF_COMMIT = "09d8624bf823f7a6b0e374f5a9122a35198b70c6"

# (name, strict)
EXECUTION = [
    ("PIL", False), ("re", False), ("dataclasses", False), ("builtins", True),
    ("torch", False), ("collections", False), ("nnsight", True),
    ("nnsight.intervention.envoy", False), ("nnsight.intervention.tracing.globals", False),
    ("time", False), ("numpy", False), ("sympy", False), ("nnterp", False), ("math", False),
    ("einops", False), ("urllib3", False), ("typing", False), ("_operator", True),
    ("operator", True), ("pandas", False), ("enum", False), ("__future__", False),
    ("diffusers", False), ("transformers", False), ("tqdm", False), ("heapq", False),
    ("json", False), ("warnings", False), ("functools", False), ("_functools", False),
    ("jinja2", False), ("encodings", False), ("peft", False), ("pydantic", False),
    ("argparse", False), ("datasets", False), ("tokenizers", False),
    ("huggingface_hub", False), ("httpcore", False), ("fsspec", False), ("scipy", False),
    ("regex", False), ("concurrent", False), ("io", False),
    ("_frozen_importlib_external", False), ("_frozen_importlib", False),
]
DESERIALIZATION_EXTRA = [
    ("pickle", False), ("cloudpickle", False), ("copyreg", False), ("nnsight", False),
    ("transformers", False), ("transformers_modules", False),
]
BLOCKED = ["torch.multiprocessing", "torch.utils.cpp_extension", "torch.package", "torch.hub",
           "torch.utils.model_zoo", "numpy.ctypeslib", "numpy.distutils"]
# `nnsight` (strict) exposes only `save` to a request's code
NNSIGHT_ATTRIBUTES = ["save"]


def allowed(module: str, entries) -> bool:
    """Whether `module` is whitelisted by `entries` (and not a blocked submodule)."""
    if any(module == b or module.startswith(b + ".") for b in BLOCKED):
        return False
    return any(module == name or (not strict and module.startswith(name + "."))
               for name, strict in entries)
