"""Checkers for the coding exercises: they grade a learner's function like a teaching assistant.

A bare `assert` tells a learner *that* something is wrong. A checker tells
them *where* and *probably why*: it runs their function on a series of
seeded cases (random shapes, padding masks, a single token, a fully padded
row, odd head counts, float64), compares each answer with the package's
reference, and stops at the first case that fails with

* the case ("case 3 of 8: batch 2, 3 heads, length 6, with padding"),
* what was expected and what came back (both shapes, or the largest error
  and where it is),
* a HINT. To find it, the checker replays the mistakes learners commonly
  make (unscaled scores, mask ignored, softmax over the wrong axis, ...) on
  the same input; if one of them reproduces the learner's answer, its hint
  is the diagnosis. Otherwise a hint from the symptom (NaN, rows that do not
  sum to 1, ...).

On success a checker prints one line, "✓ check_attention: all 8 cases
passed", and returns True. On failure it raises `ExerciseFailed`, an
`AssertionError` (so nbval and pytest fail as usual) whose
`_render_traceback_` makes Jupyter show the message instead of a traceback.

`checking` gives the same behaviour to an exercise's own asserts:

    with checking("attention_without_head"):
        assert ...

Each chapter's checkers live in a module of their own, named after the
chapter's notebook (`ch02_attention` for `02_attention.ipynb`); the
machinery they share is in `_grading`.
"""

from ._grading import ExerciseFailed, checking
from .ch01_tokenization import check_wordpiece
from .ch02_attention import (
    check_attention,
    check_blockwise_attention,
    check_causal_attention,
    check_local_attention_mask,
    check_softmax,
)
from .ch03_multihead_attention import (
    check_merge_heads,
    check_multi_head_attention,
    check_split_heads,
    check_split_qkv,
)
from .ch04_encoder import (
    check_gelu,
    check_gelu_derivative,
    check_layer_norm,
    check_parameter_count,
)
from .ch05_real_weights import check_attention_entropy, check_max_pooling
from .ch06_masked_lm import check_mask_tokens, check_whole_word_mask
from .ch07_next_sentence import check_hard_nsp_pairs, check_nsp_pairs
from .ch08_pretraining_run import check_parameter_groups, check_warmup_schedule
from .ch09_classification import (
    check_class_weighted_head,
    check_classification_head,
    check_macro_f1,
)
from .ch10_sentence_pairs import check_pair_encoding, check_segment_ids
from .ch11_ner_and_qa import (
    check_align_every_subword,
    check_align_labels,
    check_answer_or_null,
    check_best_span,
)
from .ch12_debugging_bert import check_post_ln_layer
from .ch13_embeddings_and_search import (
    check_in_batch_loss,
    check_mean_pooling,
    check_recall_at_k,
)
from .ch14_modern_bert import check_geglu, check_rotary, check_sliding_window_mask
from .ch15_looking_inside import (
    check_attention_rollout,
    check_control_labels,
    check_integrated_gradients,
)
from .ch16_robustness import check_attack_metrics, check_typos
from .ch17_making_bert_fast import check_arithmetic_intensity, check_padding_fraction
from .ch18_smaller_models import check_distillation_loss, check_int8_quantize

__all__ = [
    "ExerciseFailed",
    "checking",
    "check_wordpiece",
    "check_attention",
    "check_causal_attention",
    "check_local_attention_mask",
    "check_softmax",
    "check_blockwise_attention",
    "check_split_heads",
    "check_merge_heads",
    "check_split_qkv",
    "check_multi_head_attention",
    "check_parameter_count",
    "check_layer_norm",
    "check_gelu",
    "check_gelu_derivative",
    "check_max_pooling",
    "check_attention_entropy",
    "check_mask_tokens",
    "check_whole_word_mask",
    "check_nsp_pairs",
    "check_hard_nsp_pairs",
    "check_parameter_groups",
    "check_warmup_schedule",
    "check_classification_head",
    "check_class_weighted_head",
    "check_macro_f1",
    "check_pair_encoding",
    "check_segment_ids",
    "check_align_labels",
    "check_align_every_subword",
    "check_best_span",
    "check_answer_or_null",
    "check_post_ln_layer",
    "check_mean_pooling",
    "check_in_batch_loss",
    "check_recall_at_k",
    "check_rotary",
    "check_geglu",
    "check_sliding_window_mask",
    "check_attention_rollout",
    "check_integrated_gradients",
    "check_control_labels",
    "check_attack_metrics",
    "check_typos",
    "check_arithmetic_intensity",
    "check_padding_fraction",
    "check_distillation_loss",
    "check_int8_quantize",
]
