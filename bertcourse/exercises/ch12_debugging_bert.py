"""Debugging BERT: four broken models to diagnose, and a repair to write.

`broken_model("A", reference)` gives our BertForMaskedLM with the weights of
`reference` and one bug planted in the code it runs; "A" to "D" are four
different bugs. `grade_diagnosis("A", answer)` grades a diagnosis: where the
bug first shows (a module name, as `bertcourse.parity` reports it) and what
it is (a key of DIAGNOSES). `check_post_ln_layer` grades a repair: BERT's
encoder layer written from its parts.

The planted bugs are at the end of this module: reading them spoils the
exercises.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..attention import MultiHeadSelfAttention
from ..config import BertConfig
from ..model import BertForMaskedLM, BertLayer, MaskedLMOutput
from ._grading import (
    Case,
    ExerciseFailed,
    Mistake,
    _learners_answer,
    _random,
    _real_tokens,
    _run_cases,
    _tensor_comparison,
)

# The checker of a function the reader writes (graded like every chapter's checkers). The
# broken models and the grading of a diagnosis (an answer, not a function) are imported from
# this module by name: `from bertcourse.exercises.ch12_debugging_bert import broken_model`.
__all__ = ["check_post_ln_layer"]

# What could be wrong, by key: the reader answers with a key.
DIAGNOSES = {
    "positions": "the position ids are shifted by one position",
    "segments": "the segment (token type) ids are ignored",
    "mask": "the attention mask is ignored: real tokens attend to padding",
    "scale": "the attention scores are not scaled by 1/sqrt(d_k)",
    "softmax": "the attention softmax normalises over the queries instead of the keys",
    "gelu": "the feed-forward uses the tanh approximation of GELU",
    "pre-ln": "LayerNorm comes before each sublayer (pre-LN) instead of after the residual sum",
    "labels": "the masked-LM labels are shifted by one position",
    "loss-sum": "the masked-LM loss is summed over the masked tokens instead of averaged",
}

# What each diagnosis would look like through the parity tools: the hint for a wrong answer.
_SIGNATURES = {
    "positions": "embeddings.position_embeddings would be the first module to differ",
    "segments": (
        "embeddings.token_type_embeddings would be the first module to differ, and only on a "
        "batch whose segment ids are not all 0"
    ),
    "mask": (
        "a batch without any padding would agree everywhere: only rows with padding could differ"
    ),
    "scale": (
        "the attention probabilities (output_attentions=True) would still sum to 1 over the "
        "keys, but be sharper or flatter than the reference's, with or without padding"
    ),
    "softmax": (
        "the attention probabilities of a query (output_attentions=True) would no longer sum "
        "to 1 over the keys"
    ),
    "gelu": (
        "intermediate.dense would agree and intermediate (the activation) would be the first "
        "to differ"
    ),
    "pre-ln": (
        "a LayerNorm would differ first, and the report would say the modules ran in another "
        "order than in the reference"
    ),
    "labels": (
        "every module would agree and only the loss differ, and the cross-entropy of the "
        "logits at position t against the labels at position t + 1 would give the broken loss"
    ),
    "loss-sum": (
        "every module would agree and only the loss differ, by a factor equal to the number of "
        "masked tokens (labels != -100)"
    ),
}


def _strip_prefix(name: str) -> str:
    """Module names with or without the encoder's "bert." prefix mean the same module."""
    return name.removeprefix("bert.")


# model -> (the first module whose output differs on a padded batch with labels, the bug)
BROKEN_MODELS = ("A", "B", "C", "D")
_TRUTH = {
    "A": ("encoder.layer.0.attention.self", "mask"),
    "B": ("encoder.layer.0.attention.output.LayerNorm", "pre-ln"),
    "C": ("encoder.layer.0.attention.self", "scale"),
    "D": ("loss", "labels"),
}


