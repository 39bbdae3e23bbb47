"""BERT text encoder (token features only, no pooler) in the Hugging Face key layout."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class BertConfig:
    """Sizes of a BERT encoder; defaults are bert-base-uncased."""

    vocab_size: int = 30522
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm (keys ``word_embeddings``,
    ``position_embeddings``, ``token_type_embeddings``, ``LayerNorm``)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)

    def forward(self, ids: Tensor) -> Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos)[None] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _Dense(nn.Module):
    """Linear then residual LayerNorm (keys ``dense``, ``LayerNorm``)."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _SelfAttention(nn.Module):
    """Separate ``query``, ``key``, ``value`` projections."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = (p(x).view(b, n, self.heads, c // self.heads).transpose(1, 2) for p in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return out.transpose(1, 2).reshape(b, n, c)


class _Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _Dense(cfg.hidden, cfg.hidden, cfg.eps)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        return self.output(self.self(x, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.intermediate)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """Post-norm transformer layer (keys ``attention.{self,output}``, ``intermediate``, ``output``)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _Dense(cfg.intermediate, cfg.hidden, cfg.eps)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.layers))


class BertModel(nn.Module):
    """BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
    Language Understanding", NAACL) as a sentence encoder: token ids → contextual token features.

    Keys as in Hugging Face's ``BertModel`` without the pooler: ``embeddings.*`` and
    ``encoder.layer.{i}.*``. Padding is excluded by adding −10000 to the logits of masked keys
    (the original formulation). Token types are all 0 (single sentences).
    """

    def __init__(self, cfg: BertConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or BertConfig()
        self.embeddings = BertEmbeddings(self.config)
        self.encoder = _Encoder(self.config)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """`ids` ``(B, L)`` token ids, `mask` ``(B, L)`` (1 = token, 0 = padding) → ``(B, L, hidden)``."""
        x = self.embeddings(ids)
        bias = ((1.0 - mask.to(x.dtype)) * -10000.0)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x


def bert_config(state_dict: dict[str, Tensor], prefix: str = "", head_dim: int = 64) -> BertConfig:
    """Sizes of the BERT under `prefix` in `state_dict`, read from tensor shapes (heads assume
    BERT's head size of 64)."""
    words = state_dict[f"{prefix}embeddings.word_embeddings.weight"]
    layers = {int(k[len(prefix):].split(".")[2]) for k in state_dict if k.startswith(f"{prefix}encoder.layer.")}
    hidden = int(words.shape[1])
    return BertConfig(
        vocab_size=int(words.shape[0]), hidden=hidden, layers=len(layers), heads=max(1, hidden // head_dim),
        intermediate=int(state_dict[f"{prefix}encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_positions=int(state_dict[f"{prefix}embeddings.position_embeddings.weight"].shape[0]),
        type_vocab=int(state_dict[f"{prefix}embeddings.token_type_embeddings.weight"].shape[0]),
    )
