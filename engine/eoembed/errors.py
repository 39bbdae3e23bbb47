"""Typed errors: every failure a user can fix is one of these, with one sentence that says how."""

from __future__ import annotations


class EoembedError(Exception):
    """Base of every error eoembed raises on purpose; its message is one actionable sentence."""


class SpecError(EoembedError, ValueError):
    """A request specification (place, time, sensor, output) is invalid."""


class ProviderError(EoembedError):
    """Imagery could not be found or read for the requested place and time."""


class PermanentProviderError(ProviderError):
    """Imagery that exists but can never be read as asked (HTTP 404, not a GeoTIFF): no retry helps."""


class ModelError(EoembedError):
    """A model could not be built, its weights resolved or loaded, or its inference failed."""


class WeightsError(ModelError):
    """A checkpoint is missing, unreachable, unsafe to load or does not fit the network."""


class CapabilityError(EoembedError):
    """The request asks a model for something it cannot do (output, bands, time mode)."""


class ExportError(EoembedError):
    """Results could not be written or read back."""
