"""Chapter 9: the classification-head, class-weighted-head and macro-F1 checkers, their solutions
and planted bugs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from planted import PlantedBugs

from bertcourse.exercises import (
    check_class_weighted_head,
    check_classification_head,
    check_macro_f1,
)
from bertcourse.metrics import classification_report


def classification_head(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias
    if labels is None:
        return logits, None
    if logits.shape[-1] == 1:
        return logits, F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return logits, F.cross_entropy(logits, labels)


def classification_head_as_module(pooled_output, weight, bias, labels=None):
    """Another correct answer: an nn.Linear holding the weights, and the losses as modules."""
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
    linear.weight.data, linear.bias.data = weight, bias
    logits = linear(pooled_output)
    if labels is None:
        return logits, None
    if weight.shape[0] == 1:
        return logits, torch.nn.MSELoss()(logits.view(-1), labels.view(-1).to(logits.dtype))
    return logits, torch.nn.CrossEntropyLoss()(logits, labels)


def head_without_bias(pooled_output, weight, bias, labels=None):
    return classification_head(pooled_output, weight, torch.zeros_like(bias), labels)


def head_softmax_then_cross_entropy(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias
    if labels is None:
        return logits, None
    if logits.shape[-1] == 1:
        return logits, F.mse_loss(logits.squeeze(-1), labels)
    return logits, F.cross_entropy(logits.softmax(-1), labels)


def head_summed_loss(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias
    if labels is None:
        return logits, None
    if logits.shape[-1] == 1:
        return logits, F.mse_loss(logits.squeeze(-1), labels, reduction="sum")
    return logits, F.cross_entropy(logits, labels, reduction="sum")


def head_regression_broadcast(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias
    if labels is None:
        return logits, None
    if logits.shape[-1] == 1:
        return logits, ((logits - labels) ** 2).mean()  # (B, 1) - (B,) -> (B, B)
    return logits, F.cross_entropy(logits, labels)


def head_loss_always(pooled_output, weight, bias, labels=None):
    logits = pooled_output @ weight.T + bias
    if labels is None:
        labels = logits.argmax(-1)
    return logits, F.cross_entropy(logits, labels)


def head_weight_not_transposed(pooled_output, weight, bias, labels=None):
    return classification_head(pooled_output, weight.reshape(weight.shape[1], -1).T, bias, labels)


HEAD_BUGS = [
    (head_without_bias, "bias is missing"),
    (head_softmax_then_cross_entropy, "raw logits"),
    (head_summed_loss, "mean"),
    (head_regression_broadcast, "broadcasts"),
    (head_loss_always, "must be None"),
    (head_weight_not_transposed, "logits differ"),
]


def class_weighted_head(pooled_output, weight, bias, labels, class_counts):
    """The chapter's solution: each example weighed by its class's N / (C * n_c), weighted mean."""
    logits = pooled_output @ weight.T + bias
    counts = torch.as_tensor(class_counts, dtype=logits.dtype)
    class_weights = counts.sum() / (len(counts) * counts)
    losses = F.cross_entropy(logits, labels, reduction="none")
    example_weights = class_weights[labels]
    return logits, (example_weights * losses).sum() / example_weights.sum()


def class_weighted_head_by_torch(pooled_output, weight, bias, labels, class_counts):
    """Another correct answer: F.cross_entropy's weight argument, with weights 1 / n_c."""
    logits = pooled_output @ weight.T + bias
    class_weights = 1 / torch.tensor(class_counts, dtype=logits.dtype)  # the scale cancels
    return logits, F.cross_entropy(logits, labels, weight=class_weights)


def weighted_head_unweighted(pooled_output, weight, bias, labels, class_counts):
    return classification_head(pooled_output, weight, bias, labels)


def weighted_head_frequent_classes_heavier(pooled_output, weight, bias, labels, class_counts):
    logits = pooled_output @ weight.T + bias
    class_weights = torch.tensor(class_counts, dtype=logits.dtype)
    return logits, F.cross_entropy(logits, labels, weight=class_weights)


def weighted_head_mean_over_batch(pooled_output, weight, bias, labels, class_counts):
    logits = pooled_output @ weight.T + bias
    counts = torch.tensor(class_counts, dtype=logits.dtype)
    class_weights = counts.sum() / (len(counts) * counts)
    losses = F.cross_entropy(logits, labels, reduction="none")
    return logits, (class_weights[labels] * losses).mean()


def weighted_head_by_prediction(pooled_output, weight, bias, labels, class_counts):
    logits = pooled_output @ weight.T + bias
    counts = torch.tensor(class_counts, dtype=logits.dtype)
    example_weights = (counts.sum() / (len(counts) * counts))[logits.argmax(-1)]
    losses = F.cross_entropy(logits, labels, reduction="none")
    return logits, (example_weights * losses).sum() / example_weights.sum()


