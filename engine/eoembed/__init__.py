"""eoembed: embeddings from remote-sensing foundation models for any place and any time.

    >>> import eoembed
    >>> e = eoembed.get_embedding("rcf", eoembed.PointBuffer(12.49, 41.89, 320),
    ...                           eoembed.TemporalSpec.year(2022), source="scenes/")
"""

__version__ = "0.1.0"

from .api import describe_model, embed_text, get_embedding, get_embeddings_batch, list_models  # noqa: E402
from .embedding import Embedding  # noqa: E402
from .errors import (  # noqa: E402
    CapabilityError,
    EoembedError,
    ExportError,
    ModelError,
    ProviderError,
    SpecError,
    WeightsError,
)
from .specs import (  # noqa: E402
    BBox,
    FrameSpec,
    Geometry,
    InputPrep,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
)

__all__ = [
    "BBox", "CapabilityError", "Embedding", "EoembedError", "ExportError", "FrameSpec", "Geometry",
    "InputPrep", "ModelError", "OutputSpec", "PointBuffer", "ProviderError", "SensorSpec", "SpecError",
    "TemporalSpec", "WeightsError", "describe_model", "embed_text", "get_embedding",
    "get_embeddings_batch", "list_models",
]
