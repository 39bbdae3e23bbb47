"""The embedder contract: describe() without weights, embed() on batches of Observations.

How to add a model (see rcf.py for a complete example):

1. Subclass :class:`Embedder`; set ``family``; accept your config as keyword arguments in
   ``__init__`` (call ``super().__init__(device=..., weights=..., batch_size=...)``).
2. ``describe()`` returns a :class:`ModelCard` — bands, native scale, image size, temporal
   mode, outputs, dims, weight source, licence, preprocessing constants — loading nothing.
3. ``_load()`` builds the network and loads weights (called once, lazily, under a lock).
4. ``embed_batch(observations, output)`` turns up to ``batch_size`` observations into
   Embeddings: build one input tensor (:meth:`Embedder.input_tensor`), one forward pass,
   then :meth:`Embedder.pooled_embedding` / :meth:`Embedder.grid_embedding` per item, which
   georeference grids and fill ``meta``.
5. Register the model id in ``registry.py``.

Capability matching (:meth:`Embedder.check`) runs before any fetch or weight load.
"""

from __future__ import annotations

import math
import platform
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from affine import Affine

from .. import __version__
from ..embedding import Embedding, grid_dataarray
from ..errors import CapabilityError, ModelError, SpecError
from ..grid import GridSpec
from ..providers.base import Observation, make_observation
from ..specs import FrameSpec, InputPrep, OutputSpec, SensorSpec, TemporalSpec


@dataclass(frozen=True)
class ModelCard:
    """What a model is and needs, known without loading its weights."""

    id: str
    family: str
    summary: str
    bands: tuple[str, ...]
    scale_m: float
    image_size: int | None
    temporal: Literal["single", "series"]
    outputs: tuple[str, ...]
    dim: int
    weights: str
    license: str
    paper: str = ""
    grid_cell_px: int | None = None
    frames: FrameSpec | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: other ids that lead here, and the other sizes/architectures of the same embedder
    aliases: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    #: a precomputed product: no weights, nothing to run but reading and pooling
    precomputed: bool = False
    #: the licence forbids commercial use (CC BY-NC and the like)
    noncommercial: bool = False
    #: the attribution the data's licence asks for (products), shown wherever results are
    attribution: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands"] = list(self.bands)
        d["outputs"] = list(self.outputs)
        d["aliases"] = list(self.aliases)
        d["variants"] = list(self.variants)
        d["frames"] = self.frames.key() if self.frames else None
        return d


def fit_window(fit: str, h: int, w: int) -> tuple[int, int, int, int]:
    """(row, col, height, width) a fixed-size square model sees of an h×w input: the centred
    square of whole pixels (``fit="crop"``) or everything, aspect dropped (``"squash"``)."""
    if fit == "squash":
        return 0, 0, h, w
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def resolve_device(device: str) -> torch.device:
    """A torch device from 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'; SpecError when unusable."""
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"device={device!r}: no CUDA GPU is available here; use device='cpu' or 'auto'")
        return torch.device(name)
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise SpecError("device='mps': Apple Metal is not available here; use device='cpu' or 'auto'")
        return torch.device("mps")
    raise SpecError(f"device={device!r} must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")


