"""Model registry: model ids → embedder classes (imported lazily) and the embedder cache."""

from __future__ import annotations

import importlib
import threading
from dataclasses import replace
from typing import Any

from ..errors import SpecError
from .base import Embedder, ModelCard

#: canonical model id → (module in eoembed.embedders, class name, fixed config)
_MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "rcf": ("rcf", "RCFEmbedder", {"mode": "gaussian"}),
    "rcf-empirical": ("rcf", "RCFEmbedder", {"mode": "empirical"}),
    "remoteclip-vit-b-32": ("remoteclip", "RemoteCLIPEmbedder", {"arch": "vit-b-32"}),
    "remoteclip-vit-l-14": ("remoteclip", "RemoteCLIPEmbedder", {"arch": "vit-l-14"}),
    "remoteclip-rn50": ("remoteclip", "RemoteCLIPEmbedder", {"arch": "rn50"}),
    "llama3-ms-clip-base": ("msclip", "MSCLIPEmbedder", {}),
    "remotesam": ("remotesam", "RemoteSAMEmbedder", {}),
    "anysat": ("anysat", "AnySatEmbedder", {}),
    "galileo-nano": ("galileo", "GalileoEmbedder", {"size": "nano"}),
    "galileo-tiny": ("galileo", "GalileoEmbedder", {"size": "tiny"}),
    "galileo-base": ("galileo", "GalileoEmbedder", {"size": "base"}),
    "presto": ("presto", "PrestoEmbedder", {}),
    "croma-base": ("croma", "CROMAEmbedder", {"size": "base"}),
    "croma-large": ("croma", "CROMAEmbedder", {"size": "large"}),
    "dofa-base": ("dofa", "DOFAEmbedder", {"size": "base"}),
    "dofa-large": ("dofa", "DOFAEmbedder", {"size": "large"}),
    "softcon-vits14": ("softcon", "SoftConEmbedder", {"arch": "vits14"}),
    "softcon-vitb14": ("softcon", "SoftConEmbedder", {"arch": "vitb14"}),
    "clay-v1.5": ("clay", "ClayEmbedder", {}),
    "prithvi-eo-2.0-tiny-tl": ("prithvi", "PrithviEmbedder", {"variant": "tiny-tl"}),
    "prithvi-eo-2.0-100m-tl": ("prithvi", "PrithviEmbedder", {"variant": "100m-tl"}),
    "prithvi-eo-2.0-300m": ("prithvi", "PrithviEmbedder", {"variant": "300m"}),
    "prithvi-eo-2.0-300m-tl": ("prithvi", "PrithviEmbedder", {"variant": "300m-tl"}),
    "prithvi-eo-2.0-600m": ("prithvi", "PrithviEmbedder", {"variant": "600m"}),
    "prithvi-eo-2.0-600m-tl": ("prithvi", "PrithviEmbedder", {"variant": "600m-tl"}),
    "satmae": ("satmae", "SatMAEEmbedder", {}),
    "satmaepp-rgb": ("satmaepp", "SatMAEPPEmbedder", {"variant": "rgb"}),
    "satmaepp-s2": ("satmaepp", "SatMAEPPEmbedder", {"variant": "s2"}),
    "scalemae": ("scalemae", "ScaleMAEEmbedder", {}),
    "alphaearth": ("products", "AlphaEarthEmbedder", {}),
    "tessera": ("products", "TesseraEmbedder", {}),
    "copernicus-embed": ("products", "CopernicusEmbedEmbedder", {}),
}

#: alias → canonical id. Through an alias the target's fixed config is only a default, so
#: `get_embedding("galileo", size="base")` is galileo-base.
_ALIASES: dict[str, str] = {
    "remoteclip": "remoteclip-vit-b-32",
    "msclip": "llama3-ms-clip-base",
    "galileo": "galileo-nano",
    "croma": "croma-base",
    "dofa": "dofa-base",
    "softcon": "softcon-vits14",
    "clay": "clay-v1.5",
    "prithvi": "prithvi-eo-2.0-tiny-tl",
    "satmaepp": "satmaepp-rgb",
    "scale-mae": "scalemae",
    "gse": "alphaearth",
}

#: rs-embed's model ids → eoembed's (the first candidate registered here wins). An id whose model
#: eoembed does not have stays unknown, so asking for it is the unknown-model sentence.
_RS_EMBED_IDS: dict[str, tuple[str, ...]] = {
    "remoteclip_s2rgb": ("remoteclip-vit-b-32",),
    "prithvi": ("prithvi-eo-2.0-100m-tl", "prithvi"),
    "prithvi_eo_v2_s2_6b": ("prithvi-eo-2.0-100m-tl", "prithvi"),
    "satmae_rgb": ("satmae",),
    "satmaepp_rgb": ("satmaepp-rgb", "satmaepp"),
    "satmae++": ("satmaepp-rgb", "satmaepp"),
    "scalemae_rgb": ("scalemae",),
    "dofa": ("dofa-base",),
    "clay": ("clay-v1.5",),
    "gse": ("alphaearth",),
    "gse_annual": ("alphaearth",),
    "copernicus": ("copernicus-embed",),
    "copernicus_embed": ("copernicus-embed",),
    "terrafm_b": ("terrafm-b", "terrafm"),
    "thor_1_0_base": ("thor-1.0-base", "thor"),
    "satvision_toa": ("satvision-toa", "satvision"),
}


