"""RemoteSAM: the image encoder of a referring-segmentation model, text-free or prompted, on S2 true colour."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..embedding import Embedding
from ..errors import ModelError, SpecError, WeightsError
from ..nn.bert import bert_config
from ..nn.bert_tokenizer import DEFAULT_VOCAB, WordPieceTokenizer
from ..nn.remotesam import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RemoteSAMImageEncoder,
    load_remotesam,
    remotesam_config,
    remotesam_state_dict,
)
from ..providers.base import Observation
from ..specs import OutputSpec
from ..weights import choose_source, file_sha256, load_checkpoint, resolve
from .base import Embedder, ModelCard, pool_feature_maps

#: Sentinel-2 reflectance × 10000 that maps to full brightness (1.0) in the RGB image
DEFAULT_RGB_MAX = 3000.0
#: the published checkpoint
DEFAULT_SOURCE = ("hf:1e12Leon/RemoteSAM", "RemoteSAMv1.pth")
#: the stage-4 width of the published Swin-B
DIM = 1024
#: the encoder's total stride: one grid cell per 32×32 input pixels
STRIDE = 32
#: sentence length RemoteSAM's BERT reads
PROMPT_TOKENS = 20
MODES = ("text-free", "prompt")


class RemoteSAMEmbedder(Embedder):
    """RemoteSAM (Yao et al. 2025, "RemoteSAM: Towards Segment Anything for Earth
    Observation", arXiv:2505.18022): a LAVT-style referring-expression segmenter trained on
    RemoteSAM-270K; here its Swin-B image encoder gives general features of RGB imagery.

    Mode (recorded in meta): ``"text-free"`` (default) bypasses the language fusion of every
    stage — a documented deviation, because the trained model has no path without a sentence;
    ``"prompt"`` runs the trained model with the sentence ``prompt`` (BERT-base, 20 WordPiece
    tokens) and returns the stage-4 map its decoder reads, which then describes the place *as
    seen through that prompt*. See :class:`eoembed.nn.remotesam.RemoteSAMImageEncoder`.

    Input: the first frame (the composite over the window) in B04, B03, B02 (reflectance
    × 10000) divided by ``rgb_max`` and clipped to [0, 1]; invalid pixels get the ImageNet
    mean colour; the whole place is resized bilinearly (antialiased when shrinking) to
    ``image_size`` × ``image_size`` as RemoteSAM's ``Resize(896, 896)`` does (aspect not kept),
    clipped again, then ImageNet mean/std. Output: grid = the stage-4 map (1024 channels,
    ``image_size / 32`` cells a side: 28 at 896) georeferenced over the place; pooled = its
    mean (or max) over the cells, weighted by how much of each cell lies inside the place and
    has valid pixels.

    Weights: ``hf:1e12Leon/RemoteSAM`` ``RemoteSAMv1.pth`` (2.57 GB pickle holding an
    ``argparse.Namespace``, loaded through the allow-list; the architecture is read from the
    tensors' shapes). The repository publishes no licence.

    Args:
        image_size: side of the network input in pixels, a multiple of 32 (896 as trained; the
            prompt mode's cross-scale module only accepts the size it was trained for).
        rgb_max: reflectance × 10000 that becomes full brightness.
        mode: ``"text-free"`` or ``"prompt"``.
        prompt: the sentence for ``mode="prompt"`` (e.g. ``"buildings in the image"``).
        vocab: source of BERT's ``vocab.txt`` (``hf:<repo>``, a file or a folder); default
            ``hf:google-bert/bert-base-uncased``.
        weights_file: file inside `weights` when that is a Hub repository or a folder.
    """

    family: ClassVar[str] = "remotesam"
    default_batch_size: ClassVar[int] = 2
    bands: ClassVar[tuple[str, ...]] = ("B04", "B03", "B02")

    def __init__(
        self,
        model_id: str = "remotesam",
        *,
        image_size: int = 896,
        rgb_max: float = DEFAULT_RGB_MAX,
        mode: str = "text-free",
        prompt: str | None = None,
        vocab: str | None = None,
        weights_file: str | None = None,
        device: str = "cpu",
        weights: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(model_id, device=device, weights=weights, batch_size=batch_size)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < STRIDE or image_size % STRIDE:
            raise SpecError(f"RemoteSAM image_size={image_size!r} must be a multiple of {STRIDE} (896 as trained)")
        try:
            rgb_max = float(rgb_max)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"rgb_max={rgb_max!r} must be a number") from exc
        if not np.isfinite(rgb_max) or rgb_max <= 0:
            raise SpecError(f"rgb_max={rgb_max!r} must be a positive reflectance × 10000 (e.g. 3000)")
        if mode not in MODES:
            raise SpecError(f"RemoteSAM mode={mode!r} must be 'text-free' (fusion bypassed) or 'prompt'")
        if mode == "prompt" and not (isinstance(prompt, str) and prompt.strip()):
            raise SpecError("RemoteSAM mode='prompt' needs prompt='<a sentence>', e.g. prompt='buildings in the image'")
        if mode == "text-free" and prompt is not None:
            raise SpecError("RemoteSAM prompt= is only used with mode='prompt'; drop it or set mode='prompt'")
        self.image_size = image_size
        self.rgb_max = rgb_max
        self.mode = mode
        self.prompt = prompt.strip() if prompt else None
        self.vocab = vocab
        self.weights_file = weights_file
        self._model: RemoteSAMImageEncoder | None = None
        self._tokens: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- card -----------------------------------------------------------------------------
    def weights_source(self) -> tuple[str, str | None]:
        """(source, file inside it) that :meth:`_load` resolves."""
        return choose_source(self.weights, self.weights_file, DEFAULT_SOURCE)

    def describe(self) -> ModelCard:
        source, file = self.weights_source()
        cells = self.image_size // STRIDE
        return ModelCard(
            id=self.model_id,
            family=self.family,
            summary=f"RemoteSAM Swin-B image encoder ({self.mode} mode) on S2 true colour.",
            bands=self.bands,
            scale_m=10.0,
            image_size=self.image_size,
            temporal="single",
            outputs=("pooled", "grid"),
            dim=DIM,
            weights=f"{source} ({file})" if file else source,
            license="none published (repository has no licence file)",
            paper="Yao et al. 2025, RemoteSAM (arXiv:2505.18022)",
            grid_cell_px=STRIDE,
            preprocessing={
                "units": "S2 L2A reflectance x 10000",
                "frame": "first frame (the composite over the window)",
                "rgb": f"B04, B03, B02 / {self.rgb_max:g}, clipped to [0, 1] before and after the resize",
                "rgb_max": self.rgb_max,
                "invalid_pixels": "set to the ImageNet mean colour",
                "resize": f"whole place, bilinear to {self.image_size}x{self.image_size} (aspect not kept), "
                          "antialiased when shrinking",
                "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD),
            },
            config={
                "mode": self.mode,
                **({"language_fusion": "bypassed: PWAM/res_gate term left out of every stage; visual gate kept",
                    "grid": f"stage-4 visual map after norm3, {cells}x{cells} cells of 1024 channels"}
                   if self.mode == "text-free" else
                   {"prompt": self.prompt, "prompt_tokens": PROMPT_TOKENS,
                    "vocab": self.vocab or f"{DEFAULT_VOCAB[0]} ({DEFAULT_VOCAB[1]})",
                    "language_fusion": "as trained: BERT words fused by PWAM in every stage",
                    "grid": f"stage-4 map after norm3 and the cross-scale module, {cells}x{cells} cells of 1024 channels"}),
                "image_size": self.image_size,
                "pooled": "cell mean (or max) weighted by place and validity",
            },
        )

    # -- weights --------------------------------------------------------------------------
    def _load(self) -> None:
        source, file = self.weights_source()
        path = resolve(source, file)
        ckpt = load_checkpoint(path, allow=["argparse.Namespace"])
        args = ckpt.get("args") if isinstance(ckpt, dict) else None
        sd, _ = remotesam_state_dict(ckpt, self.mode)
        cfg = remotesam_config(sd, args)
        if cfg["embed_dim"] * 2 ** (len(cfg["depths"]) - 1) != DIM:
            raise WeightsError(
                f"{path.name} holds a Swin of width {cfg['embed_dim']} with {len(cfg['depths'])} stages, "
                f"not RemoteSAM's Swin-B ({DIM} channels at stage 4); give RemoteSAMv1.pth"
            )
        if self.mode == "prompt":
            model = self._prompt_model(sd, cfg, path.name)
        else:
            model = RemoteSAMImageEncoder(**cfg, mode="text-free")
        ignored = load_remotesam(model, ckpt)
        self._model = model.eval().to(self.device)
        self.weights_info = {
            "source": source, "file": path.name, "sha256": file_sha256(path),
            **({"prompt_token_ids": self._tokens[0][0, : int(self._tokens[1].sum())].tolist()} if self._tokens else {}),
            "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "ignored_prefixes": ignored,
            "trained_args": {k: getattr(args, k) for k in ("swin_type", "img_size", "window12", "model")
                             if hasattr(args, k)},
        }

    def _prompt_model(self, sd: dict[str, torch.Tensor], cfg: dict[str, Any], name: str) -> RemoteSAMImageEncoder:
        """The trained text path: BERT sized from the checkpoint, CIM for its stage-4 size."""
        proj = sd.get("backbone.cim.block.0.csa1.m.attention.proj.weight")
        if proj is None or not any(k.startswith("text_encoder.") for k in sd):
            raise WeightsError(f"{name} has no text encoder or cross-scale module; prompt mode needs RemoteSAMv1.pth")
        side = int(round(float(proj.shape[0]) ** 0.5))
        if side * STRIDE != self.image_size:
            raise SpecError(
                f"RemoteSAM prompt mode needs image_size={side * STRIDE}: its cross-scale module was trained for a "
                f"{side}×{side} stage-4 map"
            )
        source, file = (self.vocab, None) if self.vocab else DEFAULT_VOCAB
        if self.vocab and (self.vocab.startswith("hf:") or Path(self.vocab).expanduser().is_dir()):
            file = DEFAULT_VOCAB[1]
        tokenizer = WordPieceTokenizer.from_file(resolve(source, file))
        ids, mask = tokenizer([self.prompt or ""], PROMPT_TOKENS)
        text = bert_config(sd, "text_encoder.")
        if int(ids.max()) >= text.vocab_size:
            raise WeightsError(f"the BERT vocabulary gives ids up to {int(ids.max())} but {name} knows {text.vocab_size}; "
                               "use bert-base-uncased's vocab.txt")
        self._tokens = (ids, mask)
        return RemoteSAMImageEncoder(**cfg, mode="prompt", text=text, cim_side=side)

    @property
    def network(self) -> RemoteSAMImageEncoder:
        """The loaded encoder (loads on first use)."""
        self.load()
        if self._model is None:
            raise ModelError(f"{self.model_id!r} failed to load its network")
        return self._model

    # -- inference ------------------------------------------------------------------------
    def prepare(self, observations: list[Observation]) -> torch.Tensor:
        """RGB in [0, 1], ``(B, 3, S, S)``, on the model's device."""
        fill = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        images = []
        for obs in observations:
            vals = torch.from_numpy(obs.values(self.bands)[0])
            valid = torch.from_numpy(np.asarray(obs.valid[0], dtype=bool))
            rgb = (vals / self.rgb_max).clamp(0.0, 1.0)
            rgb = torch.where(valid[None], rgb, fill)
            size = (self.image_size, self.image_size)
            if tuple(rgb.shape[-2:]) != size:
                shrink = rgb.shape[-2] > self.image_size or rgb.shape[-1] > self.image_size
                rgb = F.interpolate(rgb[None], size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]
            images.append(rgb.clamp(0.0, 1.0))
        return torch.stack(images).to(self.device)

    def embed_batch(self, observations: list[Observation], output: OutputSpec) -> list[Embedding]:
        rgb = self.prepare(observations)
        if self.mode == "prompt":
            model = self.network
            assert self._tokens is not None
            ids, mask = (t.expand(len(observations), -1).to(self.device) for t in self._tokens)
            out = model(rgb, ids, mask)
        else:
            out = self.network(rgb)
        grid = out["grid"]
        extra: dict[str, Any] = {"mode": self.mode, **({"prompt": self.prompt} if self.prompt else {})}
        if output.mode == "pooled":
            masks = [o.roi_mask & o.valid[0] for o in observations]
            vecs = pool_feature_maps(grid, masks, output.pooling)
            return [self.pooled_embedding(v, o, output, pooling=f"{output.pooling} of the stage-4 cells, "
                                          "weighted by place and validity", **extra)
                    for v, o in zip(vecs, observations)]
        return [self.grid_embedding(g, o, output, **extra) for g, o in zip(grid, observations)]
