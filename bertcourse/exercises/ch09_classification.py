"""Chapter 9, classification: the classification head and its loss, a class-weighted loss, macro-F1."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..metrics import classification_report
from ._grading import Case, Mistake, Problem, _run_cases, _unwrap_scalar, _variant

__all__ = [
    "check_classification_head",
    "check_class_weighted_head",
    "check_macro_f1",
]


def _classification_head(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias  # (B, num_labels)
    if labels is None:
        return logits, None
    if weight.shape[0] == 1:  # regression
        return logits, F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return logits, F.cross_entropy(logits, labels)


def _head_problem(expected: Any, answer: Any) -> Problem | None:
    expected_logits, expected_loss = expected
    if not isinstance(answer, tuple) or len(answer) != 2:
        return Problem(
            [f"your function returned a {type(answer).__name__}, not a (logits, loss) tuple"],
            "return two things: the logits and the loss (None when labels is None).",
        )
    logits, loss = answer
    if not isinstance(logits, torch.Tensor) or logits.shape != expected_logits.shape:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        return Problem(
            [f"logits: expected shape {tuple(expected_logits.shape)}, got {shape}"],
            "logits = pooled_output @ weight.T + bias: one score per class, (batch, num_labels).",
        )
    if not torch.allclose(logits.double(), expected_logits.double(), atol=1e-5, rtol=1e-4):
        error = (logits.double() - expected_logits.double()).abs().max().item()
        return Problem([f"logits differ from the expected ones by up to {error:.3g}"])
    if expected_loss is None:
        if loss is not None:
            return Problem(
                ["without labels the loss must be None"],
                "compute a loss only when labels are given (labels=None at prediction time).",
            )
        return None
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        return Problem(
            [f"loss: expected a scalar tensor, got {type(loss).__name__}"],
            "the loss is one number, the mean over the batch.",
        )
    if not torch.allclose(loss.double(), expected_loss.double(), atol=1e-5, rtol=1e-4):
        return Problem(
            [f"loss: expected {expected_loss.item():.6f}, got {loss.item():.6f}"],
            "cross-entropy on the raw logits (F.cross_entropy applies log-softmax itself), the "
            "mean over the batch; with one label, the mean squared error of logits[:, 0].",
        )
    return None


def _head_case(
    description: str,
    seed: int,
    batch: int,
    hidden: int,
    num_labels: int,
    with_labels: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Case:
    """Pooled outputs, a random head, class labels (or float ones for one label), the answer."""
    generator = torch.Generator().manual_seed(seed)
    pooled = torch.randn(batch, hidden, generator=generator, dtype=dtype).tanh()
    weight = torch.randn(num_labels, hidden, generator=generator, dtype=dtype)
    bias = torch.randn(num_labels, generator=generator, dtype=dtype)
    labels = None
    if with_labels:
        labels = (
            torch.rand(batch, generator=generator, dtype=dtype) * 5
            if num_labels == 1
            else torch.randint(num_labels, (batch,), generator=generator)
        )
    args = (pooled, weight, bias, labels)
    return Case(description, args, _classification_head(*args))


_HEAD_MISTAKES = [
    Mistake(
        "the bias is missing: logits = pooled_output @ weight.T + bias.",
        lambda p, w, b, y=None: _classification_head(p, w, torch.zeros_like(b), y),
    ),
    Mistake(
        "softmax applied before F.cross_entropy, which applies log-softmax itself: pass the "
        "raw logits.",
        lambda p, w, b, y=None: (
            p @ w.T + b,
            None if y is None else F.cross_entropy((p @ w.T + b).softmax(-1), y),
        ),
    ),
    Mistake(
        "the loss is summed over the batch; BERT's loss is the mean (reduction='mean').",
        lambda p, w, b, y=None: (
            p @ w.T + b,
            None if y is None else F.cross_entropy(p @ w.T + b, y, reduction="sum"),
        ),
    ),
    Mistake(
        "with num_labels == 1, compare logits[:, 0] (shape (B,)) with the labels: a (B, 1) "
        "minus (B,) broadcasts to (B, B), which averages the wrong differences.",
        lambda p, w, b, y=None: (
            p @ w.T + b,
            None
            if y is None
            else F.mse_loss((p @ w.T + b).expand(-1, len(y)), y.expand(len(y), -1)),
        ),
    ),
]


def check_classification_head(fn: Callable) -> bool:
    """Grade `fn(pooled_output, weight, bias, labels=None)` -> (logits, loss).

    The linear head of BertForSequenceClassification (after the pooler and
    dropout): logits = pooled_output @ weight.T + bias, shape (batch,
    num_labels); the loss is cross-entropy (mean over the batch), or with
    num_labels == 1 the mean squared error of logits[:, 0] against float
    labels (regression); loss None when labels is None.
    """
    cases = [
        _head_case("batch 4, hidden 8, 3 labels", 0, 4, 8, 3),
        _head_case("batch 5, hidden 16, 2 labels, no labels given", 1, 5, 16, 2, with_labels=False),
        _head_case("batch 7, hidden 12, 5 labels, float64", 2, 7, 12, 5, dtype=torch.float64),
        _head_case(
            "regression: batch 6, hidden 8, num_labels 1, float labels in [0, 5]", 3, 6, 8, 1
        ),
        _head_case("batch 1, hidden 4, 4 labels", 4, 1, 4, 4),
    ]
    return _run_cases(
        "check_classification_head",
        fn,
        cases,
        _head_problem,
        _HEAD_MISTAKES,
        "print the shapes: pooled_output (B, H), weight (num_labels, H), logits (B, num_labels).",
    )


def _class_weights(class_counts, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """w_c = N / (C * n_c): 1 for every class of a balanced set, more for the rarer classes."""
    counts = torch.as_tensor(class_counts, dtype=dtype)
    return counts.sum() / (len(counts) * counts)


def _weighted_head(
    pooled_output,
    weight,
    bias,
    labels,
    class_counts,
    *,
    inverse=True,
    divide_by="weights",
    weight_of="label",
    softmax_first=False,
):
    """The reference (default switches) and the learners' mistakes with a class-weighted loss."""
    logits = pooled_output @ weight.T + bias  # (B, C)
    class_weights = _class_weights(class_counts, logits.dtype)
    if not inverse:  # the frequent classes weigh more
        class_weights = 1 / class_weights
    scores = logits.softmax(-1) if softmax_first else logits
    per_example = F.cross_entropy(scores, labels, reduction="none")  # (B,)
    chosen = labels if weight_of == "label" else logits.argmax(-1)
    example_weights = class_weights[chosen]  # (B,)
    total = (example_weights * per_example).sum()
    denominator = example_weights.sum() if divide_by == "weights" else len(labels)
    return logits, total / denominator


