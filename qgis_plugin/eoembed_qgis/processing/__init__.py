"""eoembed in the QGIS Processing toolbox: the provider and one module per algorithm."""

from .provider import EoembedProvider

__all__ = ["EoembedProvider"]