def weighted_head_softmax_first(pooled_output, weight, bias, labels, class_counts):
    logits = pooled_output @ weight.T + bias
    class_weights = 1 / torch.tensor(class_counts, dtype=logits.dtype)
    return logits, F.cross_entropy(logits.softmax(-1), labels, weight=class_weights)


def weighted_head_without_bias(pooled_output, weight, bias, labels, class_counts):
    return class_weighted_head(pooled_output, weight, torch.zeros_like(bias), labels, class_counts)


def weighted_head_loss_per_example(pooled_output, weight, bias, labels, class_counts):
    logits = pooled_output @ weight.T + bias
    class_weights = 1 / torch.tensor(class_counts, dtype=logits.dtype)
    return logits, F.cross_entropy(logits, labels, weight=class_weights, reduction="none")


WEIGHTED_HEAD_BUGS = [
    (weighted_head_unweighted, "class_counts is not used"),
    (weighted_head_frequent_classes_heavier, "upside down"),
    (weighted_head_mean_over_batch, "sum of the weights"),
    (weighted_head_by_prediction, "*true* class"),
    (weighted_head_softmax_first, "raw logits"),
    (weighted_head_without_bias, "bias is missing"),
    (weighted_head_loss_per_example, "one number"),
]


def macro_f1(labels, predictions, num_labels):
    f1_scores = []
    for c in range(num_labels):
        true_positives = sum(y == p == c for y, p in zip(labels, predictions, strict=True))
        predicted = sum(p == c for p in predictions)
        actual = sum(y == c for y in labels)
        if actual == 0:
            continue
        precision = true_positives / predicted if predicted else 0.0
        recall = true_positives / actual
        f1_scores.append(2 * precision * recall / (precision + recall) if true_positives else 0.0)
    return sum(f1_scores) / len(f1_scores)


def macro_f1_by_report(labels, predictions, num_labels):
    names = [str(i) for i in range(num_labels)]
    return classification_report(list(labels), list(predictions), names)["macro_f1"]


def macro_f1_is_accuracy(labels, predictions, num_labels):
    return sum(y == p for y, p in zip(labels, predictions, strict=True)) / len(labels)


def macro_f1_weighted(labels, predictions, num_labels):
    names = [str(i) for i in range(num_labels)]
    per_class = classification_report(list(labels), list(predictions), names)["per_class"]
    return sum(c["f1"] * c["support"] for c in per_class.values()) / len(labels)


def macro_f1_over_all_classes(labels, predictions, num_labels):
    present = len(set(labels))
    return macro_f1(labels, predictions, num_labels) * present / num_labels


def macro_f1_arithmetic_mean(labels, predictions, num_labels):
    scores = []
    for c in sorted(set(labels)):
        tp = sum(y == p == c for y, p in zip(labels, predictions, strict=True))
        predicted = sum(p == c for p in predictions)
        precision = tp / predicted if predicted else 0.0
        scores.append((precision + tp / sum(y == c for y in labels)) / 2)
    return sum(scores) / len(scores)


def macro_f1_divides_by_zero(labels, predictions, num_labels):
    scores = []
    for c in sorted(set(labels)):
        tp = sum(y == p == c for y, p in zip(labels, predictions, strict=True))
        precision = tp / sum(p == c for p in predictions)
        recall = tp / sum(y == c for y in labels)
        scores.append(2 * precision * recall / (precision + recall) if tp else 0.0)
    return sum(scores) / len(scores)


MACRO_F1_BUGS = [
    (macro_f1_is_accuracy, "accuracy"),
    (macro_f1_weighted, "support-weighted"),
    (macro_f1_over_all_classes, "classes that occur in labels"),
    (macro_f1_arithmetic_mean, "harmonic mean"),
    (macro_f1_divides_by_zero, "ZeroDivisionError"),
]


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_classification_head: (classification_head, HEAD_BUGS),
    check_class_weighted_head: (class_weighted_head, WEIGHTED_HEAD_BUGS),
    check_macro_f1: (macro_f1, MACRO_F1_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize(
    ("checker", "solution"),
    [
        (check_classification_head, classification_head),
        (check_classification_head, classification_head_as_module),
        (check_class_weighted_head, class_weighted_head),
        (check_class_weighted_head, class_weighted_head_by_torch),
        (check_macro_f1, macro_f1),
        (check_macro_f1, macro_f1_by_report),
    ],
    ids=lambda f: f.__name__,
)
def test_chapter_09_checkers_pass_correct_solutions(checker, solution, capsys):
    assert checker(solution) is True
    assert capsys.readouterr().out.strip() == f"✓ {checker.__name__}: all 5 cases passed"
