"""Galileo (nano / tiny / base) on Sentinel-2: one composite or monthly frames in, a vector or a
georeferenced patch grid out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..embedding import Embedding
from ..errors import CapabilityError, ModelError, SpecError, WeightsError
from ..nn.galileo import (
    NORM_MEAN_13,
    NORM_STD_13,
    PRESETS,
    SPACE_TIME_BANDS,
    SPACE_TIME_GROUPS,
    GalileoConfig,
    GalileoEncoder,
    load_normalization,
)
from ..providers.base import Observation
from ..specs import FrameSpec, OutputSpec
from ..weights import file_sha256, load_checkpoint, resolve
from .base import Embedder, ModelCard

#: the published checkpoints: ``models/<size>/{encoder.pt, config.json}`` in this repository
HF_REPO = "hf:nasaharvest/galileo"
SIZES = tuple(PRESETS)
#: Sentinel-2 bands fed to the model, in its order (B2 … B12 of SPACE_TIME_BANDS)
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: a token whose patch has less than this fraction of valid pixels (in its frame) is masked
MIN_VALID_FRACTION = 0.5
#: most tokens one forward pass may attend over (attention cost grows with its square)
MAX_TOKENS = 24_576
_S2_SLICE = slice(2, 12)  # S2 bands inside SPACE_TIME_BANDS
_NDVI = SPACE_TIME_BANDS.index("NDVI")
_S1_GROUP = list(SPACE_TIME_GROUPS).index("S1")


class GalileoEmbedder(Embedder):
    """Galileo (Tseng et al. 2025, "Galileo: Learning Global & Local Features of Many Remote
    Sensing Modalities", arXiv:2502.09356; MIT): a flexible-patch multimodal ViT, here fed
    Sentinel-2 L2A (bands B02–B12 without B01/B09/B10) and NDVI, every other modality (S1,
    ERA5, SRTM, …) absent, i.e. masked (:class:`eoembed.nn.galileo.GalileoEncoder`).

    Input: reflectance × 10000, NDVI computed from raw B08/B04, then the pretraining
    normalisation ``(x − (mean − 2·std)) / (4·std)`` (NDVI unchanged) with the constants of the
    weights' ``normalization.json`` when the weights folder has one, else the published
    constants. Each frame carries its calendar month. ``temporal=False`` (default): one
    composite over the window; ``temporal=True``: monthly frames (up to 24), as in pretraining.
    The place is padded at its bottom/right to whole patches; a token whose patch has less than
    half valid pixels in its frame is masked (dropped before attention), invalid pixels in kept
    tokens are set to the band mean.

    Outputs: pooled = mean of the visible output tokens (upstream's ``average_tokens``), over the
    tokens whose patch lies in the place (weighted by the covered fraction, for polygons); grid =
    per patch the mean over frames and channel groups of its visible tokens, one cell per
    ``patch_size`` pixels from the place's top-left corner (NaN where no token is visible).

    Args:
        size: ``"nano"`` (default, 128-d), ``"tiny"`` (192-d) or ``"base"`` (768-d).
        patch_size: token side in 10 m pixels, 1–8 (default 8, the stored kernel; smaller sizes
            use FlexiViT pseudo-inverse-resized kernels and give finer grids at more cost).
        temporal: monthly frames instead of one composite.
    """

    family: ClassVar[str] = "galileo"
    default_batch_size: ClassVar[int] = 8

    def __init__(
        self,
        model_id: str = "galileo",
        *,
        size: str = "nano",
        patch_size: int = 8,
        temporal: bool = False,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, device=device, weights=weights, batch_size=batch_size)
        if size not in PRESETS:
            raise SpecError(f"Galileo size={size!r} must be one of {', '.join(SIZES)}")
        max_patch = PRESETS[size].max_patch_size
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) \
                or not 1 <= patch_size <= max_patch:
            raise SpecError(f"Galileo patch_size={patch_size!r} must be a whole number from 1 to "
                            f"{max_patch} (pixels)")
        if not isinstance(temporal, bool):
            raise SpecError(f"Galileo temporal={temporal!r} must be True (monthly frames) or False")
        self.size = size
        self.patch_size = patch_size
        self.temporal = temporal
        self._model: GalileoEncoder | None = None
        self._norm_mean: tuple[float, ...] = NORM_MEAN_13
        self._norm_std: tuple[float, ...] = NORM_STD_13

    # -- card -----------------------------------------------------------------------------
    def weights_source(self) -> tuple[str, str | None, str]:
        """(source, encoder file inside it, config file) that :meth:`_load` resolves.

        ``weights`` may be ``hf:<repo>[@rev]`` (files ``models/<size>/…``), a folder holding
        ``encoder.pt`` and ``config.json``, or an encoder file (``config.json`` beside it is
        used when present, else the size's published configuration).
        """
        if self.weights is None or self.weights.startswith("hf:"):
            source = self.weights or HF_REPO
            return source, f"models/{self.size}/encoder.pt", f"models/{self.size}/config.json"
        if Path(self.weights).expanduser().is_file():
            return self.weights, None, "config.json"
        return self.weights, "encoder.pt", "config.json"

    def describe(self) -> ModelCard:
        source, encoder_file, _ = self.weights_source()
        cfg = PRESETS[self.size]
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary=f"Galileo {self.size} on Sentinel-2 (+NDVI): image vector or patch grid, "
                    f"{'monthly frames' if self.temporal else 'one composite'}.",
            bands=S2_BANDS,
            scale_m=10.0,
            image_size=None,
            temporal="series" if self.temporal else "single",
            outputs=("pooled", "grid"),
            dim=cfg.embedding_size,
            weights=f"{source} ({encoder_file})" if encoder_file else source,
            license="MIT",
            paper="Tseng et al. 2025, Galileo (arXiv:2502.09356)",
            grid_cell_px=self.patch_size,
            frames=FrameSpec.by_month() if self.temporal else None,
            preprocessing={
                "units": "S2 L2A reflectance x 10000",
                "ndvi": "(B08 - B04) / (B08 + B04) from raw reflectance, 0 where the sum <= 0",
                "normalize": "(x - (mean - 2 std)) / (4 std) per band; NDVI unchanged",
                "mean": [round(v, 6) for v in self._norm_mean[_S2_SLICE]],
                "std": [round(v, 6) for v in self._norm_std[_S2_SLICE]],
                "absent": "S1, ERA5, TerraClimate, VIIRS, SRTM, Dynamic World, WorldCereal, "
                          "LandScan, location: masked",
                "invalid_pixels": f"token masked below {MIN_VALID_FRACTION:.0%} valid pixels; "
                                  "else invalid pixels set to the band mean",
                "months": "calendar month of each frame's date",
            },
            config={
                "size": self.size, "patch_size": self.patch_size, "temporal": self.temporal,
                "pooled": "mean of visible tokens after the final norm",
                "grid": "per patch: mean over frames and channel groups of visible tokens",
            },
        )

    # -- weights --------------------------------------------------------------------------
    def _load(self) -> None:
        source, encoder_file, config_file = self.weights_source()
        path = resolve(source, encoder_file)
        try:
            config_path: Path | None = resolve(source, config_file)
        except WeightsError:
            if source.startswith("hf:"):
                raise
            config_path = None  # a bare encoder file: the size's published configuration
        config = (GalileoConfig.from_json(config_path) if config_path is not None
                  else PRESETS[self.size])
        if config.embedding_size != PRESETS[self.size].embedding_size:
            raise WeightsError(
                f"Galileo weights at {path} are {config.embedding_size}-wide, not the "
                f"{self.size} size ({PRESETS[self.size].embedding_size}); pass the matching size="
            )
        state = load_checkpoint(path)
        model = GalileoEncoder.from_pretrained(state, config)
        self._model = model.eval().to(self.device)
        norm_info = "published constants (nasaharvest/galileo config/normalization.json)"
        if not source.startswith("hf:"):
            try:
                norm_path = resolve(source, "normalization.json")
            except WeightsError:
                norm_path = None
            if norm_path is not None:
                self._norm_mean, self._norm_std = load_normalization(norm_path)
                norm_info = f"{norm_path.name} (sha256 {file_sha256(norm_path)[:16]})"
        self.weights_info = {
            "source": source, "file": path.name, "sha256": file_sha256(path),
            "config": {"embedding_size": config.embedding_size, "depth": config.depth,
                       "num_heads": config.num_heads},
            "normalization": norm_info,
        }

    @property
    def network(self) -> GalileoEncoder:
        """The loaded encoder (loads on first use)."""
        self.load()
        if self._model is None:
            raise ModelError(f"{self.model_id!r} failed to load its network")
        return self._model

    # -- inference ------------------------------------------------------------------------
    def prepare(self, observations: list[Observation]) -> tuple[torch.Tensor, torch.Tensor,
                                                                 torch.Tensor, torch.Tensor]:
        """Model inputs of same-shaped observations.

        Returns ``s_t_x [B, H', W', T, 13]`` (a permuted view, H', W' padded to whole
        patches), ``months [B, T]``, the token mask ``[B, h, w, T, 7]`` (True = dropped) and
        the place's cover of each patch ``[B, h, w]``.
        """
        p = self.patch_size
        raw = torch.from_numpy(np.stack([o.values(S2_BANDS) for o in observations]))  # B T C H W
        valid = torch.from_numpy(np.stack([np.asarray(o.valid, bool) for o in observations]))
        roi = torch.from_numpy(np.stack([np.asarray(o.roi_mask, bool) for o in observations]))
        b, t, _, height, width = raw.shape
        mean = torch.tensor(self._norm_mean, dtype=torch.float32)
        std = torch.tensor(self._norm_std, dtype=torch.float32)
        low = mean - 2 * std
        div = (mean + 2 * std) - low
        b8, b4 = raw[:, :, S2_BANDS.index("B08")], raw[:, :, S2_BANDS.index("B04")]
        total = b8 + b4
        ndvi = torch.where(total > 0, (b8 - b4) / torch.where(total > 0, total, 1.0), 0.0)
        x = torch.empty(b, t, len(SPACE_TIME_BANDS), height, width)
        x[:, :, :2] = 0.0  # S1: absent (masked)
        x[:, :, _S2_SLICE] = (raw - low[_S2_SLICE, None, None]) / div[_S2_SLICE, None, None]
        x[:, :, _NDVI] = ndvi
        if not bool(valid.all()):
            fill = torch.cat([torch.zeros(2), torch.full((10,), 0.5), mean[_NDVI:]])  # band means
            x = torch.where(valid[:, :, None], x, fill[None, None, :, None, None])

        pad_h, pad_w = -height % p, -width % p
        if pad_h or pad_w:
            x = F.pad(x.view(b * t, -1, height, width), (0, pad_w, 0, pad_h)).view(
                b, t, -1, height + pad_h, width + pad_w)
            valid = F.pad(valid, (0, pad_w, 0, pad_h))
            roi = F.pad(roi, (0, pad_w, 0, pad_h))
        h, w = (height + pad_h) // p, (width + pad_w) // p
        valid_frac = F.avg_pool2d(valid.float().view(b * t, 1, h * p, w * p), p).view(b, t, h, w)
        dropped = (valid_frac < MIN_VALID_FRACTION).permute(0, 2, 3, 1)  # B h w T
        empty = dropped.flatten(1).all(dim=1)
        dropped[empty] = False  # no usable token at all: keep every token rather than none
        mask = dropped[..., None].repeat(1, 1, 1, 1, len(SPACE_TIME_GROUPS))
        mask[..., _S1_GROUP] = True
        cover = F.avg_pool2d(roi.float()[:, None], p)[:, 0]
        months = torch.from_numpy(np.stack([o.months for o in observations]))
        return x.permute(0, 3, 4, 1, 2), months, mask, cover

    def embed_batch(self, observations: list[Observation], output: OutputSpec) -> list[Embedding]:
        shapes = {(o.array.shape[0], o.grid.height, o.grid.width) for o in observations}
        if len(shapes) > 1:  # different sizes or frame counts: one forward pass each
            return [e for o in observations for e in self.embed_batch([o], output)]
        t, height, width = next(iter(shapes))
        cfg = self.network.config
        if t > cfg.max_sequence_length:
            raise CapabilityError(
                f"Galileo takes at most {cfg.max_sequence_length} frames, the request gives {t}; "
                "shorten the time window")
        p = self.patch_size
        tokens_needed = -(-height // p) * -(-width // p) * t * (len(SPACE_TIME_GROUPS) - 1)
        if tokens_needed > MAX_TOKENS:
            raise CapabilityError(
                f"the place is {width}x{height} px with {t} frame(s): {tokens_needed} Galileo tokens "
                f"at patch_size={p}, more than {MAX_TOKENS}; use a larger patch_size, a smaller "
                "place or fewer frames")
        s_t_x, months, mask, cover = self.prepare(observations)
        dev = self.device
        tokens, mask = self.network(s_t_x.to(dev), months.to(dev), p, mask.to(dev))
        visible = (~mask).to(tokens.dtype)  # B h w T G
        results = []
        if output.mode == "pooled":
            weight = visible * cover.to(dev)[..., None, None]
            no_cover = weight.flatten(1).sum(1) <= 0
            weight[no_cover] = visible[no_cover]
            flat_w = weight.flatten(1)
            flat_t = tokens.flatten(1, -2)
            if output.pooling == "max":
                vecs = flat_t.masked_fill((flat_w <= 0)[..., None], float("-inf")).amax(dim=1)
            else:
                vecs = (flat_t * flat_w[..., None]).sum(1) / flat_w.sum(1, keepdim=True)
            for i, o in enumerate(observations):
                results.append(self.pooled_embedding(vecs[i], o, output, **self._extra(o, mask[i])))
            return results
        b, h, w = tokens.shape[:3]
        per_cell = visible.reshape(b, h, w, -1, 1)
        grid = (tokens.reshape(b, h, w, -1, tokens.shape[-1]) * per_cell).sum(3) / per_cell.sum(3)
        grid = grid.permute(0, 3, 1, 2)  # B D h w, NaN where no token is visible
        for i, o in enumerate(observations):
            results.append(self.grid_embedding(grid[i], o, output, cell_px=p,
                                               **self._extra(o, mask[i])))
        return results

    def _extra(self, obs: Observation, mask: torch.Tensor) -> dict[str, Any]:
        kept = (~mask[..., 1:]).any(-1)  # h w T: patch-frames with a visible token
        return {
            "frames": {"count": len(obs.dates), "dates": [d.isoformat() for d in obs.dates],
                       "months": obs.months.tolist()},
            "patch_size": self.patch_size,
            "tokens": {"patch_frames": int(kept.numel()), "visible": int(kept.sum())},
        }

