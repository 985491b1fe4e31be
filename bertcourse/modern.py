"""From BERT to ModernBERT, one change at a time, in one model.

ModernBERT (Warner et al. 2024) keeps BERT's idea, a bidirectional
Transformer encoder trained by masked language modelling, and changes how the
layers are built. This module writes each change as a small piece, and one
model whose config switches every change on or off, so the ladder of chapter 14
is one codebase:

==========================  ===============================  =============================
switch (`ModernConfig`)     BERT (2018)                      ModernBERT (2024)
==========================  ===============================  =============================
`norm_position`             "post": LayerNorm after each     "pre": LayerNorm before each
                            residual sum                     sublayer, one final norm
`position_embedding_type`   "absolute": a learned table      "rotary": rotate queries and
                                                             keys by their position (RoPE)
`mlp_type`                  "plain": up, GELU, down          "glu": GeGLU, a gated unit
`attention_bias`,           True: every linear and norm      False: no biases (the MLM
`mlp_bias`, `norm_bias`     has a bias                       decoder keeps its own)
`layer_types`               every layer "full_attention"     every third layer global, the
                                                             others "sliding_attention"
`type_vocab_size`           2 (segments for NSP)             0
`unpad`                     (padding computed and dropped)   dense layers on real tokens only
==========================  ===============================  =============================

With every switch at ModernBERT's value, the module tree and parameter names
are those of `transformers`' `ModernBertModel` / `ModernBertForMaskedLM`, and
`from_hf` / `to_hf` move weights between the two (tests check outputs equal to
1e-5). With every switch at BERT's value, `from_bert` loads a course BERT and
gives its outputs: the ladder's first rung is BERT itself.

Initialisation is ModernBERT's (a truncated normal, the output projections
scaled down by sqrt(2 x layers)) on every rung, so two rungs differ only by the
switch between them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import SIZES, BertConfig, ConfigError
from .hf import CheckpointMismatchError, load_state_dict_checked, read_weights, write_checkpoint
from .model import masked_lm_logits_and_loss, pretraining_loss
from .speedups import Dropout, Packing, dropout, padding_is_ignored

__all__ = [
    "LADDER",
    "ModernConfig",
    "ModernModelOutput",
    "ModernBertEmbeddings",
    "RotaryEmbedding",
    "ModernBertMLP",
    "ModernBertAttention",
    "ModernBertEncoderLayer",
    "ModernBertModel",
    "ModernBertForMaskedLM",
    "ModernBertForPreTraining",
    "ModernBertForSequenceClassification",
    "apply_rotary",
    "glu_intermediate_size",
    "layer_pattern",
    "ladder_config",
    "local_attention",
    "rotate_half",
    "sliding_window_mask",
]

NORM_POSITIONS = ("post", "pre")
POSITION_TYPES = ("absolute", "rotary")
MLP_TYPES = ("plain", "glu")
LAYER_TYPES = ("full_attention", "sliding_attention")
ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "relu", "silu")


def layer_pattern(num_hidden_layers: int, global_every: int = 3) -> list[str]:
    """ModernBERT's layer types: layer i is global when i % global_every == 0, else local."""
    return [
        "full_attention" if i % global_every == 0 else "sliding_attention"
        for i in range(num_hidden_layers)
    ]


def glu_intermediate_size(hidden_size: int, plain_intermediate: int | None = None) -> int:
    """The GLU width with the parameter count of a plain feed-forward block.

    A plain block has 2 x hidden x intermediate weights (up and down); a GLU
    block 3 x hidden x width (two up projections, one down), so equal counts
    need width = 2/3 of the plain intermediate size (4 x hidden in BERT).
    """
    plain = 4 * hidden_size if plain_intermediate is None else plain_intermediate
    return round(2 * plain / 3)


