"""Model registry: model ids → embedder classes (imported lazily) and the embedder cache."""

from __future__ import annotations

import importlib
import threading
from typing import Any

from ..errors import SpecError
from .base import Embedder, ModelCard

#: model id → (module in eoembed.embedders, class name, fixed config)
_MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "rcf": ("rcf", "RCFEmbedder", {"mode": "gaussian"}),
    "rcf-empirical": ("rcf", "RCFEmbedder", {"mode": "empirical"}),
    "remoteclip": ("remoteclip", "RemoteCLIPEmbedder", {"arch": "vit-b-32"}),
    "remoteclip-vit-b-32": ("remoteclip", "RemoteCLIPEmbedder", {"arch": "vit-b-32"}),
    "remoteclip-vit-l-14": ("remoteclip", "RemoteCLIPEmbedder", {"arch": "vit-l-14"}),
    "remoteclip-rn50": ("remoteclip", "RemoteCLIPEmbedder", {"arch": "rn50"}),
    "llama3-ms-clip-base": ("msclip", "MSCLIPEmbedder", {}),
    "remotesam": ("remotesam", "RemoteSAMEmbedder", {}),
    "anysat": ("anysat", "AnySatEmbedder", {}),
    "galileo": ("galileo", "GalileoEmbedder", {}),
    "galileo-nano": ("galileo", "GalileoEmbedder", {"size": "nano"}),
    "galileo-tiny": ("galileo", "GalileoEmbedder", {"size": "tiny"}),
    "galileo-base": ("galileo", "GalileoEmbedder", {"size": "base"}),
    "presto": ("presto", "PrestoEmbedder", {}),
    "prithvi": ("prithvi", "PrithviEmbedder", {"variant": "tiny-tl"}),
    "prithvi-eo-2.0-tiny-tl": ("prithvi", "PrithviEmbedder", {"variant": "tiny-tl"}),
    "prithvi-eo-2.0-100m-tl": ("prithvi", "PrithviEmbedder", {"variant": "100m-tl"}),
    "prithvi-eo-2.0-300m": ("prithvi", "PrithviEmbedder", {"variant": "300m"}),
    "prithvi-eo-2.0-300m-tl": ("prithvi", "PrithviEmbedder", {"variant": "300m-tl"}),
    "prithvi-eo-2.0-600m": ("prithvi", "PrithviEmbedder", {"variant": "600m"}),
    "prithvi-eo-2.0-600m-tl": ("prithvi", "PrithviEmbedder", {"variant": "600m-tl"}),
    "satmae": ("satmae", "SatMAEEmbedder", {}),
    "satmaepp": ("satmaepp", "SatMAEPPEmbedder", {"variant": "rgb"}),
    "satmaepp-rgb": ("satmaepp", "SatMAEPPEmbedder", {"variant": "rgb"}),
    "satmaepp-s2": ("satmaepp", "SatMAEPPEmbedder", {"variant": "s2"}),
    "scalemae": ("scalemae", "ScaleMAEEmbedder", {}),
}

# The one piece of global state: built embedders, keyed by (model, device, weights, config).
_CACHE: dict[tuple, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def list_models() -> list[str]:
    """Ids of every model eoembed knows, sorted."""
    return sorted(_MODELS)


def _entry(model: str) -> tuple[str, str, dict[str, Any]]:
    key = str(model).strip().lower()
    if key not in _MODELS:
        close = [m for m in _MODELS if key.split("-")[0] in m]
        hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
        raise SpecError(f"unknown model {model!r}{hint}; `eoembed models` lists the {len(_MODELS)} known ids")
    return _MODELS[key]


def embedder_class(model: str) -> tuple[type[Embedder], dict[str, Any]]:
    """The embedder class of `model` and the config that the id fixes."""
    module, cls, fixed = _entry(model)
    mod = importlib.import_module(f"{__package__}.{module}")
    return getattr(mod, cls), dict(fixed)


def build_embedder(model: str, *, device: str = "cpu", weights: str | None = None, **config: Any) -> Embedder:
    """A new embedder for `model` (weights are not loaded until first use)."""
    cls, fixed = embedder_class(model)
    clash = set(fixed) & set(config)
    if clash:
        raise SpecError(f"model {model!r} fixes {', '.join(sorted(clash))}; choose another model id instead")
    try:
        return cls(str(model).strip().lower(), device=device, weights=weights, **fixed, **config)
    except TypeError as exc:
        raise SpecError(f"model {model!r} does not take these options: {exc}") from exc


def get_embedder(model: str, *, device: str = "cpu", weights: str | None = None, **config: Any) -> Embedder:
    """The cached embedder for (model, device, weights, config); built on first request."""
    key = (str(model).strip().lower(), str(device), weights, tuple(sorted((k, repr(v)) for k, v in config.items())))
    with _CACHE_LOCK:
        emb = _CACHE.get(key)
        if emb is None:
            emb = build_embedder(model, device=device, weights=weights, **config)
            _CACHE[key] = emb
        return emb


def describe_model(model: str, **config: Any) -> ModelCard:
    """The model card of `model`, without loading weights or touching the network."""
    return build_embedder(model, **config).describe()


def clear_cache() -> None:
    """Forget every cached embedder (frees their weights)."""
    with _CACHE_LOCK:
        _CACHE.clear()