def grade_diagnosis(model: str, answer: Any) -> bool:
    """Grade a diagnosis of `broken_model(model, ...)`.

    answer: a function that returns (module, key), or the pair itself.
    module: the name of the first module whose output differs from the
    reference's, as `compare_modules` names it on a padded batch with MLM
    labels ("bert.encoder...", with or without the "bert." prefix; "loss"
    if only the loss differs). key: one of DIAGNOSES.
    """
    check_name = "grade_diagnosis"
    if model not in _TRUTH:
        raise ExerciseFailed(
            f"✗ {check_name}: there is no broken model {model!r}; the models are "
            f"{', '.join(BROKEN_MODELS)}."
        )
    where = f"model {model}"
    if callable(answer):
        name = getattr(answer, "__name__", "your function")
        answer = _learners_answer(check_name, where, name, answer)
    problem, hint = _diagnosis_problem(model, answer)
    if problem:
        raise ExerciseFailed(f"✗ {check_name}: {where}\n  {problem}\nHINT: {hint}")
    print(f"✓ {check_name}: model {model}: {DIAGNOSES[_TRUTH[model][1]]}")
    return True


def _diagnosis_problem(model: str, answer: Any) -> tuple[str, str]:
    """("", "") for a right answer, else (what is wrong, a hint)."""
    true_module, true_key = _TRUTH[model]
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        return (
            f"expected a pair (module, diagnosis), got {type(answer).__name__}",
            "return two strings, e.g. ('bert.embeddings.LayerNorm', 'positions').",
        )
    module, key = answer
    if module is None or hasattr(module, "name"):  # a ModuleDifference, or no divergence found
        module = getattr(module, "name", None)
    if key not in DIAGNOSES:
        return (
            f"{key!r} is not one of the diagnoses",
            f"answer with one of the keys of DIAGNOSES: {', '.join(DIAGNOSES)}.",
        )
    if module is None or _strip_prefix(str(module)) != true_module:
        return f"{module!r} is not the first module whose output differs", _module_hint(
            model, module
        )
    if key != true_key:
        return (
            f"right module, but not '{key}' ({DIAGNOSES[key]})",
            f"if that were the bug, {_SIGNATURES[key]}. Test that on model {model}.",
        )
    return "", ""


def _module_hint(model: str, module: str | None) -> str:
    true_module, _ = _TRUTH[model]
    if module is None:
        return (
            f"model {model} does differ from the reference: compare on a batch with padding "
            "and MLM labels, and look at every row of the report, the loss included."
        )
    if true_module == "loss":
        return (
            "that module's output agrees with the reference's: find the first row of the "
            "report beyond tolerance, the whole model's outputs included."
        )
    if _strip_prefix(module) == "encoder.layer.0.attention.self.query" and model == "B":
        return (
            "the report lists modules in the order the broken model ran them, which need not "
            "be the reference's order: take the first row it marks."
        )
    return (
        f"run first_divergence(model_{model.lower()}, reference, ...) on a batch with padding "
        "and MLM labels, and return the name of the row it finds."
    )


# ----------------------------------------------------------------------------
# The repair: BERT's post-LN encoder layer, written from the layer's parts
# ----------------------------------------------------------------------------


def _post_ln_layer(layer, hidden_states, attention_mask=None):
    return BertLayer.forward(layer, hidden_states, attention_mask)[0]


def _layer_variant(
    layer,
    hidden_states,
    attention_mask=None,
    *,
    pre_ln=False,
    attention_residual=True,
    norm_after_residual=True,
    ffn_residual_from_input=False,
    use_mask=True,
):
    """The post-LN layer, or a classic mistake in it (each switch plants one)."""
    attention, output = layer.attention, layer.output
    mask = attention_mask if use_mask else None
    if pre_ln:
        context, _ = attention.self(attention.output.LayerNorm(hidden_states), mask)
        hidden = hidden_states + attention.output.dense(context)
        return hidden + output.dense(layer.intermediate(output.LayerNorm(hidden)))
    context, _ = attention.self(hidden_states, mask)
    projected = attention.output.dense(context)
    if not attention_residual:
        attended = attention.output.LayerNorm(projected)
    elif norm_after_residual:
        attended = attention.output.LayerNorm(projected + hidden_states)
    else:
        attended = attention.output.LayerNorm(projected) + hidden_states
    residual = hidden_states if ffn_residual_from_input else attended
    return output.LayerNorm(output.dense(layer.intermediate(attended)) + residual)


def _variant_of(**switches) -> Callable:
    def variant(layer, hidden_states, attention_mask=None):
        return _layer_variant(layer, hidden_states, attention_mask, **switches)

    return variant


