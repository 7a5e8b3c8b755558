"""Model sources (embedded, registered, GGUF, folders, hub ids) and the per-family adapters."""

from .adapters import ADAPTERS, Adapter, adapter_for, supported_model_types
from .registry import REGISTRY, fetch

__all__ = ["ADAPTERS", "REGISTRY", "Adapter", "adapter_for", "fetch", "supported_model_types"]
