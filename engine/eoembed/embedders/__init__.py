"""Models: one embedder per file (input contract, weights, describe) and the registry."""

from .base import Embedder, ModelCard
from .registry import build_embedder, describe_model, get_embedder, list_models

__all__ = ["Embedder", "ModelCard", "build_embedder", "describe_model", "get_embedder", "list_models"]
