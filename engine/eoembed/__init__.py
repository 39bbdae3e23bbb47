"""eoembed: embeddings from remote-sensing foundation models for any place and any time.

    >>> import eoembed
    >>> e = eoembed.get_embedding("rcf", eoembed.PointBuffer(12.49, 41.89, 320),
    ...                           eoembed.TemporalSpec.year(2022), source="scenes/")

The public names are imported on first use, so that light users (the QGIS plugin's analysis
tools, reading exports) never load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    # places, times, sensors, outputs
    **dict.fromkeys(
        ["BBox", "FetchSpec", "FrameSpec", "Geometry", "InputPrep", "InputPrepSpec", "OutputSpec", "PointBuffer",
         "SensorSpec", "TemporalSpec"],
        "specs",
    ),
    # errors
    **dict.fromkeys(
        ["CapabilityError", "EoembedError", "ExportError", "ModelError", "ProviderError", "SpecError", "WeightsError"],
        "errors",
    ),
    "Embedding": "embedding",
    # the calls
    **dict.fromkeys(
        ["describe_model", "embed_text", "export_batch", "get_embedding", "get_embeddings_batch", "list_models"],
        "api",
    ),
    "load_export": "export",
    **dict.fromkeys(["ExportConfig", "ExportModelRequest", "ExportTarget"], "export.targets"),
    # arrays in
    **dict.fromkeys(
        ["UserData", "get_embedding_from_data", "get_embeddings_batch_from_data", "list_models_for_data"],
        "from_data",
    ),
    # analysis of grids (numpy only)
    **dict.fromkeys(
        ["cosine_similarity_map", "kmeans", "pca_rgb", "reference_at", "reference_in", "text_similarity_map"],
        "analysis",
    ),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'eoembed' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