class Embedder(ABC):
    """Base class of all models. One instance per (model, device, config); weights load once."""

    family: ClassVar[str] = "embedder"
    #: default number of observations per forward pass
    default_batch_size: ClassVar[int] = 16

    def __init__(
        self,
        model_id: str,
        *,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.model_id = model_id
        self.device = resolve_device(device)
        self.weights = weights
        bs = self.default_batch_size if batch_size is None else batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise SpecError(f"batch_size={batch_size!r} must be a whole number ≥ 1")
        self.batch_size = bs
        self._loaded = False
        self._lock = threading.Lock()
        #: what the loaded weights were (id and sha256), filled by _load
        self.weights_info: dict[str, Any] = {}

    # -- description and capability -------------------------------------------------------
    @abstractmethod
    def describe(self) -> ModelCard:
        """The model card; never loads weights or touches the network."""

    def check(
        self,
        output: OutputSpec,
        sensor: SensorSpec | None = None,
        temporal: TemporalSpec | None = None,
        frames: FrameSpec | None = None,
        prep: InputPrep | None = None,
    ) -> None:
        """Raise CapabilityError when the request asks for something this model cannot do."""
        card = self.describe()
        if output.mode not in card.outputs:
            raise CapabilityError(
                f"model {card.id!r} gives {' and '.join(card.outputs)} output, not {output.mode!r}; "
                f"use output={card.outputs[0]!r}"
            )
        wants = getattr(card, "collection", "sentinel-2-l2a")
        if sensor is not None and sensor.collection != wants:
            raise CapabilityError(
                f"model {card.id!r} reads {wants}, not {sensor.requested_collection or sensor.collection!r} "
                f"({sensor.collection}); leave collection unset or give {wants!r}"
            )
        if sensor is not None and sensor.bands is not None:
            missing = [b for b in card.bands if b not in sensor.bands]
            if missing:
                raise CapabilityError(
                    f"model {card.id!r} needs bands {', '.join(card.bands)} but the sensor spec lacks "
                    f"{', '.join(missing)}; add them or leave bands unset"
                )
        if frames is not None and card.temporal != "series":
            raise CapabilityError(
                f"model {card.id!r} takes one composite image, not a time series of frames; drop frames"
            )
        if prep is not None and prep.mode == "tile" and card.image_size is None:
            raise CapabilityError(
                f"model {card.id!r} takes any image size, so tiling does not apply; use InputPrep.resize()"
            )
        size = prep.tile_size if prep is not None else None
        if size is not None and card.image_size is not None and size != card.image_size:
            raise CapabilityError(
                f"model {card.id!r} tiles at its input size of {card.image_size} px, not tile_size={size}; "
                "leave tile_size unset"
            )

    def sensor_for(self, sensor: SensorSpec | None) -> SensorSpec:
        """The sensor spec to fetch with: the model's bands (in its order) filled in."""
        card = self.describe()
        base = sensor or SensorSpec(scale_m=card.scale_m)
        return base.with_bands(card.bands)

    def frames_for(self, frames: FrameSpec | None) -> FrameSpec | None:
        """The frames to fetch: None for single-image models, else the given or default frames."""
        card = self.describe()
        if card.temporal != "series":
            return None
        return frames or card.frames

    # -- weights --------------------------------------------------------------------------
    def load(self) -> None:
        """Build the network and load its weights, once (thread-safe)."""
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    @abstractmethod
    def _load(self) -> None:
        """Build the network and load weights; set ``self.weights_info``."""

    # -- inference ------------------------------------------------------------------------
    def embed(
        self,
        observations: Sequence[Observation],
        output: OutputSpec,
        prep: InputPrep | None = None,
    ) -> list[Embedding]:
        """Embeddings of `observations`, in order, computed in batches of ``batch_size``."""
        self.check(output, prep=prep)
        self.load()
        card = self.describe()
        if prep is not None and prep.mode == "auto":
            return self._embed_auto(observations, output, prep, card.image_size)
        if prep is not None and prep.mode == "tile" and card.image_size:
            return [self._embed_tiled(o, output, prep, card.image_size) for o in observations]
        out: list[Embedding] = []
        with torch.inference_mode():
            for i in range(0, len(observations), self.batch_size):
                batch = list(observations[i : i + self.batch_size])
                res = self.embed_batch(batch, output)
                if len(res) != len(batch):
                    raise ModelError(f"model {self.model_id!r} returned {len(res)} results for {len(batch)} inputs")
                out.extend(res)
        return out

    def _embed_auto(
        self, observations: Sequence[Observation], output: OutputSpec, prep: InputPrep, size: int | None
    ) -> list[Embedding]:
        """'auto': each place tiled or resized (see :meth:`InputPrep.resolve`), order kept."""
        chosen = [prep.resolve(o.grid.height, o.grid.width, size) for o in observations]
        resized = [i for i, p in enumerate(chosen) if p.mode == "resize"]
        out: list[Embedding | None] = [None] * len(observations)
        if resized:
            for i, e in zip(resized, self.embed([observations[i] for i in resized], output, None)):
                out[i] = e
        for i, p in enumerate(chosen):
            if p.mode == "tile":
                out[i] = self._embed_tiled(observations[i], output, p, size)  # type: ignore[arg-type]
        for e, p in zip(out, chosen):
            e.meta["input_prep"] = {"requested": prep.key(), "resolved": p.mode}  # type: ignore[union-attr]
        return out  # type: ignore[return-value]

    @abstractmethod
    def embed_batch(self, observations: list[Observation], output: OutputSpec) -> list[Embedding]:
        """One forward pass over a batch; returns one Embedding per observation."""

    def _embed_tiled(self, obs: Observation, output: OutputSpec, prep: InputPrep, size: int) -> Embedding:
        """Cut `obs` into size×size tiles at native resolution, embed them, stitch or average."""
        h, w = obs.grid.height, obs.grid.width
        ny, nx = math.ceil(h / size), math.ceil(w / size)
        if ny * nx > prep.max_tiles:
            raise CapabilityError(
                f"the place needs {ny * nx} tiles of {size} px, more than max_tiles={prep.max_tiles}; "
                "raise max_tiles, use a larger scale_m, or use InputPrep.resize()"
            )
        tiles = [_tile(obs, r * size, c * size, size) for r in range(ny) for c in range(nx)]
        with torch.inference_mode():
            res: list[Embedding] = []
            for i in range(0, len(tiles), self.batch_size):
                res.extend(self.embed_batch(tiles[i : i + self.batch_size], output))
        meta = dict(res[0].meta, input_prep=prep.key(), tiles=[ny, nx])
        if output.mode == "pooled":
            weights = np.array([t.roi_mask.sum() for t in tiles], dtype=np.float64)
            weights = weights if weights.sum() > 0 else np.ones_like(weights)
            vecs = np.stack([e.to_numpy() for e in res])
            if output.pooling == "max":
                vec = vecs[weights > 0].max(axis=0)
            else:
                vec = (vecs * weights[:, None]).sum(0) / weights.sum()
            return Embedding(vec.astype(np.float32), meta)
        rows = [np.concatenate([res[r * nx + c].to_numpy() for c in range(nx)], axis=2) for r in range(ny)]
        full = np.concatenate(rows, axis=1)
        gh, gw = full.shape[1:]
        cell = res[0].grid
        t = obs.grid.transform
        grid = GridSpec(obs.grid.crs, Affine(cell.transform.a, 0, t.c, 0, cell.transform.e, t.f), gw, gh)
        return Embedding(grid_dataarray(full, grid), meta)

    # -- helpers for subclasses ----------------------------------------------------------
    def input_tensor(
        self,
        observations: Sequence[Observation],
        bands: Sequence[str],
        size: int | None = None,
        mode: str = "bilinear",
        frames: bool = False,
    ) -> torch.Tensor:
        """One float32 tensor on the model's device, in the observations' units.

        Shape ``(B, C, H, W)`` from the first frame, or ``(B, T, C, H, W)`` with `frames`.
        Resized to `size`×`size` (antialiased when shrinking) when given, or when the
        observations differ in size (then to the first one's size).
        """
        arrays = [o.values(bands) for o in observations]
        if not frames:
            arrays = [a[0] for a in arrays]
        shapes = {a.shape for a in arrays}
        target = (size, size) if size else arrays[0].shape[-2:]
        if len(shapes) == 1 and arrays[0].shape[-2:] == tuple(target):
            x = torch.from_numpy(np.stack(arrays))
        else:
            x = torch.stack([_resize(torch.from_numpy(a), target, mode) for a in arrays])
        return x.to(self.device)

    def base_meta(self, obs: Observation, output: OutputSpec) -> dict[str, Any]:
        """Provenance shared by all outputs of this model for `obs`."""
        card = self.describe()
        return {
            "model": card.id,
            "family": card.family,
            "weights": dict(self.weights_info) or {"source": card.weights},
            "config": dict(card.config),
            "preprocessing": dict(card.preprocessing),
            "output": output.key(),
            "crs": obs.grid.crs,
            "source": dict(obs.meta),
            "versions": {"eoembed": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "device": str(self.device),
        }

    def pooled_embedding(self, vector: torch.Tensor | np.ndarray, obs: Observation, output: OutputSpec, **extra: Any) -> Embedding:
        vec = vector.detach().float().cpu().numpy() if isinstance(vector, torch.Tensor) else np.asarray(vector)
        return Embedding(vec.astype(np.float32).reshape(-1), {**self.base_meta(obs, output), **extra})

    def grid_embedding(
        self,
        fmap: torch.Tensor | np.ndarray,
        obs: Observation,
        output: OutputSpec,
        cell_px: int | None = None,
        **extra: Any,
    ) -> Embedding:
        """Georeference a ``(D, h, w)`` feature map of `obs`.

        Without `cell_px` the map covers exactly `obs`'s extent (cells of H/h × W/w pixels);
        with it, each cell is `cell_px` input pixels from the top-left corner (the last row
        and column may reach past the place's edge).
        """
        arr = fmap.detach().float().cpu().numpy() if isinstance(fmap, torch.Tensor) else np.asarray(fmap)
        _, h, w = arr.shape
        if cell_px is None:
            grid = obs.grid.coarsen(h, w)
        else:
            t = obs.grid.transform
            grid = GridSpec(obs.grid.crs, Affine(t.a * cell_px, 0.0, t.c, 0.0, t.e * cell_px, t.f), w, h)
        meta = {**self.base_meta(obs, output), **extra, "grid": {"height": h, "width": w, "res": list(grid.res)}}
        return Embedding(grid_dataarray(arr, grid), meta)


def pool_feature_maps(
    fmaps: torch.Tensor,
    masks: Sequence[np.ndarray],
    pooling: str = "mean",
) -> torch.Tensor:
    """Pool ``(B, D, h, w)`` feature maps to ``(B, D)``, counting only cells inside each mask.

    Each cell is weighted by the fraction of its pixels that the (H, W) mask covers, so a
    polygon's embedding comes from the pixels inside it. An empty mask pools everything.
    """
    b, _, h, w = fmaps.shape
    weights = torch.stack(
        [F.adaptive_avg_pool2d(torch.from_numpy(m.astype(np.float32))[None, None], (h, w))[0, 0] for m in masks]
    ).to(fmaps.device, fmaps.dtype)
    empty = weights.flatten(1).sum(1) <= 0
    if empty.any():
        weights[empty] = 1.0
    if pooling == "max":
        masked = fmaps.masked_fill((weights <= 0)[:, None], float("-inf"))
        return masked.flatten(2).max(dim=2).values
    wsum = weights.flatten(1).sum(1)
    return (fmaps * weights[:, None]).flatten(2).sum(2) / wsum[:, None]


def _resize(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """Resize the last two dims of a (…, H, W) tensor."""
    lead = x.shape[:-2]
    flat = x.reshape(1, -1, *x.shape[-2:])
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    kwargs = {"antialias": True} if shrink and mode in ("bilinear", "bicubic") else {}
    align = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(flat, size=tuple(size), mode=mode, **align, **kwargs)
    return out.reshape(*lead, *size)


def _tile(obs: Observation, y0: int, x0: int, size: int) -> Observation:
    """A size×size window of `obs` at (y0, x0), padded with fill (invalid) past the edges."""
    t, c = obs.array.shape[:2]
    vals = np.zeros((t, c, size, size), np.float32)
    valid = np.zeros((t, size, size), bool)
    roi = np.zeros((size, size), bool)
    src = obs.values()[:, :, y0 : y0 + size, x0 : x0 + size]
    hh, ww = src.shape[-2:]
    vals[:, :, :hh, :ww] = src
    valid[:, :hh, :ww] = obs.valid[:, y0 : y0 + size, x0 : x0 + size]
    roi[:hh, :ww] = obs.roi_mask[y0 : y0 + size, x0 : x0 + size]
    grid = GridSpec(obs.grid.crs, obs.grid.transform * Affine.translation(x0, y0), size, size)
    return make_observation(vals, valid, grid, obs.bands, obs.dates, roi, obs.meta)