def _weighted_head_problem(expected: Any, answer: Any) -> Problem | None:
    problem = _head_problem(expected, answer)
    if problem is not None and (problem.hint or "").startswith("cross-entropy on the raw"):
        problem.hint = (  # the loss has the wrong value: say what this loss is
            "check the weights, w_c = N / (C * n_c), and the weighted mean: the sum over the "
            "batch of w[y_i] * cross-entropy_i, divided by the sum of the w[y_i] (what "
            "F.cross_entropy(..., weight=w) computes)."
        )
    return problem


def _weighted_case(
    description: str,
    seed: int,
    class_counts: Sequence[int],
    batch: int,
    hidden: int = 8,
    dtype: torch.dtype = torch.float32,
) -> Case:
    generator = torch.Generator().manual_seed(seed)
    num_labels = len(class_counts)
    pooled = torch.randn(batch, hidden, generator=generator, dtype=dtype).tanh()
    weight = torch.randn(num_labels, hidden, generator=generator, dtype=dtype)
    bias = torch.randn(num_labels, generator=generator, dtype=dtype)
    labels = torch.randint(num_labels, (batch,), generator=generator)
    args = (pooled, weight, bias, labels, list(class_counts))
    return Case(description, args, _weighted_head(*args))


def _weighted_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "class_counts is not used: multiply each example's cross-entropy by the weight "
            "of its class, w[y_i] = N / (C * n[y_i]).",
            lambda p, w, b, y, counts: _classification_head(p, w, b, y),
        ),
        _variant(
            "the weights are upside down: a class's weight is N / (C * n_c), larger for the "
            "*rarer* classes, so that every class counts as much in the loss.",
            _weighted_head,
            inverse=False,
        ),
        _variant(
            "divide by the sum of the weights of the batch's labels, not by the batch size: "
            "the weighted mean (F.cross_entropy(..., weight=w) does the same).",
            _weighted_head,
            divide_by="batch",
        ),
        _variant(
            "weigh each example by the weight of its *true* class, w[labels], not of the "
            "class the model predicts.",
            _weighted_head,
            weight_of="prediction",
        ),
        _variant(
            "softmax applied before the cross-entropy, which applies log-softmax itself: "
            "pass the raw logits.",
            _weighted_head,
            softmax_first=True,
        ),
        Mistake(
            "the bias is missing: logits = pooled_output @ weight.T + bias.",
            lambda p, w, b, y, counts: _weighted_head(p, w, torch.zeros_like(b), y, counts),
        ),
    ]


def check_class_weighted_head(fn: Callable) -> bool:
    """Grade `fn(pooled_output, weight, bias, labels, class_counts)` -> (logits, loss).

    logits = pooled_output @ weight.T + bias, shape (batch, num_labels);
    class_counts[c] is how many training examples class c has (N in all,
    C classes), and the weight of class c is w_c = N / (C * n_c). The loss
    is the weighted mean of the examples' cross-entropies,
    sum_i w[y_i] * CE_i / sum_i w[y_i], which is what
    F.cross_entropy(logits, labels, weight=w) computes.
    """
    cases = [
        _weighted_case("balanced counts [10, 10, 10]: every weight is 1", 0, [10, 10, 10], 6),
        _weighted_case("counts [60, 30, 10], batch 8", 1, [60, 30, 10], 8),
        _weighted_case("counts [5, 200], batch 5", 2, [5, 200], 5),
        _weighted_case(
            "5 classes, counts [550, 180, 400, 220, 300], batch 16, float64",
            3,
            [550, 180, 400, 220, 300],
            16,
            hidden=12,
            dtype=torch.float64,
        ),
        _weighted_case("batch 1, counts [3, 1, 7, 2]", 4, [3, 1, 7, 2], 1),
    ]
    return _run_cases(
        "check_class_weighted_head",
        fn,
        cases,
        _weighted_head_problem,
        _weighted_mistakes(),
        "print the weights of case 2 and each example's weight before the mean.",
    )


