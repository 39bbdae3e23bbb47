"""What every CLIP-family model shares: input crop and resize, the forward pass, georeferenced
patch grids and text embeddings. remoteclip.py and msclip.py subclass :class:`CLIPEmbedder` with
their bands, normalisation and checkpoint."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from affine import Affine

from ..embedding import Embedding
from ..errors import ModelError, SpecError, WeightsError
from ..grid import GridSpec
from ..nn.clip import CLIP, CLIP_CONFIGS, CLIPConfig, build_clip, clip_state_dict
from ..nn.clip_tokenizer import CLIPTokenizer, load_clip_tokenizer
from ..providers.base import Observation, make_observation
from ..specs import OutputSpec
from ..weights import choose_source, file_sha256, load_checkpoint, resolve
from .base import Embedder, ModelCard, fit_window

#: OpenAI CLIP's RGB normalisation (RemoteCLIP keeps it).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPEmbedder(Embedder):
    """Shared machinery of CLIP-family embedders (Radford et al. 2021).

    Input: each observation's first frame (a composite over the window) in the model's bands;
    pixels without a valid measurement take the band mean (0 after normalisation). With
    ``fit="crop"`` (default) the centre square of whole input pixels (side = the shorter side)
    is kept, as CLIP's "resize the shorter side, centre-crop" does up to half a pixel, and the
    grid stays on whole input pixels; ``fit="squash"`` keeps the whole place and drops its
    aspect. Then :meth:`to_image` (units → image values), a bicubic resize to ``image_size``
    (antialiased when shrinking), an optional clamp to ``image_range`` and ``(x − mean) / std``.

    Outputs live in the joint image–text space of width D, L2-normalised when ``normalize``:
    pooled = the projected image embedding; grid = the projected patch tokens (see
    :mod:`eoembed.nn.clip`), georeferenced over the part of the place the model saw.
    :meth:`embed_text` gives L2-normalised text embeddings in the same space.
    """

    family: ClassVar[str] = "clip"
    default_batch_size: ClassVar[int] = 8
    image_size: ClassVar[int] = 224
    #: subclass contract: bands in model order, normalisation in image units
    bands: ClassVar[tuple[str, ...]] = ()
    mean: ClassVar[tuple[float, ...]] = ()
    std: ClassVar[tuple[float, ...]] = ()
    image_range: ClassVar[tuple[float, float] | None] = None

    def __init__(
        self,
        model_id: str,
        *,
        arch: str = "ViT-B-32",
        act: Literal["quick_gelu", "gelu"] = "quick_gelu",
        tokenizer: str | None = None,
        normalize: bool = True,
        fit: Literal["crop", "squash"] = "crop",
        weights_file: str | None = None,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, device=device, weights=weights, batch_size=batch_size)
        if arch not in CLIP_CONFIGS:
            raise SpecError(f"arch={arch!r} must be one of {', '.join(CLIP_CONFIGS)}")
        if act not in ("quick_gelu", "gelu"):
            raise SpecError(f"act={act!r} must be 'quick_gelu' or 'gelu'")
        if fit not in ("crop", "squash"):
            raise SpecError(f"fit={fit!r} must be 'crop' (centre square, as CLIP) or 'squash' (whole place)")
        self.arch = arch
        self.act = act
        self.tokenizer_source = tokenizer
        self.normalize = bool(normalize)
        self.fit = fit
        self.weights_file = weights_file
        self._model: CLIP | None = None
        self._tokenizer: CLIPTokenizer | None = None

    # -- subclass hooks -----------------------------------------------------------------------
    def default_source(self) -> tuple[str, str]:
        """(source, file) of the published weights."""
        raise NotImplementedError

    def checkpoint_prefix(self) -> str | None:
        """Where the CLIP sits inside the checkpoint (None: find it)."""
        return None

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """Observation units → image values, before the resize (identity by default)."""
        return x

    def fill_values(self) -> torch.Tensor:
        """Per-band value in observation units given to invalid pixels (the band mean)."""
        return torch.tensor(self.mean, dtype=torch.float32)

    def preprocessing(self) -> dict[str, Any]:
        """Model-specific entries of the card's preprocessing record."""
        return {}

    def expected_config(self) -> CLIPConfig:
        """The architecture the model id promises (depth is not checked)."""
        return CLIP_CONFIGS[self.arch].with_act(self.act)

    # -- card -----------------------------------------------------------------------------------
    def _card(self, summary: str, license: str, paper: str) -> ModelCard:
        cfg = self.expected_config()
        source, file = self.weights_source()
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary=summary,
            bands=self.bands,
            scale_m=10.0,
            image_size=self.image_size,
            temporal="single",
            outputs=("pooled", "grid"),
            dim=cfg.embed_dim,
            weights=f"{source} ({file})" if file else source,
            license=license,
            paper=paper,
            grid_cell_px=cfg.vision.patch_size or 32,
            preprocessing={
                "frame": "first frame (the composite over the window)",
                "fit": ("centre square crop of whole input pixels, then bicubic resize to "
                        f"{self.image_size} px" if self.fit == "crop"
                        else f"bicubic resize of the whole place to {self.image_size}×{self.image_size} px"),
                "resize": "bicubic, align_corners=False, antialiased when shrinking",
                "invalid_pixels": "set to the band mean (0 after normalisation)",
                "mean": list(self.mean),
                "std": list(self.std),
                **self.preprocessing(),
            },
            config={
                "arch": self.arch, "act": self.act, "normalize": self.normalize, "fit": self.fit,
                "tokenizer": self.tokenizer_source or "$EOEMBED_CLIP_BPE or hf:openai/clip-vit-base-patch32 merges.txt",
                "pooled": "projected image embedding",
                "grid": "projected patch tokens (joint image-text space)",
            },
        )

    def weights_source(self) -> tuple[str, str | None]:
        """(source, file inside it) that :meth:`_load` resolves."""
        return choose_source(self.weights, self.weights_file, self.default_source())

    # -- weights --------------------------------------------------------------------------------
    def _load(self) -> None:
        source, file = self.weights_source()
        path = resolve(source, file)
        ckpt = load_checkpoint(path)
        sd, prefix = clip_state_dict(ckpt, self.checkpoint_prefix())
        model = build_clip(sd, act=self.act, what=f"{self.model_id} ({path.name})")
        self._check_architecture(model.config, path.name)
        self._model = model.to(self.device)
        self.weights_info = {
            "source": source, "file": path.name, "sha256": file_sha256(path), "prefix": prefix,
            "layers": {"vision": model.config.vision.layers, "text": model.config.text.layers},
            **self.extra_weights_info(ckpt),
        }

    def extra_weights_info(self, checkpoint: Any) -> dict[str, Any]:
        """More provenance read from the checkpoint (e.g. a training temperature)."""
        return {}

    def _check_architecture(self, got: CLIPConfig, name: str) -> None:
        want = self.expected_config()

        def signature(c: CLIPConfig) -> tuple:
            v = c.vision
            return (v.kind, v.width, v.patch_size, v.image_size, v.in_chans, c.embed_dim, c.text.width)

        if signature(got) != signature(want):
            raise WeightsError(
                f"{name} holds a {got.vision.kind} CLIP of width {got.vision.width}, patch "
                f"{got.vision.patch_size}, {got.vision.in_chans} input bands and {got.embed_dim}-d "
                f"embeddings, but {self.model_id!r} is {self.arch} with {want.vision.in_chans} bands; "
                "give this model's weights or pick the model id that matches them"
            )

    @property
    def network(self) -> CLIP:
        """The loaded CLIP (loads on first use)."""
        self.load()
        if self._model is None:
            raise ModelError(f"{self.model_id!r} failed to load its network")
        return self._model

    # -- input ----------------------------------------------------------------------------------
    def crop_window(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(row, col, height, width) of the input pixels the model sees."""
        return fit_window(self.fit, h, w)

    def prepare(self, observations: list[Observation]) -> tuple[torch.Tensor, list[Observation]]:
        """Network input ``[B, C, S, S]`` and, per observation, the part of it the model saw."""
        fill = self.fill_values().view(-1, 1, 1)
        images, seen = [], []
        for obs in observations:
            vals = torch.from_numpy(obs.values(self.bands)[0])
            valid = torch.from_numpy(np.asarray(obs.valid[0], dtype=bool))
            vals = torch.where(valid[None], vals, fill)
            r, c, h, w = self.crop_window(*vals.shape[-2:])
            img = _bicubic(self.to_image(vals[:, r : r + h, c : c + w]), self.image_size)
            if self.image_range is not None:
                img = img.clamp(*self.image_range)
            images.append(img)
            whole = (h, w) == (obs.grid.height, obs.grid.width)
            seen.append(obs if whole else _sub_observation(obs, r, c, h, w))
        x = torch.stack(images).to(self.device)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std, seen

    # -- inference ------------------------------------------------------------------------------
    def embed_batch(self, observations: list[Observation], output: OutputSpec) -> list[Embedding]:
        x, seen = self.prepare(observations)
        feats = self.network.encode_image(x)
        extra = {"normalized": "l2" if self.normalize else "none"}
        if output.mode == "pooled":
            vecs = F.normalize(feats.pooled, dim=-1) if self.normalize else feats.pooled
            return [
                self.pooled_embedding(v, o, output, pooling="CLIP image embedding (not mask-weighted)",
                                      input_window=_window(o, s), **extra)
                for v, o, s in zip(vecs, observations, seen)
            ]
        grids = F.normalize(feats.projected_tokens, dim=1) if self.normalize else feats.projected_tokens
        return [self.grid_embedding(g, s, output, input_window=_window(o, s), **extra)
                for g, o, s in zip(grids, observations, seen)]

    def embed_text(self, texts: str | list[str]) -> np.ndarray:
        """Text embeddings ``[N, D]`` (float32, L2-normalised) in the images' joint space."""
        items = [texts] if isinstance(texts, str) else list(texts)
        if self._tokenizer is None:
            self._tokenizer = load_clip_tokenizer(self.tokenizer_source)
        model = self.network
        tokens = self._tokenizer(items, context_length=model.config.text.context_length)
        if int(tokens.max()) >= model.config.text.vocab_size:
            raise WeightsError(
                f"the BPE vocabulary gives token ids up to {int(tokens.max())} but {self.model_id!r} "
                f"knows {model.config.text.vocab_size}; use CLIP's own vocabulary files"
            )
        out = []
        with torch.inference_mode():
            for i in range(0, len(tokens), 64):
                vec = model.encode_text(tokens[i : i + 64].to(self.device))
                out.append(F.normalize(vec.float(), dim=-1).cpu())
        return torch.cat(out).numpy().astype(np.float32)


def _bicubic(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[C, H, W]`` to ``[C, size, size]`` bicubically (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrink = x.shape[-2] > size or x.shape[-1] > size
    return F.interpolate(x[None], size=(size, size), mode="bicubic", align_corners=False,
                         antialias=shrink)[0]


def _sub_observation(obs: Observation, r: int, c: int, h: int, w: int) -> Observation:
    """The window ``[r:r+h, c:c+w]`` of `obs` as an Observation on its own grid."""
    grid = GridSpec(obs.grid.crs, obs.grid.transform * Affine.translation(c, r), w, h)
    return make_observation(
        obs.values()[:, :, r : r + h, c : c + w], obs.valid[:, r : r + h, c : c + w], grid,
        obs.bands, obs.dates, obs.roi_mask[r : r + h, c : c + w], obs.meta,
    )


def _window(obs: Observation, seen: Observation) -> list[int]:
    """[row, col, height, width] of `seen` inside `obs`, in input pixels."""
    inv = ~obs.grid.transform
    col, row = inv * (seen.grid.transform.c, seen.grid.transform.f)
    return [round(row), round(col), seen.grid.height, seen.grid.width]
