"""AnySat on Sentinel-2 time series: dated frames in, a tile vector or a georeferenced patch grid out."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from affine import Affine

from ..embedding import Embedding
from ..errors import CapabilityError, ModelError, SpecError, WeightsError
from ..grid import GridSpec
from ..nn.anysat import (
    DEMO_S2_MEAN,
    DEMO_S2_STD,
    S2_BANDS,
    S2_RES_M,
    AnySatS2,
    anysat_config,
    anysat_state_dict,
    load_anysat,
)
from ..providers.base import Observation, make_observation
from ..specs import FrameSpec, OutputSpec
from ..weights import choose_source, file_sha256, load_checkpoint, resolve
from .base import Embedder, ModelCard

#: the published checkpoint
DEFAULT_SOURCE = ("hf:g-astruc/AnySat", "models/AnySat.pth")
#: width of the released base model
DIM = 768
NORMALIZATIONS = ("demo", "tile")


class AnySatEmbedder(Embedder):
    """AnySat (Astruc et al. 2025, "AnySat: One Earth Observation Model for Many Resolutions,
    Scales, and Modalities", CVPR; arXiv:2412.14123): a JEPA-pretrained multimodal encoder;
    here its Sentinel-2 time-series path (:class:`eoembed.nn.anysat.AnySatS2`).

    Input: ``frames`` composites over the window (default 12 equal bins, empty bins dropped),
    each with its day of year (1 = 1 January, as upstream's data loaders; taken from the
    frame's date), in bands B02, B03, B04, B05, B06, B07, B08, B8A, B11, B12 at 10 m
    (reflectance × 10000). Normalisation ``"demo"`` (default): the per-band mean/std of the
    published TreeSatAI-TS demo, fixed, so places stay comparable; ``"tile"``: each band's
    mean/std over the observation's valid pixels and frames (as rs-embed does). Invalid pixels
    are passed as missing (upstream's learned ``pad_parameter``). AnySat takes square images:
    the centre square of whole pixels whose side is a multiple of the patch is used, and the
    grid covers exactly that square (``input_window`` in meta).

    Outputs: pooled = the tile token (``tile``, 768); grid = the patch tokens (``patch``), one
    cell per ``patch_size_m`` × ``patch_size_m`` metres, georeferenced.

    Weights: ``hf:g-astruc/AnySat`` ``models/AnySat.pth`` (MIT; base only): the S2 path and the
    shared modules load strictly, the other modalities' projectors are ignored (listed in meta).

    Args:
        patch_size_m: output patch side in metres, a positive multiple of 10.
        frames: number of frames (equal time bins) when the request does not give a FrameSpec.
        normalization: ``"demo"`` or ``"tile"``.
        weights_file: file inside `weights` when that is a Hub repository or a folder.
    """

    family: ClassVar[str] = "anysat"
    default_batch_size: ClassVar[int] = 4

    def __init__(
        self,
        model_id: str = "anysat",
        *,
        patch_size_m: int = 10,
        frames: int = 12,
        normalization: Literal["demo", "tile"] = "demo",
        weights_file: str | None = None,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, device=device, weights=weights, batch_size=batch_size)
        if isinstance(patch_size_m, bool) or not isinstance(patch_size_m, int) or patch_size_m <= 0 \
                or patch_size_m % S2_RES_M:
            raise SpecError(f"AnySat patch_size_m={patch_size_m!r} must be a positive multiple of {S2_RES_M} (metres)")
        if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= 366:
            raise SpecError(f"AnySat frames={frames!r} must be a whole number from 1 to 366")
        if normalization not in NORMALIZATIONS:
            raise SpecError(f"AnySat normalization={normalization!r} must be 'demo' (published constants) or 'tile'")
        self.patch_size_m = patch_size_m
        self.scale = patch_size_m // S2_RES_M
        self.frames = frames
        self.normalization = normalization
        self.weights_file = weights_file
        self._model: AnySatS2 | None = None

    # -- card -----------------------------------------------------------------------------
    def weights_source(self) -> tuple[str, str | None]:
        """(source, file inside it) that :meth:`_load` resolves."""
        return choose_source(self.weights, self.weights_file, DEFAULT_SOURCE)

    def describe(self) -> ModelCard:
        source, file = self.weights_source()
        norm = ({"mean": list(DEMO_S2_MEAN), "std": list(DEMO_S2_STD),
                 "standardise": "(x - mean) / std per band, constants of the published TreeSatAI-TS demo"}
                if self.normalization == "demo" else
                {"standardise": "(x - mean) / std per band over the observation's valid pixels and frames"})
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary="AnySat (base) on Sentinel-2 time series: tile vector or patch grid at any patch size.",
            bands=S2_BANDS,
            scale_m=float(S2_RES_M),
            image_size=None,
            temporal="series",
            outputs=("pooled", "grid"),
            dim=DIM,
            weights=f"{source} ({file})" if file else source,
            license="MIT",
            paper="Astruc et al. 2025, AnySat, CVPR (arXiv:2412.14123)",
            grid_cell_px=self.scale,
            frames=FrameSpec.bins(self.frames),
            preprocessing={
                "units": "S2 L2A reflectance x 10000",
                "normalization": self.normalization,
                **norm,
                "dates": "day of year of each frame (1 = 1 January)",
                "invalid_pixels": "marked missing: replaced by the model's pad_parameter",
                "fit": "centre square of whole pixels, side a multiple of the patch",
            },
            config={
                "patch_size_m": self.patch_size_m, "frames": self.frames, "normalization": self.normalization,
                "modality": "s2", "pooled": "tile token", "grid": "patch tokens",
            },
        )

    # -- weights --------------------------------------------------------------------------
    def _load(self) -> None:
        source, file = self.weights_source()
        path = resolve(source, file)
        ckpt = load_checkpoint(path)
        sd, _ = anysat_state_dict(ckpt)
        cfg = anysat_config(sd)
        if cfg["dim"] != DIM or cfg["in_channels"] != len(S2_BANDS):
            raise WeightsError(
                f"{path.name} holds an AnySat of width {cfg['dim']} with {cfg['in_channels']} S2 bands, not the "
                f"released base ({DIM}, {len(S2_BANDS)} bands); give models/AnySat.pth from hf:g-astruc/AnySat"
            )
        model = AnySatS2(**cfg)
        ignored = load_anysat(model, ckpt)
        self._model = model.eval().to(self.device)
        self.weights_info = {"source": source, "file": path.name, "sha256": file_sha256(path),
                             "architecture": cfg, "ignored_prefixes": ignored}

    @property
    def network(self) -> AnySatS2:
        """The loaded network (loads on first use)."""
        self.load()
        if self._model is None:
            raise ModelError(f"{self.model_id!r} failed to load its network")
        return self._model

    # -- inference ------------------------------------------------------------------------
    def square(self, obs: Observation) -> Observation:
        """The centre square of whole pixels of `obs` whose side is a multiple of the patch."""
        h, w = obs.grid.height, obs.grid.width
        side = min(h, w) // self.scale * self.scale
        if side < self.scale:
            raise CapabilityError(
                f"the place is {w}×{h} px at 10 m, smaller than one {self.patch_size_m} m AnySat patch; "
                "use a larger place or a smaller patch_size_m"
            )
        if (h, w) == (side, side):
            return obs
        r, c = (h - side) // 2, (w - side) // 2
        grid = GridSpec(obs.grid.crs, obs.grid.transform * Affine.translation(c, r), side, side)
        return make_observation(obs.values()[:, :, r : r + side, c : c + side], obs.valid[:, r : r + side, c : c + side],
                                grid, obs.bands, obs.dates, obs.roi_mask[r : r + side, c : c + side], obs.meta)

    def normalize(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``(T, C, H, W)`` reflectance → normalised, with `valid` ``(T, H, W)``."""
        if self.normalization == "demo":
            mean = torch.tensor(DEMO_S2_MEAN).view(1, -1, 1, 1)
            std = torch.tensor(DEMO_S2_STD).view(1, -1, 1, 1)
        else:
            m = valid[:, None].expand_as(x).float()
            count = m.sum(dim=(0, 2, 3)).clamp(min=1.0)
            mean = ((x * m).sum(dim=(0, 2, 3)) / count).view(1, -1, 1, 1)
            var = (((x - mean) ** 2) * m).sum(dim=(0, 2, 3)) / count
            std = var.sqrt().clamp(min=1.0).view(1, -1, 1, 1)
        return (x - mean) / std

    def embed_batch(self, observations: list[Observation], output: OutputSpec) -> list[Embedding]:
        squares = [self.square(o) for o in observations]
        shapes = {(s.array.shape[0], s.grid.height) for s in squares}
        if len(shapes) > 1:  # different frame counts or sizes: one forward pass each
            return [e for o in observations for e in self.embed_batch([o], output)]
        xs, ms, days = [], [], []
        for s in squares:
            x = torch.from_numpy(s.values(S2_BANDS))
            valid = torch.from_numpy(np.asarray(s.valid, dtype=bool))
            xs.append(self.normalize(x, valid))
            ms.append(valid[:, None].expand_as(x))
            days.append(torch.from_numpy(s.day_of_year))
        dev = self.device
        out = self.network(torch.stack(xs).to(dev), torch.stack(days).to(dev), self.patch_size_m,
                           mask=torch.stack(ms).to(dev))
        results = []
        for i, (o, s) in enumerate(zip(observations, squares)):
            extra = {
                "frames": {"count": len(s.dates), "dates": [d.isoformat() for d in s.dates],
                           "day_of_year": s.day_of_year.tolist()},
                "normalization": self.normalization,
                "patch_size_m": self.patch_size_m,
                "input_window": _window(o, s),
            }
            if output.mode == "pooled":
                results.append(self.pooled_embedding(out["tile"][i], o, output, pooling="AnySat tile token", **extra))
            else:
                results.append(self.grid_embedding(out["grid"][i], s, output, **extra))
        return results


def _window(obs: Observation, seen: Observation) -> list[int]:
    """[row, col, height, width] of `seen` inside `obs`, in input pixels."""
    col, row = ~obs.grid.transform * (seen.grid.transform.c, seen.grid.transform.f)
    return [round(row), round(col), seen.grid.height, seen.grid.width]