@dataclass
class ModernConfig:
    """Hyper-parameters of the ladder's encoder.

    Field names are those of `transformers.ModernBertConfig` (its defaults are
    ModernBERT-base's), plus the switches that turn each change back to BERT:
    `norm_position`, `position_embedding_type`, `mlp_type`, `type_vocab_size`
    and `unpad`. `layer_types` lists each layer's attention; `global_rope_theta`
    and `local_rope_theta` are the two rotary bases (transformers keeps them in
    `rope_parameters`).
    """

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int = 50283
    attention_bias: bool = False
    attention_dropout: float = 0.0
    layer_types: list[str] | None = None
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    local_attention: int = 128
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_pooling: str = "cls"
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    # The ladder's switches (ModernBERT's values by default; BERT's in comments).
    norm_position: str = "pre"  # "post"
    position_embedding_type: str = "rotary"  # "absolute"
    mlp_type: str = "glu"  # "plain"
    type_vocab_size: int = 0  # 2
    unpad: bool = False  # an execution choice: the same numbers either way
    attn_implementation: str = "sdpa"  # "eager": from scratch, can return the weights

    def __post_init__(self) -> None:
        if self.layer_types is None:
            self.layer_types = layer_pattern(self.num_hidden_layers)
        self.layer_types = list(self.layer_types)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "max_position_embeddings", "local_attention"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.position_embedding_type == "rotary" and self.head_size % 2:
            raise ConfigError(
                f"rotary positions rotate pairs of dimensions: the head size "
                f"({self.head_size}) must be even. Change hidden_size or num_attention_heads."
            )
        choices = {
            "norm_position": NORM_POSITIONS,
            "position_embedding_type": POSITION_TYPES,
            "mlp_type": MLP_TYPES,
            "hidden_activation": ACTIVATIONS,
            "classifier_activation": ACTIVATIONS,
            "classifier_pooling": ("cls", "mean"),
            "attn_implementation": ("eager", "sdpa"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(map(repr, allowed))}, "
                    f"got {getattr(self, name)!r}."
                )
        if len(self.layer_types) != self.num_hidden_layers or not set(self.layer_types) <= set(
            LAYER_TYPES
        ):
            raise ConfigError(
                f"layer_types must list {self.num_hidden_layers} entries, each "
                f"'full_attention' or 'sliding_attention', got {self.layer_types!r}; "
                "layer_pattern(num_hidden_layers, every) builds ModernBERT's."
            )
        if self.type_vocab_size < 0:
            raise ConfigError(f"type_vocab_size must be >= 0, got {self.type_vocab_size!r}.")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"pad_token_id ({self.pad_token_id}) must be an id in [0, {self.vocab_size})."
            )
        for name in ("attention_dropout", "embedding_dropout", "mlp_dropout",
                     "classifier_dropout"):  # fmt: skip
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(
                    f"{name} is a probability in [0, 1), got {getattr(self, name)!r}."
                )

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def sliding_window(self) -> int:
        """How far a local layer sees on each side: local_attention // 2 tokens."""
        return self.local_attention // 2

    @property
    def is_modernbert(self) -> bool:
        """Whether every switch is at ModernBERT's value, so transformers can load the weights."""
        return (
            self.norm_position == "pre"
            and self.position_embedding_type == "rotary"
            and self.mlp_type == "glu"
            and self.type_vocab_size == 0
        )

    @classmethod
    def from_name(cls, size: str, **overrides: Any) -> ModernConfig:
        """A named size of the course (`tiny`, `mini`, `small`, `base`) with ModernBERT's layers.

        The GLU width keeps BERT's feed-forward parameter count (see
        `glu_intermediate_size`); every third layer is global.
        """
        if size not in SIZES:
            raise ConfigError(f"Unknown model size {size!r}; choose one of {', '.join(SIZES)}.")
        layers, hidden, heads = SIZES[size]
        fields: dict[str, Any] = dict(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=glu_intermediate_size(hidden),
        )
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_bert(cls, bert_config: Any, **overrides: Any) -> ModernConfig:
        """Every switch at BERT's value, sizes from a `BertConfig`: the ladder's first rung."""
        fields: dict[str, Any] = dict(
            vocab_size=bert_config.vocab_size,
            hidden_size=bert_config.hidden_size,
            intermediate_size=bert_config.intermediate_size,
            num_hidden_layers=bert_config.num_hidden_layers,
            num_attention_heads=bert_config.num_attention_heads,
            hidden_activation=bert_config.hidden_act,
            max_position_embeddings=bert_config.max_position_embeddings,
            initializer_range=bert_config.initializer_range,
            norm_eps=bert_config.layer_norm_eps,
            pad_token_id=bert_config.pad_token_id,
            layer_types=["full_attention"] * bert_config.num_hidden_layers,
            classifier_activation=bert_config.hidden_act,
            **BERT_SWITCHES,
            type_vocab_size=bert_config.type_vocab_size,
        )
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_hf(cls, hf_config: Any) -> ModernConfig:
        """Copy a `transformers.ModernBertConfig` (or its dict, or a config.json we wrote)."""
        source = dict(hf_config) if isinstance(hf_config, dict) else hf_config.to_dict()
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in source.items() if k in names and v is not None}
        rope = source.get("rope_parameters") or {}
        if "full_attention" in rope and "global_rope_theta" not in source:
            fields["global_rope_theta"] = float(rope["full_attention"]["rope_theta"])
        if "sliding_attention" in rope and "local_rope_theta" not in source:
            fields["local_rope_theta"] = float(rope["sliding_attention"]["rope_theta"])
        if "layer_types" not in fields and "global_attn_every_n_layers" in source:
            fields["layer_types"] = layer_pattern(
                source["num_hidden_layers"], source["global_attn_every_n_layers"]
            )
        for name in ("attention_dropout", "embedding_dropout", "mlp_dropout",
                     "classifier_dropout", "global_rope_theta", "local_rope_theta"):  # fmt: skip
            if name in fields:
                fields[name] = float(fields[name])
        return cls(**fields)

    def to_hf(self) -> Any:
        """The equivalent `transformers.ModernBertConfig` (only when every switch is ModernBERT's)."""
        if not self.is_modernbert:
            raise ConfigError(
                "transformers' ModernBertModel has pre-LN layers, rotary positions, a GLU "
                "feed-forward block and no segment embeddings; this config turns some of them "
                f"off ({self.describe()}). Only a config with every switch at ModernBERT's "
                "value has a transformers twin; save it with save_pretrained instead."
            )
        import transformers  # deferred: needed only here

        fields = {
            k: v
            for k, v in self.to_dict().items()
            if k not in LADDER_ONLY_FIELDS and k not in ("global_rope_theta", "local_rope_theta")
        }
        fields["rope_parameters"] = {
            "full_attention": {"rope_type": "default", "rope_theta": self.global_rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": self.local_rope_theta},
        }
        hf_config = transformers.ModernBertConfig(**fields)
        hf_config._attn_implementation = self.attn_implementation
        return hf_config

    def describe(self) -> str:
        """The switches in a line: e.g. 'post-LN, absolute positions, plain FFN, 0/4 local'."""
        local = sum(t == "sliding_attention" for t in self.layer_types)
        return (
            f"{self.norm_position}-LN, {self.position_embedding_type} positions, "
            f"{self.mlp_type} FFN, {'biases' if self.mlp_bias else 'no biases'}, "
            f"{local}/{self.num_hidden_layers} layers local"
            + (f" (window {self.local_attention})" if local else "")
            + (", unpadded" if self.unpad else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ModernConfig:
        return dataclasses.replace(self, **changes)


# The switches that make a ModernConfig compute BERT's layers (with BERT's biases and norms).
BERT_SWITCHES: dict[str, Any] = dict(
    norm_position="post",
    position_embedding_type="absolute",
    mlp_type="plain",
    attention_bias=True,
    mlp_bias=True,
    norm_bias=True,
    classifier_bias=True,
)
# Fields transformers' ModernBertConfig does not have.
LADDER_ONLY_FIELDS = ("norm_position", "position_embedding_type", "mlp_type", "type_vocab_size",
                      "unpad", "attn_implementation")  # fmt: skip


# ----------------------------------------------------------------------------
# The ladder: each rung changes one thing on top of the one before
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rung:
    """One step of chapter 14's ladder: the config switches and the training options it sets."""

    name: str
    label: str
    config: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


LADDER: tuple[Rung, ...] = (
    Rung("bert", "1 BERT (post-LN, MLM+NSP, 15%)", {}, {"nsp": True, "mlm_probability": 0.15}),
    Rung("pre_ln", "2 + pre-LN", {"norm_position": "pre"}),
    Rung("mlm30", "3 - NSP, 30% masking", {}, {"nsp": False, "mlm_probability": 0.3}),
    Rung(
        "geglu",
        "4 + GeGLU, no biases",
        {
            "mlp_type": "glu",
            "attention_bias": False,
            "mlp_bias": False,
            "norm_bias": False,
            "classifier_bias": False,
        },
    ),  # fmt: skip
    Rung(
        "rope", "5 + rotary positions", {"position_embedding_type": "rotary", "type_vocab_size": 0}
    ),  # fmt: skip
    Rung("local", "6 + local/global attention", {"layer_types": "modern"}),
    Rung("unpad", "7 + unpadding (= ModernBERT)", {"unpad": True}),
)


def ladder_config(rung: str | int, size: str = "tiny", **overrides: Any) -> ModernConfig:
    """The config of a rung (by name or 1-based number): BERT plus every change up to it.

    Sizes come from the course's named sizes; the feed-forward block keeps
    BERT's parameter count when it becomes a GLU.
    """
    names = [r.name for r in LADDER]
    index = rung - 1 if isinstance(rung, int) else names.index(rung) if rung in names else -1
    if not 0 <= index < len(LADDER):
        raise ConfigError(f"Unknown rung {rung!r}: choose 1-{len(LADDER)} or one of {names}.")
    bert = BertConfig.from_name(  # refuses an unknown size
        size, vocab_size=ModernConfig.vocab_size, pad_token_id=ModernConfig.pad_token_id
    )
    fields = ModernConfig.from_bert(bert).to_dict()  # rung 1: every switch at BERT's value
    layers, hidden = bert.num_hidden_layers, bert.hidden_size
    for step in LADDER[: index + 1]:
        for key, value in step.config.items():
            if key == "layer_types":
                value = layer_pattern(layers)
            if key == "mlp_type" and value == "glu":
                fields["intermediate_size"] = glu_intermediate_size(hidden)
            fields[key] = value
        if step.name == "pre_ln":
            fields["norm_eps"] = 1e-5
    fields.update(overrides)
    return ModernConfig(**fields)


# ----------------------------------------------------------------------------
# The pieces
# ----------------------------------------------------------------------------


@dataclass
class ModernModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, H); zeros at padding when unpadded
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    pooler_output: torch.Tensor | None = None  # BERT's pooler, only with an NSP head


def _activation(name: str):
    if name == "gelu_pytorch_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    return {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}[name]


def _layer_norm(config: ModernConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


class ModernBertEmbeddings(nn.Module):
    """Token embeddings (plus BERT's position and segment tables when switched on), a norm, dropout.

    With rotary positions there is no position table: position enters each
    attention layer by rotating queries and keys instead.
    """

    def __init__(self, config: ModernConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        if config.position_embedding_type == "absolute":
            self.position_embeddings = nn.Embedding(
                config.max_position_embeddings, config.hidden_size
            )
        if config.type_vocab_size:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = _layer_norm(config)
        self.drop = Dropout(config.embedding_dropout)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.tok_embeddings(input_ids)
        if hasattr(self, "token_type_embeddings"):
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            hidden = hidden + self.token_type_embeddings(token_type_ids)
        if hasattr(self, "position_embeddings"):
            if position_ids is None:
                raise ValueError("absolute positions need position_ids")
            if int(position_ids.max()) >= self.position_embeddings.num_embeddings:
                raise ValueError(
                    f"position {int(position_ids.max())} is beyond the learned table of "
                    f"{self.position_embeddings.num_embeddings} positions: a model with absolute "
                    "positions cannot read longer sequences. Truncate, or use rotary positions."
                )
            hidden = hidden + self.position_embeddings(position_ids)
        return self.drop(self.norm(hidden))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of dimensions (i, i + d/2) of x by its position's angle.

    x (..., d) and cos, sin broadcastable to it. Computed in float32 and cast
    back, as the reference does, so a bf16 model rotates accurately.
    """
    rotated = x.float() * cos + rotate_half(x.float()) * sin
    return rotated.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos and sin of RoPE's angles: position p, pair i turns by p * base^(-2i/d) (Su et al. 2021).

    Two bases, one per layer type: ModernBERT rotates global layers with
    base 160,000 (slow-turning pairs that tell far positions apart) and local
    layers with 10,000. The inverse frequencies are buffers, not parameters.
    """

    def __init__(self, config: ModernConfig):
        super().__init__()
        dim = config.head_size
        exponents = torch.arange(0, dim, 2, dtype=torch.float) / dim
        for layer_type, base in (("full_attention", config.global_rope_theta),
                                 ("sliding_attention", config.local_rope_theta)):  # fmt: skip
            self.register_buffer(f"{layer_type}_inv_freq", 1.0 / base**exponents, persistent=False)

    def forward(
        self, position_ids: torch.Tensor, layer_type: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (...,) -> cos, sin (..., d), each pair's angle repeated for both halves."""
        inv_freq = getattr(self, f"{layer_type}_inv_freq")
        angles = position_ids[..., None].float() * inv_freq  # (..., d/2)
        angles = torch.cat((angles, angles), dim=-1)  # (..., d)
        return angles.cos(), angles.sin()


def sliding_window_mask(
    length: int, window: int, device: torch.device | None = None
) -> torch.Tensor:
    """(length, length) bool: True where |query - key| <= window // 2 (ModernBERT's local window).

    `window` is the whole span (`local_attention`, 128 in ModernBERT): each
    token sees window // 2 tokens on each side and itself.
    """
    positions = torch.arange(length, device=device)
    return (positions[:, None] - positions[None, :]).abs() <= window // 2


def local_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    half: int,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sliding-window attention block by block: each query sees keys within `half` positions.

    query, key, value (B, heads, T, d); key_mask (B, T) bool, True at real tokens. The
    queries are cut into blocks of `half`; block k needs only the keys of blocks k-1, k, k+1,
    so the scores are (T x 3 half) instead of (T x T): the cost grows linearly with T, which is
    what a local layer buys. Same numbers as full attention with `sliding_window_mask`.
    """
    batch, heads, length, dim = query.shape
    block = max(1, half)
    blocks = -(-length // block)
    pad = blocks * block - length

    def windows(x: torch.Tensor) -> torch.Tensor:  # (B, h, T, d) -> (B, h, blocks, 3 block, d)
        x = F.pad(x, (0, 0, block, block + pad))
        return x.unfold(2, 3 * block, block).transpose(-1, -2)

    queries = F.pad(query, (0, 0, 0, pad)).view(batch, heads, blocks, block, dim)
    offsets = (
        torch.arange(block, device=query.device)[:, None]
        - torch.arange(3 * block, device=query.device)[None, :]
    )  # query r of a block vs key s of its window: distance r - s + block
    band = (offsets + block).abs() <= half  # (block, 3 block)
    real = (
        torch.ones(batch, length, dtype=torch.bool, device=query.device)
        if key_mask is None
        else key_mask.bool()
    )
    real = F.pad(real, (block, block + pad), value=False).unfold(1, 3 * block, block)
    allowed = band[None, None] & real[:, :, None, :]  # (B, blocks, block, 3 block)
    mask = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device).masked_fill(
        ~allowed, torch.finfo(query.dtype).min
    )
    context = F.scaled_dot_product_attention(
        queries, windows(key), windows(value), attn_mask=mask[:, None]
    )  # (B, h, blocks, block, d)
    return context.reshape(batch, heads, blocks * block, dim)[:, :, :length]


class ModernBertMLP(nn.Module):
    """The feed-forward block: GeGLU (`glu`, Shazeer 2020) or BERT's plain one.

    glu: Wi projects to 2 x intermediate; one half, through GELU, gates the
    other (elementwise product); Wo projects back. plain: Wi to intermediate,
    GELU, Wo. Same parameter names either way.
    """

    def __init__(self, config: ModernConfig):
        super().__init__()
        self.glu = config.mlp_type == "glu"
        width = config.intermediate_size * (2 if self.glu else 1)
        self.Wi = nn.Linear(config.hidden_size, width, bias=config.mlp_bias)
        self.act = _activation(config.hidden_activation)
        self.drop = Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.glu:
            value, gate = self.Wi(hidden_states).chunk(2, dim=-1)
            return self.Wo(self.drop(self.act(value) * gate))
        return self.Wo(self.drop(self.act(self.Wi(hidden_states))))


class ModernBertAttention(nn.Module):
    """Self-attention with one fused Q/K/V projection, rotary positions and an optional window.

    Wqkv's output rows are [queries; keys; values], as in transformers, so
    BERT's separate query/key/value matrices load by stacking them.
    """

    def __init__(self, config: ModernConfig, layer_idx: int):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.layer_type = config.layer_types[layer_idx]
        self.rotary = config.position_embedding_type == "rotary"
        self.half_window = config.sliding_window
        self.dropout_prob = config.attention_dropout
        self.attn_implementation = config.attn_implementation
        self.Wqkv = nn.Linear(
            config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias
        )
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.out_drop = Dropout(config.attention_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        *,
        packing: Packing | None = None,
        output_attentions: bool = False,
        key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states (B, T, H), or (N, H) real tokens with `packing`; attention_mask additive,
        broadcastable to (B, heads, T, T); rotary: cos, sin shaped like the tokens' (..., d);
        key_mask (B, T) bool, True at real tokens (for the blockwise local path).
        """
        qkv = self.Wqkv(hidden_states)  # (..., 3H)
        qkv = qkv.view(*qkv.shape[:-1], 3, self.num_heads, self.head_size)
        query, key, value = qkv.unbind(dim=-3)  # each (..., heads, d)
        if self.rotary and rotary is not None:
            cos, sin = (t.unsqueeze(-2) for t in rotary)  # (..., 1, d): the same for every head
            query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
        if packing is not None:  # the real tokens back into their sentences, around attention
            query, key, value = packing.unpack(query), packing.unpack(key), packing.unpack(value)
        query, key, value = (t.transpose(1, 2) for t in (query, key, value))  # (B, heads, T, d)
        dropout_p = self.dropout_prob if self.training else 0.0
        fused = self.attn_implementation == "sdpa" and not output_attentions
        if dropout_p > 0.0 and query.device.type == "cpu":
            fused = False  # torch's fused kernel would fall back to its slow dropout on a CPU
        blockwise = (
            self.layer_type == "sliding_attention"
            and fused
            and dropout_p == 0.0
            and query.shape[2] > 4 * self.half_window
        )
        if blockwise:  # a long sequence: only the window's scores are computed
            context = local_attention(query, key, value, self.half_window, key_mask)
            probs = None
        elif fused:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=dropout_p
            )
            probs = None
        else:
            scores = query @ key.transpose(-2, -1) * self.head_size**-0.5
            if attention_mask is not None:
                scores = scores + attention_mask
            probs = scores.softmax(dim=-1)
            context = dropout(probs, dropout_p) @ value
        context = context.transpose(1, 2)  # (B, T, heads, d)
        context = context.reshape(*context.shape[:2], -1)
        if packing is not None:
            context = packing.pack(context)  # (N, H)
        return self.out_drop(self.Wo(context)), probs


class ModernBertEncoderLayer(nn.Module):
    """One layer: attention and feed-forward, each in a residual branch with a LayerNorm.

    pre-LN (ModernBERT): x + f(norm(x)); the first layer's attention norm is
    the identity, because the embeddings end with a norm. post-LN (BERT):
    norm(x + f(x)).
    """

    def __init__(self, config: ModernConfig, layer_idx: int):
        super().__init__()
        self.pre_ln = config.norm_position == "pre"
        self.attention_type = config.layer_types[layer_idx]
        first = layer_idx == 0 and self.pre_ln
        self.attn_norm = nn.Identity() if first else _layer_norm(config)
        self.attn = ModernBertAttention(config, layer_idx)
        self.mlp_norm = _layer_norm(config)
        self.mlp = ModernBertMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        *,
        packing: Packing | None = None,
        output_attentions: bool = False,
        key_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        kwargs = dict(packing=packing, output_attentions=output_attentions, key_mask=key_mask)
        if self.pre_ln:
            attended, probs = self.attn(
                self.attn_norm(hidden_states), attention_mask, rotary, **kwargs
            )
            hidden_states = hidden_states + attended
            return hidden_states + self.mlp(self.mlp_norm(hidden_states)), probs
        attended, probs = self.attn(hidden_states, attention_mask, rotary, **kwargs)
        hidden_states = self.attn_norm(hidden_states + attended)
        return self.mlp_norm(hidden_states + self.mlp(hidden_states)), probs


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------


class ModernPreTrainedModel(nn.Module):
    """Shared by the ladder's models: initialisation, saving and loading, transformers interop."""

    hf_class_name = "ModernBertModel"
    base_model_prefix = "model"
    tied_weights: dict[str, str] = {}
    allowed_missing_prefixes: tuple[str, ...] = ()

    def __init__(self, config: ModernConfig):
        super().__init__()
        if not isinstance(config, ModernConfig):
            raise TypeError(
                f"{type(self).__name__} expects a bertcourse.modern.ModernConfig, got "
                f"{type(config).__name__}; for a transformers config use ModernConfig.from_hf."
            )
        self.config = config

    def init_weights(self) -> None:
        """ModernBERT's initialisation: truncated normals, output projections scaled by 1/sqrt(2L)."""
        config = self.config
        std_in = config.initializer_range
        std_out = std_in / math.sqrt(2.0 * config.num_hidden_layers)
        cutoff = config.initializer_cutoff_factor

        def normal(linear: nn.Module, std: float) -> None:
            nn.init.trunc_normal_(linear.weight, 0.0, std, -cutoff * std, cutoff * std)
            if getattr(linear, "bias", None) is not None:
                nn.init.zeros_(linear.bias)

        for name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                normal(module, std_in)
            elif isinstance(module, ModernBertMLP):
                normal(module.Wi, std_in)
                normal(module.Wo, std_out)
            elif isinstance(module, ModernBertAttention):
                normal(module.Wqkv, std_in)
                normal(module.Wo, std_out)
            elif name in ("head.dense", "decoder", "pooler", "seq_relationship"):
                normal(module, std_out)
            elif name == "classifier":
                normal(module, config.hidden_size**-0.5)
        if hasattr(self, "tie_weights"):
            self.tie_weights()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- transformers interop ------------------------------------------------

    @classmethod
    def from_hf(cls, model_or_path: Any, **kwargs: Any):
        """This model with the weights of a transformers ModernBERT (a model object or a directory),
        or of a directory written by `save_pretrained` (any rung of the ladder).

        kwargs naming a ModernConfig field override the checkpoint's config; the others go to
        the model's constructor (e.g. num_labels, id2label for a classifier).
        """
        names = {f.name for f in dataclasses.fields(ModernConfig)}
        config_overrides = {k: v for k, v in kwargs.items() if k in names}
        model_kwargs = {k: v for k, v in kwargs.items() if k not in names}
        if isinstance(model_or_path, nn.Module):
            hf_config = getattr(model_or_path, "config", None)
            if getattr(hf_config, "model_type", None) != "modernbert":
                raise TypeError(
                    f"from_hf expects a transformers ModernBERT model, got "
                    f"{type(model_or_path).__name__}."
                )
            config_dict = {**hf_config.to_dict(), "architectures": [type(model_or_path).__name__]}
            state_dict = model_or_path.state_dict()
        else:
            config_dict, state_dict = load_modern_checkpoint(model_or_path)
        config = ModernConfig.from_hf({**config_dict, **config_overrides})
        extras = {**cls._kwargs_from_config_dict(config_dict), **model_kwargs}
        model = cls(config, **extras)
        model.load_weights(state_dict)
        return model.eval()

    @classmethod
    def _kwargs_from_config_dict(cls, config_dict: dict[str, Any]) -> dict[str, Any]:
        return {}

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Load a state dict, every tensor checked (`hf.load_state_dict_checked`: an encoder
        takes the encoder of a task model, another task's head is left out); returns the names
        that start fresh."""
        load_state_dict_checked(self, state_dict)
        return self.newly_initialized_keys

    def to_hf(self):
        """The transformers twin (every switch must be ModernBERT's), weights copied, strict."""
        import transformers  # deferred: needed only here, half a second to import

        hf_config = self.config.to_hf()
        for name, value in self.hf_config_extras().items():  # e.g. a classifier's labels
            setattr(hf_config, name, value)
        hf_model = getattr(transformers, self.hf_class_name)(hf_config)
        hf_model.load_state_dict(self.state_dict(), strict=False)
        missing = set(hf_model.state_dict()) - set(self.state_dict())
        if missing:
            raise CheckpointMismatchError(
                f"transformers expects tensors we lack: {sorted(missing)}"
            )
        if hasattr(hf_model, "tie_weights"):
            hf_model.tie_weights()
        return hf_model.train(self.training)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """config.json + model.safetensors. With every switch at ModernBERT's value the folder
        also loads in transformers (`AutoModelForMaskedLM.from_pretrained`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config.update(model_type="modernbert", architectures=[self.hf_class_name])
        config["rope_parameters"] = {
            "full_attention": {"rope_type": "default", "rope_theta": self.config.global_rope_theta},
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": self.config.local_rope_theta},
        }  # fmt: skip
        config.update(self.config_extras())
        return write_checkpoint(self, directory, json.dumps(config, indent=2) + "\n")

    def config_extras(self) -> dict[str, Any]:
        """Fields a subclass adds to the config.json it saves."""
        return {}

    def hf_config_extras(self) -> dict[str, Any]:
        """Fields a subclass sets on its transformers config before the twin is built."""
        return {}


def load_modern_checkpoint(
    directory: str | os.PathLike,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config dict, state dict) of a ModernBERT directory (ours or transformers')."""
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"No config.json in {directory}: is it a model directory?")
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "modernbert":
        raise CheckpointMismatchError(
            f"{directory} holds a {config.get('model_type', 'bert')!r} model, not one of the "
            "ladder's ('model_type': 'modernbert'); load a BERT with BertModel.from_hf, or convert "
            "it with ModernBertModel.from_bert."
        )
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return config, read_weights(directory / name)
    raise FileNotFoundError(f"No model.safetensors in {directory}.")


class ModernBertModel(ModernPreTrainedModel):
    """The encoder: embeddings, layers, a final norm (pre-LN) -> one vector per token."""

    def __init__(self, config: ModernConfig):
        super().__init__(config)
        self.embeddings = ModernBertEmbeddings(config)
        self.layers = nn.ModuleList(
            ModernBertEncoderLayer(config, i) for i in range(config.num_hidden_layers)
        )
        pre_ln = config.norm_position == "pre"
        self.final_norm = _layer_norm(config) if pre_ln else nn.Identity()
        if config.position_embedding_type == "rotary":
            self.rotary_emb = RotaryEmbedding(config)
        self.init_weights()

    def attention_masks(
        self,
        attention_mask: torch.Tensor | None,
        length: int,
        dtype: torch.dtype,
        device: Any,
        dense_local: bool = True,
    ) -> dict[str, torch.Tensor | None]:
        """Additive masks per layer type: padding keys blocked; local layers also beyond the window.

        dense_local=False: no (T, T) mask for the local layers, which then attend block by
        block (`local_attention`) and need only the (B, T) padding mask.
        """
        minimum = torch.finfo(dtype).min
        keys = None
        if attention_mask is not None and not bool(attention_mask.all()):
            keys = attention_mask[:, None, None, :].bool()  # (B, 1, 1, T)
        masks: dict[str, torch.Tensor | None] = {
            "full_attention": None
            if keys is None
            else torch.zeros(keys.shape, dtype=dtype, device=device).masked_fill(~keys, minimum)
        }
        if "sliding_attention" in self.config.layer_types and not dense_local:
            masks["sliding_attention"] = None
        elif "sliding_attention" in self.config.layer_types:
            window = sliding_window_mask(length, self.config.local_attention, device)  # (T, T)
            allowed = window[None, None] if keys is None else window[None, None] & keys
            if bool(allowed.all()):
                masks["sliding_attention"] = masks["full_attention"]
            else:
                zeros = torch.zeros(allowed.shape, dtype=dtype, device=device)
                masks["sliding_attention"] = zeros.masked_fill(~allowed, minimum)
        return masks

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        unpad: bool | None = None,
    ) -> ModernModelOutput:
        """input_ids (B, T); attention_mask (B, T), 1 at tokens and 0 at padding; token_type_ids
        only with segment embeddings (BERT's rung). unpad (default: the config's) runs every
        layer but attention on the real tokens only: same numbers, less work on padded batches;
        padding positions of last_hidden_state then come out as 0.
        """
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}; "
                "for one sentence use input_ids.unsqueeze(0)."
            )
        batch, length = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device).expand(batch, length)
        dtype = self.embeddings.tok_embeddings.weight.dtype
        blockwise = (  # as ModernBertAttention decides: long sequences, no attention maps
            length > 4 * self.config.sliding_window
            and self.config.attn_implementation == "sdpa"
            and not output_attentions
            and (self.config.attention_dropout == 0.0 or not self.training)
        )
        masks = self.attention_masks(
            attention_mask, length, dtype, input_ids.device, dense_local=not blockwise
        )
        unpad = self.config.unpad if unpad is None else unpad
        packing = None
        has_padding = attention_mask is not None and not bool(attention_mask.all())
        if unpad and has_padding:
            if output_attentions or output_hidden_states:
                packing = None  # the maps and states are shown padded
            else:
                packing = Packing(attention_mask)
                input_ids, position_ids = packing.pack(input_ids), packing.pack(position_ids)
                if token_type_ids is not None:
                    token_type_ids = packing.pack(token_type_ids)
        hidden = self.embeddings(input_ids, position_ids, token_type_ids)
        rotary = {}
        if hasattr(self, "rotary_emb"):
            for layer_type in set(self.config.layer_types):
                rotary[layer_type] = self.rotary_emb(position_ids, layer_type)
        states: list[torch.Tensor] = [hidden]
        maps: list[torch.Tensor] = []
        for layer in self.layers:
            hidden, probs = layer(
                hidden,
                masks[layer.attention_type],
                rotary.get(layer.attention_type),
                packing=packing,
                output_attentions=output_attentions,
                key_mask=attention_mask,
            )
            states.append(hidden)
            if probs is not None:
                maps.append(probs)
        hidden = self.final_norm(hidden)
        if packing is not None:
            hidden = packing.unpack(hidden)
        return ModernModelOutput(
            hidden,
            tuple(states[:-1]) + (hidden,) if output_hidden_states else None,
            tuple(maps) if output_attentions else None,
        )

    @classmethod
    def from_bert(cls, bert_model: nn.Module, **config_overrides: Any):
        """The ladder's BERT rung with the weights of a course (or transformers) BERT."""
        config = ModernConfig.from_bert(bert_model.config, **config_overrides)
        model = cls(config)
        model.load_weights(bert_state_dict_to_modern(bert_model.state_dict(), cls))
        return model.eval()


class ModernBertPredictionHead(nn.Module):
    """dense, activation, norm: BERT's `transform` of the MLM head, ModernBERT's `head`."""

    def __init__(self, config: ModernConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = _activation(config.classifier_activation)
        self.norm = _layer_norm(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(hidden_states)))


@dataclass
class ModernMaskedLMOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, T, V), or (N, V) on the N labelled positions with masked_only
    attentions: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class ModernPreTrainingOutput:
    loss: torch.Tensor | None
    prediction_logits: torch.Tensor
    seq_relationship_logits: torch.Tensor
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class ModernBertForMaskedLM(ModernPreTrainedModel):
    """The encoder, the prediction head and a decoder tied to the token embeddings."""

    hf_class_name = "ModernBertForMaskedLM"
    tied_weights = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}
    allowed_missing_prefixes = ("head.", "decoder.bias")

    def __init__(self, config: ModernConfig):
        super().__init__(config)
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.init_weights()

    def tie_weights(self) -> None:
        self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    def predict(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits: the head (dense, act, norm), then the decoder tied to the embeddings."""
        return self.decoder(self.head(hidden_states))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
        masked_only: bool = False,
        next_sentence_label: torch.Tensor | None = None,
    ) -> ModernMaskedLMOutput:
        """labels (B, T): the original id at masked positions, -100 elsewhere. masked_only:
        the head and decoder run on the labelled positions only (sparse prediction)."""
        out = self.model(
            input_ids,
            attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            output_attentions=output_attentions,
        )
        hidden = out.last_hidden_state
        unpadded = self.config.unpad and attention_mask is not None and not masked_only
        if unpadded and not bool(attention_mask.all()):
            if padding_is_ignored(attention_mask, output_attentions, labels):
                logits, loss = self._predict_real_tokens(hidden, attention_mask.bool(), labels)
                return ModernMaskedLMOutput(loss, logits, out.attentions)
        logits, loss = masked_lm_logits_and_loss(self.predict, hidden, labels, masked_only)
        return ModernMaskedLMOutput(loss, logits, out.attentions)

    def _predict_real_tokens(
        self, hidden: torch.Tensor, real: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Dense logits of an unpadded batch, the head and decoder run on the real tokens only.

        Unpadding leaves zeros at padding positions, so their logits are those of a zero
        vector, computed once: the same (B, T, V) logits as running the head everywhere, for
        less work. The loss reads the real tokens (padding is labelled -100).
        """
        real_logits = self.predict(hidden[real])  # (N, V)
        logits = real_logits.new_empty(*real.shape, real_logits.shape[-1])
        logits[~real] = self.predict(hidden.new_zeros(1, hidden.shape[-1]))
        logits[real] = real_logits
        loss = None
        if labels is not None:
            loss = F.cross_entropy(real_logits, labels[real], ignore_index=-100)
        return logits, loss


class ModernBertForPreTraining(ModernBertForMaskedLM):
    """The masked-LM model plus BERT's next-sentence head (pooler and classifier on [CLS]).

    Only the ladder's first rung uses it: ModernBERT, like RoBERTa, drops NSP.
    """

    hf_class_name = "ModernBertForMaskedLM"  # transformers has no NSP head for ModernBERT
    allowed_missing_prefixes = ("head.", "decoder.bias", "pooler.", "seq_relationship.")

    def __init__(self, config: ModernConfig):
        ModernPreTrainedModel.__init__(self, config)
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
        masked_only: bool = False,
    ) -> ModernPreTrainingOutput:
        out = self.model(
            input_ids,
            attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            output_attentions=output_attentions,
        )
        hidden = out.last_hidden_state
        logits, mlm_loss = masked_lm_logits_and_loss(self.predict, hidden, labels, masked_only)
        nsp_logits = self.seq_relationship(torch.tanh(self.pooler(hidden[:, 0])))
        nsp_loss = None
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits, next_sentence_label.view(-1))
        loss = pretraining_loss(mlm_loss, nsp_loss)
        return ModernPreTrainingOutput(loss, logits, nsp_logits, mlm_loss, nsp_loss, out.attentions)

    @classmethod
    def from_bert(cls, bert_model: nn.Module, **config_overrides: Any):
        """The BERT rung with the weights of a course `BertForPreTraining` (MLM and NSP heads)."""
        config = ModernConfig.from_bert(bert_model.config, **config_overrides)
        model = cls(config)
        model.load_weights(bert_state_dict_to_modern(bert_model.state_dict(), cls))
        return model.eval()