def _report(labels: Sequence[int], predictions: Sequence[int], num_labels: int) -> dict[str, Any]:
    """`bertcourse.metrics.classification_report` with the classes named 0 .. num_labels - 1."""
    return classification_report(
        list(labels), list(predictions), [str(i) for i in range(num_labels)]
    )


def _macro_f1(labels: Sequence[int], predictions: Sequence[int], num_labels: int) -> float:
    return _report(labels, predictions, num_labels)["macro_f1"]


def _macro_f1_problem(expected: float, answer: Any) -> Problem | None:
    answer = _unwrap_scalar(answer)
    if not isinstance(answer, (int, float)) or isinstance(answer, bool):
        return Problem(
            [f"your function returned a {type(answer).__name__}, not a number"],
            "return the macro-F1 as one float in [0, 1].",
        )
    if not math.isfinite(answer):
        return Problem(
            [f"expected {expected:.6f}, got {answer}"],
            "a class never predicted has precision 0/0: count it as 0, as scikit-learn "
            "does, instead of dividing by zero.",
            nonfinite=True,
        )
    if abs(answer - expected) > 1e-9:
        return Problem([f"expected {expected:.6f}, got {answer:.6f}"])
    return None


def check_macro_f1(fn: Callable) -> bool:
    """Grade `fn(labels, predictions, num_labels)` -> macro-F1 (a float).

    The unweighted mean of the per-class F1 over the classes that occur in
    `labels` (as bertcourse.metrics.classification_report); a class's
    precision or recall with a zero denominator is 0 (scikit-learn's rule).
    """

    def case(description, labels, predictions, num_labels):
        return Case(
            description,
            (labels, predictions, num_labels),
            _macro_f1(labels, predictions, num_labels),
        )

    generator = torch.Generator().manual_seed(0)
    many_labels = torch.randint(4, (200,), generator=generator).tolist()
    noisy = [y if torch.rand(1, generator=generator).item() < 0.6 else 0 for y in many_labels]
    cases = [
        case("3 classes, 8 examples", [0, 0, 1, 1, 2, 2, 2, 0], [0, 1, 1, 1, 2, 0, 2, 0], 3),
        case("unbalanced: 9 of class 0, 1 of class 1, all predicted 0", [0] * 9 + [1], [0] * 10, 2),
        case("200 examples, 4 classes, many predicted 0", many_labels, noisy, 4),
        case("class 2 of 3 never occurs and is never predicted", [0, 1, 1, 0], [0, 1, 0, 0], 3),
        case("class 2 never occurs but is predicted once", [0, 1, 1, 0, 1], [0, 1, 2, 0, 0], 3),
    ]

    def per_class(labels, predictions, num_labels):
        """(precision, recall, F1, support) of each class, in class order."""
        scores = _report(labels, predictions, num_labels)["per_class"].values()
        return [(c["precision"], c["recall"], c["f1"], c["support"]) for c in scores]

    mistakes = [
        Mistake(
            "this is the accuracy (micro-F1 in single-label classification); macro-F1 is "
            "the mean of the per-class F1 scores.",
            lambda y, p, k: sum(a == b for a, b in zip(y, p, strict=True)) / len(y),
        ),
        Mistake(
            "this is the support-weighted mean of the F1 scores; macro-F1 gives every class "
            "the same weight.",
            lambda y, p, k: sum(f * n for _, _, f, n in per_class(y, p, k)) / len(y),
        ),
        Mistake(
            "average only over the classes that occur in labels, not over all num_labels.",
            lambda y, p, k: sum(f for *_, f, _ in per_class(y, p, k)) / k,
        ),
        Mistake(
            "F1 is the harmonic mean 2PR/(P+R), not the arithmetic mean (P+R)/2.",
            lambda y, p, k: (
                sum((pr + r) / 2 for pr, r, _, n in per_class(y, p, k) if n)
                / sum(1 for *_, n in per_class(y, p, k) if n)
            ),
        ),
        Mistake(
            "this is the mean F1 of the predicted classes: average over the classes in labels.",
            lambda y, p, k: sum(per_class(y, p, k)[c][2] for c in set(p)) / len(set(p)),
        ),
    ]
    return _run_cases(
        "check_macro_f1",
        fn,
        cases,
        _macro_f1_problem,
        mistakes,
        "compute precision, recall and F1 of each class by hand for case 1.",
    )