_LAYER_MISTAKES = [
    Mistake(
        "that is still the pre-LN layer of model B: in BERT each LayerNorm comes after its "
        "sublayer's residual sum, LayerNorm(x + sublayer(x)).",
        _variant_of(pre_ln=True),
    ),
    Mistake(
        "the attention block needs its residual: attention.output.LayerNorm normalises "
        "dense(context) + hidden_states.",
        _variant_of(attention_residual=False),
    ),
    Mistake(
        "LayerNorm comes after the residual sum (post-LN): LayerNorm(dense(context) + x), "
        "not LayerNorm(dense(context)) + x.",
        _variant_of(norm_after_residual=False),
    ),
    Mistake(
        "the feed-forward's residual is the attention block's output, not the layer's input.",
        _variant_of(ffn_residual_from_input=True),
    ),
    Mistake(
        "padding changes your output: pass attention_mask on to layer.attention.self.",
        _variant_of(use_mask=False),
    ),
]


def _layer_cases() -> list[Case]:
    """Small random layers in eval mode: with and without padding, 1 to 4 heads, float64."""
    g = torch.Generator().manual_seed(41)
    cases = []
    for description, heads, hidden, lengths, length, dtype in [
        ("batch 2, length 6, hidden 16, 2 heads, padding", 2, 16, [6, 3], 6, torch.float32),
        ("batch 1, length 5, hidden 12, 3 heads, no mask", 3, 12, [5], 5, torch.float32),
        ("batch 3, length 7, hidden 8, 1 head, padding", 1, 8, [7, 2, 5], 7, torch.float32),
        (
            "float64, batch 2, length 4, hidden 16, 4 heads, padding",
            4,
            16,
            [4, 1],
            4,
            torch.float64,
        ),
    ]:
        config = BertConfig(
            vocab_size=50,
            hidden_size=hidden,
            num_hidden_layers=1,
            num_attention_heads=heads,
            intermediate_size=2 * hidden + 3,
            attn_implementation="eager",
        )
        with torch.random.fork_rng():
            torch.manual_seed(len(cases))
            layer = BertLayer(config).to(dtype).eval()
            with torch.no_grad():  # random LayerNorm parameters, so no part of them can be skipped
                for norm in (layer.attention.output.LayerNorm, layer.output.LayerNorm):
                    norm.weight.normal_(1.0, 0.2)
                    norm.bias.normal_(0.0, 0.2)
        hidden_states = _random(g, len(lengths), length, hidden, dtype=dtype)
        mask = None
        if description.endswith("padding"):
            real = _real_tokens(lengths, length)
            mask = torch.zeros(len(lengths), 1, 1, length, dtype=dtype).masked_fill(
                ~real[:, None, None, :], torch.finfo(dtype).min
            )  # (B, 1, 1, T): the additive mask BertModel builds
        with torch.no_grad():
            expected = _post_ln_layer(layer, hidden_states, mask)
        cases.append(Case(description, (layer, hidden_states, mask), expected))
    return cases


def check_post_ln_layer(fn: Callable) -> bool:
    """Grade `fn(layer, hidden_states, attention_mask)` -> (B, T, H): BERT's encoder layer.

    layer: a bertcourse BertLayer, whose parts (layer.attention.self,
    layer.attention.output.dense and .LayerNorm, layer.intermediate,
    layer.output.dense and .LayerNorm) the function calls in BERT's order;
    hidden_states: (B, T, H); attention_mask: the additive (B, 1, 1, T) mask
    the encoder passes to its layers, or None. Dropout is off (eval mode).
    """
    return _run_cases(
        "check_post_ln_layer",
        fn,
        _layer_cases(),
        _tensor_comparison("layer output"),
        _LAYER_MISTAKES,
    )


def with_layer_function(model: BertForMaskedLM, layer_function: Callable) -> BertForMaskedLM:
    """A copy of `model` whose encoder layers run `layer_function(layer, hidden_states, mask)`."""
    repaired = copy.deepcopy(model)
    for layer in repaired.bert.encoder.layer:
        layer.forward = types.MethodType(_calling(layer_function), layer)
    return repaired