@dataclass
class ModernClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, num_labels)
    attentions: tuple[torch.Tensor, ...] | None = None


class ModernBertForSequenceClassification(ModernPreTrainedModel):
    """Pool ([CLS] or the mean of real tokens), head (dense, act, norm), dropout, classifier."""

    hf_class_name = "ModernBertForSequenceClassification"
    allowed_missing_prefixes = ("head.", "classifier.")

    def __init__(
        self,
        config: ModernConfig,
        num_labels: int = 2,
        id2label: dict[int, str] | None = None,
    ):
        super().__init__(config)
        self.num_labels = num_labels
        self.id2label = dict(id2label) if id2label else {i: f"LABEL_{i}" for i in range(num_labels)}
        self.model = ModernBertModel(config)
        self.head = ModernBertPredictionHead(config)
        self.drop = Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.init_weights()

    def config_extras(self) -> dict[str, Any]:
        return {
            "id2label": {str(k): v for k, v in self.id2label.items()},
            "label2id": {v: k for k, v in self.id2label.items()},
        }

    @classmethod
    def _kwargs_from_config_dict(cls, config_dict: dict[str, Any]) -> dict[str, Any]:
        if (
            "id2label" not in config_dict
            or (config_dict.get("architectures") or [""])[0] != cls.hf_class_name
        ):
            return {}
        id2label = {int(k): v for k, v in config_dict["id2label"].items()}
        return {"num_labels": len(id2label), "id2label": id2label}

    def hf_config_extras(self) -> dict[str, Any]:
        return {"id2label": dict(self.id2label)}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> ModernClassifierOutput:
        out = self.model(
            input_ids,
            attention_mask,
            token_type_ids=token_type_ids,
            output_attentions=output_attentions,
        )
        hidden = out.last_hidden_state
        if self.config.classifier_pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = (
                torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
                if attention_mask is None
                else attention_mask.to(hidden.dtype)
            )
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        logits = self.classifier(self.drop(self.head(pooled)))
        loss = F.cross_entropy(logits, labels.view(-1)) if labels is not None else None
        return ModernClassifierOutput(loss, logits, out.attentions)


