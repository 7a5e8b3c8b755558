"""Model loading and the per-family architecture adapters."""

from .adapters import ADAPTERS, Adapter, adapter_for, supported_model_types
from .loading import load

__all__ = ["ADAPTERS", "Adapter", "adapter_for", "load", "supported_model_types"]