def _registered(candidates: tuple[str, ...]) -> str | None:
    return next((t for t in candidates if t in _MODELS), None)


_ALIASES.update({
    alias: _registered(targets)  # type: ignore[misc]
    for alias, targets in _RS_EMBED_IDS.items()
    if _registered(targets) and alias not in _MODELS and alias not in _ALIASES
})

# The one piece of global state: built embedders, keyed by (model, device, weights, config).
_CACHE: dict[tuple, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def list_models(*, aliases: bool = False) -> list[str]:
    """Canonical ids of every model eoembed knows, sorted (with their aliases if asked)."""
    return sorted(_MODELS) + (sorted(_ALIASES) if aliases else [])


def _key(model: str) -> str:
    return str(model).strip().lower()


def resolve_model_id(model: str) -> str:
    """The canonical id of `model` (an id or an alias); SpecError naming close ids if unknown."""
    key = _key(model)
    key = _ALIASES.get(key, key)
    if key not in _MODELS:
        stem = key.replace("_", "-").split("-")[0]
        close = [m for m in (*_MODELS, *_ALIASES) if stem and stem in m]
        hint = f" (did you mean {', '.join(sorted(close)[:3])}?)" if close else ""
        raise SpecError(f"unknown model {model!r}{hint}; `eoembed models` lists the {len(_MODELS)} known ids")
    return key


def model_aliases(model: str) -> tuple[str, ...]:
    """The aliases that lead to `model`'s canonical id."""
    target = resolve_model_id(model)
    return tuple(sorted(a for a, t in _ALIASES.items() if t == target))


def model_variants(model: str) -> tuple[str, ...]:
    """The other canonical ids served by the same embedder class (sizes, architectures)."""
    target = resolve_model_id(model)
    module, cls, _ = _MODELS[target]
    return tuple(sorted(m for m, (mo, c, _) in _MODELS.items() if (mo, c) == (module, cls) and m != target))


def embedder_class(model: str) -> tuple[type[Embedder], dict[str, Any]]:
    """The embedder class of `model` and the config that the id fixes."""
    module, cls, fixed = _MODELS[resolve_model_id(model)]
    mod = importlib.import_module(f"{__package__}.{module}")
    return getattr(mod, cls), dict(fixed)


def _variant_for(target: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Through an alias: the canonical id whose fixed config the user's options select."""
    module, cls, fixed = _MODELS[target]
    merged = {**fixed, **config}
    for mid, (mo, c, fx) in _MODELS.items():
        if (mo, c) == (module, cls) and fx and all(merged.get(k) == v for k, v in fx.items()):
            return mid, {k: v for k, v in config.items() if k not in fx}
    return target, config


def build_embedder(model: str, *, device: str = "cpu", weights: str | None = None, **config: Any) -> Embedder:
    """A new embedder for `model` (weights are not loaded until first use)."""
    target = resolve_model_id(model)
    if _key(model) in _ALIASES:
        target, config = _variant_for(target, config)
    cls, fixed = embedder_class(target)
    clash = set(fixed) & set(config)
    if clash:
        raise SpecError(f"model {model!r} fixes {', '.join(sorted(clash))}; choose another model id instead")
    try:
        return cls(target, device=device, weights=weights, **fixed, **config)
    except TypeError as exc:
        raise SpecError(f"model {model!r} does not take these options: {exc}") from exc


def get_embedder(model: str, *, device: str = "cpu", weights: str | None = None, **config: Any) -> Embedder:
    """The cached embedder for (model, device, weights, config); built on first request."""
    key = (_key(model), str(device), weights, tuple(sorted((k, repr(v)) for k, v in config.items())))
    with _CACHE_LOCK:
        emb = _CACHE.get(key)
        if emb is None:
            emb = build_embedder(model, device=device, weights=weights, **config)
            _CACHE[key] = emb
        return emb


def describe_model(model: str, **config: Any) -> ModelCard:
    """The model card of `model`, without loading weights or touching the network."""
    card = build_embedder(model, **config).describe()
    return replace(card, aliases=model_aliases(card.id), variants=model_variants(card.id))


def clear_cache() -> None:
    """Forget every cached embedder (frees their weights)."""
    with _CACHE_LOCK:
        _CACHE.clear()