# ----------------------------------------------------------------------------
# BERT's weights in the ladder's names
# ----------------------------------------------------------------------------


def bert_state_dict_to_modern(
    state_dict: dict[str, torch.Tensor], cls: type
) -> dict[str, torch.Tensor]:
    """Rename a BERT state dict (course or transformers names) to the ladder's.

    query, key and value stack into Wqkv; BERT's post-attention LayerNorm is
    `attn_norm` and its post-feed-forward LayerNorm `mlp_norm`; the MLM
    head's transform is `head`, the pooler and NSP classifier keep their roles.
    """
    encoder = "model." if cls is not ModernBertModel else ""
    bert = "bert." if any(k.startswith("bert.") for k in state_dict) else ""
    out: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        return state_dict[bert + name]

    emb = "embeddings."
    out[encoder + "embeddings.tok_embeddings.weight"] = take(emb + "word_embeddings.weight")
    out[encoder + "embeddings.position_embeddings.weight"] = take(
        emb + "position_embeddings.weight"
    )
    out[encoder + "embeddings.token_type_embeddings.weight"] = take(
        emb + "token_type_embeddings.weight"
    )
    for part in ("weight", "bias"):
        out[encoder + f"embeddings.norm.{part}"] = take(f"{emb}LayerNorm.{part}")
    layer = 0
    while f"{bert}encoder.layer.{layer}.attention.self.query.weight" in state_dict:
        src, dst = f"encoder.layer.{layer}.", f"{encoder}layers.{layer}."
        for part in ("weight", "bias"):
            out[dst + f"attn.Wqkv.{part}"] = torch.cat(
                [take(src + f"attention.self.{n}.{part}") for n in ("query", "key", "value")]
            )
            out[dst + f"attn.Wo.{part}"] = take(src + f"attention.output.dense.{part}")
            out[dst + f"attn_norm.{part}"] = take(src + f"attention.output.LayerNorm.{part}")
            out[dst + f"mlp.Wi.{part}"] = take(src + f"intermediate.dense.{part}")
            out[dst + f"mlp.Wo.{part}"] = take(src + f"output.dense.{part}")
            out[dst + f"mlp_norm.{part}"] = take(src + f"output.LayerNorm.{part}")
        layer += 1
    if encoder:
        transform = "cls.predictions.transform."
        for part in ("weight", "bias"):
            if transform + f"dense.{part}" in state_dict:
                out[f"head.dense.{part}"] = state_dict[transform + f"dense.{part}"]
                out[f"head.norm.{part}"] = state_dict[transform + f"LayerNorm.{part}"]
        if "cls.predictions.bias" in state_dict:
            out["decoder.bias"] = state_dict["cls.predictions.bias"]
        if cls is ModernBertForPreTraining and "cls.seq_relationship.weight" in state_dict:
            for part in ("weight", "bias"):
                out[f"pooler.{part}"] = state_dict[f"{bert}pooler.dense.{part}"]
                out[f"seq_relationship.{part}"] = state_dict[f"cls.seq_relationship.{part}"]
    return out
