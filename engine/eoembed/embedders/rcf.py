"""RCF / MOSAIKS: random convolutional features, the embedded default that needs no download."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..embedding import Embedding
from ..errors import ModelError, SpecError, WeightsError
from ..providers.base import Observation
from ..sensors import normalize_band
from ..specs import OutputSpec
from .base import Embedder, ModelCard

#: Default bands: the ten 10 m and 20 m Sentinel-2 L2A bands.
DEFAULT_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")

# Approximate Sentinel-2 L2A band statistics (reflectance × 10000) used to standardise input:
# B02–B12 from Galileo's published normalisation sample (nasaharvest/galileo, MIT); B01 and
# B09, absent there, borrow their spectral neighbours' values.
_S2_MEAN = {
    "B01": 1395.0, "B02": 1395.3, "B03": 1338.4, "B04": 1343.1, "B05": 1543.9, "B06": 2186.2,
    "B07": 2525.1, "B08": 2410.3, "B8A": 2750.3, "B09": 2750.3, "B11": 2234.9, "B12": 1474.5,
}
_S2_STD = {
    "B01": 917.7, "B02": 917.7, "B03": 913.3, "B04": 1092.7, "B05": 1047.2, "B06": 1048.0,
    "B07": 1143.7, "B08": 1099.0, "B8A": 1204.5, "B09": 1204.5, "B11": 1146.0, "B12": 980.2,
}
# A place with more pixels than this is featurised in stripes, so memory stays bounded.
_STRIPE_PIXELS = 256 * 256


class RCFEmbedder(Embedder):
    """Random convolutional features (Rolf et al. 2021, "A generalizable and accessible approach
    to machine learning with global satellite imagery", Nature Communications — MOSAIKS).

    K filters of size k×k over all input bands are convolved with the standardised image;
    each response gives two features, ``relu(z - b)`` and ``relu(-z - b)``, so ``features = 2K``.
    Pooled output averages them over the place's pixels (only pixels inside a polygon and with
    valid data count); grid output averages them over ``grid_cell`` × ``grid_cell`` pixel cells.

    Filters are ``"gaussian"`` (i.i.d. normal, scaled to unit response variance) or
    ``"empirical"`` (k×k patches sampled from imagery and ZCA-whitened, as in MOSAIKS; fitted
    on the first batch embedded, or loaded with ``weights=<filters.npz>`` from
    :meth:`save_filters`). Both are deterministic given ``seed`` (and, for empirical, the
    fitting imagery). Works with any band set and any image size; needs no download.
    """

    family = "rcf"
    default_batch_size = 32

    def __init__(
        self,
        model_id: str = "rcf",
        *,
        mode: Literal["gaussian", "empirical"] = "gaussian",
        features: int = 512,
        kernel_size: int = 3,
        bias: float = 1.0,
        seed: int = 0,
        bands: tuple[str, ...] | list[str] | None = None,
        grid_cell: int = 4,
        scale_m: float = 10.0,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, device=device, weights=weights, batch_size=batch_size)
        if mode not in ("gaussian", "empirical"):
            raise SpecError(f"RCF mode={mode!r} must be 'gaussian' or 'empirical'")
        if isinstance(features, bool) or not isinstance(features, int) or features < 2 or features % 2:
            raise SpecError(f"RCF features={features!r} must be an even whole number ≥ 2")
        if features > 16384:
            raise SpecError(f"RCF features={features} is more than the 16384 supported")
        if kernel_size not in (1, 3, 5, 7):
            raise SpecError(f"RCF kernel_size={kernel_size!r} must be 1, 3, 5 or 7")
        if isinstance(grid_cell, bool) or not isinstance(grid_cell, int) or not 1 <= grid_cell <= 64:
            raise SpecError(f"RCF grid_cell={grid_cell!r} must be a whole number from 1 to 64")
        if not math.isfinite(float(bias)):
            raise SpecError(f"RCF bias={bias!r} must be a finite number")
        self.mode = mode
        self.features = features
        self.kernel_size = kernel_size
        self.bias = float(bias)
        self.seed = int(seed)
        self.bands = tuple(normalize_band(b) for b in (bands or DEFAULT_BANDS))
        self.grid_cell = grid_cell
        self.scale_m = float(scale_m)
        self._filters: torch.Tensor | None = None
        mean = [_S2_MEAN.get(b, 1500.0) for b in self.bands]
        std = [_S2_STD.get(b, 1000.0) for b in self.bands]
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def describe(self) -> ModelCard:
        weights = self.weights or ("none: filters drawn from a seeded normal distribution"
                                   if self.mode == "gaussian" else "none: filters fitted on the first batch")
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary="Random convolutional features (MOSAIKS): fast, training-free, any bands.",
            bands=self.bands,
            scale_m=self.scale_m,
            image_size=None,
            temporal="single",
            outputs=("pooled", "grid"),
            dim=self.features,
            weights=weights,
            license="Apache-2.0 (eoembed; no pretrained weights)",
            paper="Rolf et al. 2021, Nature Communications 12:4392",
            grid_cell_px=self.grid_cell,
            preprocessing={
                "units": "S2 L2A reflectance x 10000",
                "standardise": "(x - mean) / std per band; invalid pixels set to the mean",
                "mean": [round(float(v), 3) for v in self._mean.flatten()],
                "std": [round(float(v), 3) for v in self._std.flatten()],
            },
            config={
                "mode": self.mode, "features": self.features, "kernel_size": self.kernel_size,
                "bias": self.bias, "seed": self.seed, "grid_cell": self.grid_cell,
            },
        )

    # -- filters --------------------------------------------------------------------------
    def _load(self) -> None:
        if self.weights:
            self._load_filters(Path(self.weights))
        elif self.mode == "gaussian":
            gen = torch.Generator().manual_seed(self.seed)
            c, k = len(self.bands), self.kernel_size
            w = torch.randn(self.features // 2, c, k, k, generator=gen)
            self._filters = w / math.sqrt(c * k * k)  # unit response variance on unit-variance input
            self.weights_info = {"source": "gaussian", "seed": self.seed, "sha256": self._filters_hash()}
        self._mean = self._mean.to(self.device)
        self._std = self._std.to(self.device)

    def fit(self, observations: list[Observation]) -> None:
        """Empirical filters: sample k×k patches from `observations` (seeded) and ZCA-whiten.

        With whitening matrix W, MOSAIKS computes ``<W·x_patch, W·p>``; that equals a
        convolution with the filter ``Wᵀ W p`` on the standardised image, which is what we store.
        """
        k, c, n = self.kernel_size, len(self.bands), self.features // 2
        x = self._standardise(self.input_tensor(observations, self.bands), self._valid(observations))
        if min(x.shape[-2:]) >= k:
            patches = F.unfold(x, k).transpose(1, 2).reshape(-1, c * k * k)  # (B*L, c*k*k)
        else:  # an image smaller than the kernel holds no whole patch
            patches = x.new_zeros((0, c * k * k))
        if patches.shape[0] < n:
            raise ModelError(
                f"RCF empirical mode needs at least {n} patches of {k}×{k} px to fit, the imagery gives "
                f"{patches.shape[0]}; embed larger places first or use mode='gaussian'"
            )
        gen = torch.Generator().manual_seed(self.seed)
        sample = patches[torch.randperm(patches.shape[0], generator=gen)[: max(n, 20 * c * k * k)].to(patches.device)]
        centred = sample - sample.mean(0, keepdim=True)
        cov = centred.T @ centred / max(1, centred.shape[0] - 1)
        evals, evecs = torch.linalg.eigh(cov.double())
        eps = 1e-2 * float(evals.max())
        whiten = (evecs @ torch.diag((evals + eps).rsqrt()) @ evecs.T).float()
        chosen = sample[:n]
        filters = chosen @ whiten.T @ whiten  # rows: (Wᵀ W p)ᵀ with symmetric W
        self._filters = filters.reshape(n, c, k, k).cpu()
        self.weights_info = {"source": "empirical", "seed": self.seed, "fitted_on": len(observations),
                             "sha256": self._filters_hash()}

    def save_filters(self, path: str | Path) -> Path:
        """Write the current filters to an ``.npz`` that ``weights=`` loads back."""
        if self._filters is None:
            raise ModelError("RCF has no filters yet; embed or fit first")
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, filters=self._filters.numpy(), bands=np.array(self.bands), bias=self.bias)
        tmp.replace(path)
        return path

    def _load_filters(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as z:
                filters = torch.from_numpy(z["filters"].astype(np.float32))
                bands = tuple(str(b) for b in z["bands"])
        except (OSError, KeyError, ValueError) as exc:
            raise WeightsError(f"RCF filters {path} could not be read ({exc}); give an .npz from save_filters()") from exc
        want = (self.features // 2, len(self.bands), self.kernel_size, self.kernel_size)
        if tuple(filters.shape) != want or bands != self.bands:
            raise WeightsError(
                f"RCF filters {path} are {tuple(filters.shape)} for bands {list(bands)}, but this model needs "
                f"{want} for bands {list(self.bands)}; match features/kernel_size/bands to the file"
            )
        self._filters = filters
        self.weights_info = {"source": str(path), "sha256": self._filters_hash()}

    def _filters_hash(self) -> str:
        assert self._filters is not None
        return hashlib.sha256(self._filters.numpy().tobytes()).hexdigest()

    # -- inference ------------------------------------------------------------------------
    @staticmethod
    def _valid(observations: list[Observation]) -> torch.Tensor:
        return torch.from_numpy(np.stack([o.valid[0] for o in observations]))

    def _standardise(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        z = (x - self._mean.to(x.device)) / self._std.to(x.device)
        return z * valid[:, None].to(x.device, z.dtype)  # invalid pixels sit at the mean (0)

    def _featurise(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` standardised image → ``(B, 2K, H, W)`` features."""
        assert self._filters is not None
        r = F.conv2d(z, self._filters.to(z.device), padding=self.kernel_size // 2)
        return torch.cat([F.relu(r - self.bias), F.relu(-r - self.bias)], dim=1)

    def _pooled_batch(self, z: torch.Tensor, masks: torch.Tensor, pooling: str) -> torch.Tensor:
        """Pooled features ``(B, 2K)`` without materialising the ``(B, 2K, H, W)`` stack.

        `masks` ``(B, H·W)`` marks the pixels that count; an empty mask counts every pixel.
        """
        assert self._filters is not None
        r = F.conv2d(z, self._filters.to(z.device), padding=self.kernel_size // 2).flatten(2)
        m = masks.to(r.dtype)
        m[m.sum(1) == 0] = 1.0
        parts = []
        for sign in (1.0, -1.0):
            f = torch.relu_(sign * r - self.bias)
            if pooling == "max":
                parts.append(f.masked_fill_(m[:, None] == 0, float("-inf")).amax(2))
            else:
                parts.append(torch.bmm(f, (m / m.sum(1, keepdim=True))[:, :, None])[:, :, 0])
        return torch.cat(parts, dim=1)

    def embed_batch(self, observations: list[Observation], output: OutputSpec) -> list[Embedding]:
        if self._filters is None:  # empirical mode without saved filters: fit on this first batch
            self.fit(observations)
        shapes = {(o.grid.height, o.grid.width) for o in observations}
        h, w = next(iter(shapes))
        if len(shapes) > 1 or h * w * len(observations) > 8 * _STRIPE_PIXELS:
            return [self._embed_large(o, output) for o in observations]
        x = self.input_tensor(observations, self.bands)
        z = self._standardise(x, self._valid(observations))
        if output.mode == "pooled":
            masks = torch.from_numpy(np.stack([(o.roi_mask & o.valid[0]).reshape(-1) for o in observations]))
            pooled = self._pooled_batch(z, masks.to(z.device), output.pooling)
            return [self.pooled_embedding(v, o, output) for v, o in zip(pooled, observations)]
        feats = self._featurise(z)
        cells = F.avg_pool2d(feats, self.grid_cell, ceil_mode=True)
        return [self.grid_embedding(c, o, output, cell_px=self.grid_cell) for c, o in zip(cells, observations)]

    def _embed_large(self, obs: Observation, output: OutputSpec) -> Embedding:
        """Featurise one big place in stripes of rows so memory does not grow with its size."""
        h, w = obs.grid.height, obs.grid.width
        k2 = self.kernel_size // 2
        cell = self.grid_cell
        rows = max(cell, (_STRIPE_PIXELS // max(w, 1)) // cell * cell)
        x = self.input_tensor([obs], self.bands)
        z = self._standardise(x, self._valid([obs]))
        mask = torch.from_numpy(obs.roi_mask & obs.valid[0]).to(z.device)
        parts, total, count = [], None, 0.0
        best = None
        for y0 in range(0, h, rows):
            lo, hi = max(0, y0 - k2), min(h, y0 + rows + k2)
            f = self._featurise(z[:, :, lo:hi])[0, :, y0 - lo : y0 - lo + min(rows, h - y0)]
            if output.mode == "grid":
                parts.append(F.avg_pool2d(f[None], cell, ceil_mode=True)[0])
                continue
            m = mask[y0 : y0 + f.shape[1]]
            if output.pooling == "max":
                cur = f[:, m].amax(dim=1) if m.any() else None
                if cur is not None:
                    best = cur if best is None else torch.maximum(best, cur)
            else:
                s = (f * m).flatten(1).sum(1)
                total = s if total is None else total + s
                count += float(m.sum())
        if output.mode == "grid":
            return self.grid_embedding(torch.cat(parts, dim=1), obs, output, cell_px=cell)
        if output.pooling == "max":
            vec = best if best is not None else self._featurise(z).flatten(2).amax(2)[0]
        elif count > 0:
            vec = total / count
        else:
            vec = self._featurise(z).flatten(2).mean(2)[0]
        return self.pooled_embedding(vec, obs, output)

