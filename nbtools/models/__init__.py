"""Model loading and the per-family architecture adapters."""

from .adapters import ADAPTERS, Adapter, adapter_for, supported_model_types
from .loading import load
from .registry import REGISTRY, fetch

__all__ = ["ADAPTERS", "REGISTRY", "Adapter", "adapter_for", "fetch", "load",
           "supported_model_types"]
