"""Presto on Sentinel-2 pixel time series: a vector per place (mean of its pixels) or a
georeferenced per-pixel embedding grid."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pyproj import Transformer

from ..embedding import Embedding
from ..errors import ModelError, SpecError, WeightsError
from ..nn.presto import (
    ADD_BY,
    DIVIDE_BY,
    DW_MISSING,
    PRESTO_BANDS,
    RAW_BANDS,
    PrestoConfig,
    PrestoEncoder,
    normalize,
)
from ..providers.base import Observation
from ..specs import FrameSpec, OutputSpec
from ..weights import file_sha256, load_checkpoint, resolve
from .base import Embedder, ModelCard

#: where the released checkpoint lives (no Hugging Face copy is published)
UPSTREAM = "github.com/nasaharvest/presto: data/default_model.pt and config/default.json"
CHECKPOINT = "default_model.pt"
CONFIG = "default.json"
#: Sentinel-2 bands fed to the model (B09 is dropped by Presto's normalisation, so not fetched)
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
_RAW_S2 = [RAW_BANDS.index(b.replace("B0", "B")) for b in S2_BANDS]
#: bands never fed (masked): S1, ERA5 and SRTM
_ABSENT = [PRESTO_BANDS.index(b) for b in ("VV", "VH", "temperature_2m", "total_precipitation",
                                           "elevation", "slope")]
#: pixels per forward pass (7 tokens each for one frame)
PIXEL_CHUNK = 8192


class PrestoEmbedder(Embedder):
    """Presto (Tseng et al. 2023, "Lightweight, Pre-trained Transformers for Remote Sensing
    Timeseries", arXiv:2304.14065; MIT): a small transformer that embeds the time series of a
    single pixel (:class:`eoembed.nn.presto.PrestoEncoder`). Here it sees Sentinel-2 L2A
    (B02–B12 without B01/B09/B10) and the NDVI Presto derives from it; S1, ERA5, SRTM and
    Dynamic World are absent (masked), the location token is each pixel's latitude/longitude.

    Input: reflectance × 10000 through Presto's ``(x + ADD) / DIV`` (÷ 10000 for S2), NDVI
    from the normalised B8/B4. ``temporal=False`` (default): one composite, one timestep with
    its calendar month; ``temporal=True``: monthly frames (up to 24), each with its month.
    Invalid pixels of a frame are masked (their tokens dropped); a pixel with no valid frame
    has no embedding.

    Outputs: grid = one embedding per pixel (or the mean over ``grid_cell`` × ``grid_cell``
    pixel cells), georeferenced, NaN for pixels without data; pooled = the mean (or max) of the
    pixel embeddings inside the place (polygon mask) that have data.

    Weights: ``weights=`` a ``default_model.pt`` file or a folder holding it (``default.json``
    beside it is read when present); without it ``$EOEMBED_WEIGHTS_DIR/nasaharvest/presto/``
    is searched. Only the encoder is loaded (strictly); the decoder is ignored.

    Args:
        temporal: monthly frames instead of one composite.
        grid_cell: pixels per grid cell side (1 = per-pixel grid).
    """

    family: ClassVar[str] = "presto"
    default_batch_size: ClassVar[int] = 16

    def __init__(
        self,
        model_id: str = "presto",
        *,
        temporal: bool = False,
        grid_cell: int = 1,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, device=device, weights=weights, batch_size=batch_size)
        if not isinstance(temporal, bool):
            raise SpecError(f"Presto temporal={temporal!r} must be True (monthly frames) or False")
        if isinstance(grid_cell, bool) or not isinstance(grid_cell, int) or not 1 <= grid_cell <= 64:
            raise SpecError(f"Presto grid_cell={grid_cell!r} must be a whole number from 1 to 64")
        self.temporal = temporal
        self.grid_cell = grid_cell
        self._model: PrestoEncoder | None = None

    # -- card -----------------------------------------------------------------------------
    def describe(self) -> ModelCard:
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary="Presto on Sentinel-2 pixel series: per-pixel grid or the mean over a place, "
                    f"{'monthly frames' if self.temporal else 'one composite'}.",
            bands=S2_BANDS,
            scale_m=10.0,
            image_size=None,
            temporal="series" if self.temporal else "single",
            outputs=("pooled", "grid"),
            dim=PrestoConfig().embedding_size,
            weights=self.weights or f"$EOEMBED_WEIGHTS_DIR/nasaharvest/presto ({UPSTREAM})",
            license="MIT",
            paper="Tseng et al. 2023, Presto (arXiv:2304.14065)",
            grid_cell_px=self.grid_cell,
            frames=FrameSpec.by_month() if self.temporal else None,
            preprocessing={
                "units": "S2 L2A reflectance x 10000",
                "normalize": "(x + add) / div per band, B9 dropped, NDVI from normalised B8/B4",
                "add": [ADD_BY[i] for i in _RAW_S2],
                "div": [DIVIDE_BY[i] for i in _RAW_S2],
                "absent": "S1, ERA5, SRTM, Dynamic World: masked",
                "location": "latitude/longitude of each pixel centre (EPSG:4326)",
                "invalid_pixels": "masked per frame; pixels with no valid frame give NaN",
                "months": "calendar month of each frame's date",
            },
            config={
                "temporal": self.temporal, "grid_cell": self.grid_cell,
                "pixel": "LayerNorm of the mean of the visible output tokens (upstream eval)",
                "pooled": "mean of the place's pixel embeddings",
            },
        )

    # -- weights --------------------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        if self.weights is not None:
            is_file = Path(self.weights).expanduser().is_file()
            return resolve(self.weights, None if is_file else CHECKPOINT)
        mirror = os.environ.get("EOEMBED_WEIGHTS_DIR")
        if mirror:
            candidate = Path(mirror).expanduser() / "nasaharvest" / "presto" / CHECKPOINT
            if candidate.is_file():
                return candidate
        raise WeightsError(
            f"Presto weights are not published on the Hugging Face Hub: download {UPSTREAM} and "
            "pass weights=<that file or its folder>, or put them in "
            "$EOEMBED_WEIGHTS_DIR/nasaharvest/presto/."
        )

    def _load(self) -> None:
        path = self._checkpoint_path()
        config_path = path.parent / CONFIG
        config = PrestoConfig.from_json(config_path) if config_path.is_file() else PrestoConfig()
        model = PrestoEncoder.from_pretrained(load_checkpoint(path), config)
        self._model = model.eval().to(self.device)
        self.weights_info = {"source": str(path), "sha256": file_sha256(path),
                             "config": config_path.name if config_path.is_file() else "defaults"}

    @property
    def network(self) -> PrestoEncoder:
        """The loaded encoder (loads on first use)."""
        self.load()
        if self._model is None:
            raise ModelError(f"{self.model_id!r} failed to load its network")
        return self._model

    # -- inference ------------------------------------------------------------------------
    @staticmethod
    def pixel_latlons(obs: Observation) -> np.ndarray:
        """``[H·W, 2]`` latitude, longitude (degrees) of the pixel centres, row-major."""
        xs, ys = np.meshgrid(obs.grid.xs(), obs.grid.ys())
        to_wgs84 = Transformer.from_crs(obs.grid.crs, "EPSG:4326", always_xy=True)
        lon, lat = to_wgs84.transform(xs.ravel(), ys.ravel())
        return np.stack([lat, lon], axis=1).astype(np.float32)

    def pixel_embeddings(self, obs: Observation) -> torch.Tensor:
        """``[D, H, W]`` embedding of every pixel of `obs` (NaN where no frame is valid)."""
        t, _, height, width = obs.array.shape
        max_t = self.network.config.max_sequence_length
        if t > max_t:
            raise SpecError(f"Presto takes at most {max_t} frames, the request gives {t}; "
                            "shorten the time window")
        n = height * width
        raw = torch.zeros(n, t, len(RAW_BANDS))
        values = torch.from_numpy(obs.values(S2_BANDS))  # T C H W
        raw[:, :, _RAW_S2] = values.permute(2, 3, 0, 1).reshape(n, t, len(S2_BANDS))
        x = normalize(raw)
        valid = torch.from_numpy(np.asarray(obs.valid, bool)).permute(1, 2, 0).reshape(n, t)
        mask = (~valid)[..., None].expand(n, t, len(PRESTO_BANDS)).clone()
        mask[..., _ABSENT] = True
        has_data = valid.any(dim=1)
        latlons = torch.from_numpy(self.pixel_latlons(obs))
        months = torch.from_numpy(obs.months)[None].expand(n, t)
        dw = torch.full((n, t), DW_MISSING, dtype=torch.long)
        dev = self.device
        out = torch.full((n, self.network.embed_dim), float("nan"))
        rows = torch.nonzero(has_data)[:, 0]
        for start in range(0, len(rows), PIXEL_CHUNK):
            idx = rows[start:start + PIXEL_CHUNK]
            out[idx] = self.network(x[idx].to(dev), dw[idx].to(dev), latlons[idx].to(dev),
                                    months[idx].to(dev), mask[idx].to(dev)).float().cpu()
        return out.T.reshape(-1, height, width)

    def embed_batch(self, observations: list[Observation], output: OutputSpec) -> list[Embedding]:
        results = []
        for obs in observations:
            pixels = self.pixel_embeddings(obs)  # D H W
            extra: dict[str, Any] = {
                "frames": {"count": len(obs.dates), "dates": [d.isoformat() for d in obs.dates],
                           "months": obs.months.tolist()},
            }
            has_data = ~torch.isnan(pixels[0])
            if output.mode == "grid":
                if self.grid_cell == 1:
                    cells = pixels
                else:
                    filled = torch.nan_to_num(pixels, nan=0.0)
                    weight = F.avg_pool2d(has_data[None].float(), self.grid_cell, ceil_mode=True)
                    cells = F.avg_pool2d(filled[None], self.grid_cell, ceil_mode=True)[0] / weight
                cell_px = None if self.grid_cell == 1 else self.grid_cell
                results.append(self.grid_embedding(cells, obs, output, cell_px=cell_px, **extra))
                continue
            inside = has_data & torch.from_numpy(np.asarray(obs.roi_mask, bool))
            if not inside.any():
                inside = has_data
            if not inside.any():
                raise ModelError("Presto found no valid pixel in the place: every frame is empty "
                                 "or masked; widen the time window or check the imagery")
            chosen = pixels[:, inside]  # D N
            vec = chosen.amax(dim=1) if output.pooling == "max" else chosen.mean(dim=1)
            extra["pixels"] = int(inside.sum())
            results.append(self.pooled_embedding(vec, obs, output, **extra))
        return results