def _calling(layer_function: Callable) -> Callable:
    def forward(
        layer, hidden_states, attention_mask=None, *, output_attentions=False, packing=None
    ):
        if output_attentions or packing is not None:
            raise ValueError(
                "a layer function returns no attention probabilities and runs on padded "
                "batches: call the model without output_attentions and masked_only."
            )
        return layer_function(layer, hidden_states, attention_mask), None

    return forward


# ----------------------------------------------------------------------------
# The broken models (spoilers below)
# ----------------------------------------------------------------------------


def broken_model(name: str, source: Any) -> BertForMaskedLM:
    """Our BertForMaskedLM with the weights of `source` and one bug planted in its code.

    name: "A", "B", "C" or "D", four different bugs. source: our own
    BertForMaskedLM (copied, not changed), or a `transformers` BertForMaskedLM
    (or anything `BertForMaskedLM.from_hf` accepts) whose weights are copied
    into ours. The weights are an exact copy; only the computation is wrong.
    """
    if name not in _PLANT:
        raise ValueError(f"no broken model {name!r}: choose one of {', '.join(BROKEN_MODELS)}.")
    if isinstance(source, BertForMaskedLM):
        model = copy.deepcopy(source)
    else:
        model = BertForMaskedLM.from_hf(source)
    _PLANT[name](model)
    return model.eval()


def _replace_forward(module: torch.nn.Module, forward: Callable) -> None:
    module.forward = types.MethodType(forward, module)


def _plant_a(model: BertForMaskedLM) -> None:
    for layer in model.bert.encoder.layer:
        _replace_forward(layer.attention.self, _self_attention_a)


def _self_attention_a(self, hidden_states, attention_mask=None, **options):
    return MultiHeadSelfAttention.forward(self, hidden_states, None, **options)


def _plant_b(model: BertForMaskedLM) -> None:
    for layer in model.bert.encoder.layer:
        _replace_forward(layer, _layer_b)


def _layer_b(self, hidden_states, attention_mask=None, *, output_attentions=False, packing=None):
    attention, output = self.attention, self.output
    normalized = attention.output.LayerNorm(hidden_states)
    context, attention_probs = attention.self(
        normalized, attention_mask, output_attentions=output_attentions, packing=packing
    )
    hidden_states = hidden_states + attention.output.dropout(attention.output.dense(context))
    normalized = output.LayerNorm(hidden_states)
    feed_forward = output.dropout(output.dense(self.intermediate(normalized)))
    return hidden_states + feed_forward, attention_probs


def _plant_c(model: BertForMaskedLM) -> None:
    for layer in model.bert.encoder.layer:
        _replace_forward(layer.attention.self, _self_attention_c)


def _self_attention_c(
    self, hidden_states, attention_mask=None, *, output_attentions=False, packing=None
):
    query, key, value = (
        self.query(hidden_states),
        self.key(hidden_states),
        self.value(hidden_states),
    )
    if packing is not None:
        query, key, value = packing.unpack(query), packing.unpack(key), packing.unpack(value)
    query, key, value = self.split_heads(query), self.split_heads(key), self.split_heads(value)
    scores = query @ key.transpose(-2, -1) / self.attention_head_size  # (B, nh, T, T)
    if attention_mask is not None:
        scores = scores + attention_mask
    attention_probs = F.dropout(scores.softmax(dim=-1), self.dropout_prob, self.training)
    context = self.merge_heads(attention_probs @ value)  # (B, T, H)
    if packing is not None:
        context = packing.pack(context)
    return context, attention_probs if output_attentions else None


def _plant_d(model: BertForMaskedLM) -> None:
    _replace_forward(model, _masked_lm_d)


def _masked_lm_d(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    *,
    labels=None,
    output_attentions=False,
    masked_only=False,
):
    out = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions)
    logits = self.cls.predictions(out.last_hidden_state)  # (B, T, V)
    loss = None
    if labels is not None:
        predictions = logits[:, :-1].reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(predictions, labels[:, 1:].reshape(-1), ignore_index=-100)
    return MaskedLMOutput(loss, logits, out.attentions)


_PLANT = {"A": _plant_a, "B": _plant_b, "C": _plant_c, "D": _plant_d}
