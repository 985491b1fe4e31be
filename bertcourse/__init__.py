"""bertcourse: the helper package of *BERT from Scratch*.

Every class here is written from scratch and tested to give the same
numbers as its `transformers` or `torch` counterpart. The model, its
configuration and its tokenizer import from here; the rest from their modules
(`bertcourse.data`, `bertcourse.training`, `bertcourse.finetune`, ...), and
the commands are `python -m bertcourse <command>` (`bertcourse.commands`).
"""

from .attention import MultiHeadSelfAttention, scaled_dot_product_attention
from .config import SIZES, BertConfig, ConfigError, Profile, get_device, get_profile
from .hf import CheckpointMismatchError, minilm_path
from .model import (
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertModelOutput,
    BertPreTrainedModel,
)
from .tokenization import BertTokenizer

__version__ = "0.1.0"

__all__ = [
    "SIZES",
    "BertConfig",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "BertModelOutput",
    "BertPreTrainedModel",
    "BertTokenizer",
    "CheckpointMismatchError",
    "ConfigError",
    "MultiHeadSelfAttention",
    "Profile",
    "get_device",
    "get_profile",
    "minilm_path",
    "scaled_dot_product_attention",
]
