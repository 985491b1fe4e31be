"""Evaluation metrics for fine-tuning, written here: classification, entities (NER), SQuAD.

Each is the standard definition, checked in tests against a reference
implementation (scikit-learn, seqeval) or the official SQuAD rules. And
`live_result`: how a chapter states a live run's score beside what a model
without learning scores, refusing one that did not learn.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Iterable, Sequence
from typing import Any

# ----------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------


__all__ = [
    "LIVE_RESULT_PATTERN",
    "live_result",
    "confusion_matrix",
    "classification_report",
    "get_entities",
    "entity_f1",
    "normalize_answer",
    "exact_match",
    "token_f1",
    "squad_metrics",
]


# How live_result writes a score and its baseline; scripts/check_book.py reads the built book with it.
LIVE_RESULT_PATTERN = r"(\d+(?:\.\d+)?)% \((chance|baseline) (\d+(?:\.\d+)?)%\)"


def live_result(
    name: str, value: float, baseline: float, *, factor: float = 1.0, margin: float = 0.05,
    kind: str = "chance",
) -> str:  # fmt: skip
    """State a live run's score beside the score of no learning; refuse a run that did not learn.

    value and baseline are fractions (0.853, not 85.3). kind "chance": the
    baseline is a guess (the majority class, 1/number of labels); the score
    must beat it by `margin`. kind "baseline": a model without context (the
    unigram guess of masked LM); the score must reach `factor` times it.
    Returns (and prints) "name: 85.3% (chance 20.0%)", the form the book check
    looks for; raises AssertionError, naming the fix, for a run at chance.
    """
    if kind not in ("chance", "baseline"):
        raise ValueError(f"kind must be 'chance' or 'baseline', got {kind!r}.")
    line = f"{name}: {value:.1%} ({kind} {baseline:.1%})"
    needed = max(baseline * factor, baseline + margin)
    if value < needed:
        raise AssertionError(
            f"{line}: the run did not learn (it needs {needed:.1%}). A live run at chance teaches "
            "the wrong lesson: give it more steps or a larger learning rate, or start it from a "
            "pretrained checkpoint (course-tiny, minilm)."
        )
    print(line)
    return line


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_labels: int):
    """matrix[true][predicted] = how many examples of class `true` were predicted `predicted`."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions.")
    matrix = [[0] * num_labels for _ in range(num_labels)]
    for true, predicted in zip(labels, predictions, strict=True):
        matrix[true][predicted] += 1
    return matrix


def _precision_recall_f1(correct: int, predicted: int, actual: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts; 0 where a denominator is 0 (scikit-learn's rule)."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def classification_report(
    labels: Sequence[int], predictions: Sequence[int], label_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 (the unweighted mean of the per-class F1) and a per-class report.

    Macro-F1 gives every class the same weight, so a model that ignores a
    rare class is penalised even when its accuracy looks good.
    """
    if not labels:
        raise ValueError("No examples to score.")
    matrix = confusion_matrix(labels, predictions, len(label_names))
    per_class = {}
    for index, name in enumerate(label_names):
        correct = matrix[index][index]
        predicted = sum(row[index] for row in matrix)
        actual = sum(matrix[index])
        precision, recall, f1 = _precision_recall_f1(correct, predicted, actual)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    accuracy = sum(matrix[i][i] for i in range(len(label_names))) / len(labels)
    present = [report for report in per_class.values() if report["support"] > 0]
    macro_f1 = sum(report["f1"] for report in present) / len(present)
    return {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "per_class": per_class,
        "confusion_matrix": matrix,
        "label_names": list(label_names),
        "num_examples": len(labels),
    }


# ----------------------------------------------------------------------------
# Entities: seqeval-style span F1 over IOB2 tags
# ----------------------------------------------------------------------------


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entity spans of one IOB2 tag sequence: [(type, first word, last word)].

    "B-X" starts an entity of type X; "I-X" continues an entity of type X,
    and starts one when it follows anything else (the lenient rule of the
    CoNLL evaluation script, and seqeval's default). "O" is outside.
    """
    entities = []
    current: list | None = None  # [type, start, end]
    for position, tag in enumerate(tags):
        if tag == "O" or not tag:
            prefix, kind = "O", ""
        else:
            prefix, _, kind = tag.partition("-")
            if prefix not in ("B", "I") or not kind:
                raise ValueError(
                    f"Tag {tag!r} at position {position} is not IOB2: use 'O', 'B-TYPE' or 'I-TYPE'."
                )
        continues = prefix == "I" and current is not None and current[0] == kind
        if continues:
            current[2] = position
            continue
        if current is not None:
            entities.append(tuple(current))
            current = None
        if prefix in ("B", "I"):
            current = [kind, position, position]
    if current is not None:
        entities.append(tuple(current))
    return entities


def entity_f1(
    true_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """Entity-level precision, recall and F1 (micro-averaged), and the same per entity type.

    An entity counts as correct only if its type and both boundaries match
    exactly: finding "New York" as "York" is one miss and one false alarm.
    """
    if len(true_tags) != len(predicted_tags):
        raise ValueError(f"{len(true_tags)} true sequences but {len(predicted_tags)} predicted.")
    true_entities, predicted_entities = set(), set()
    for index, (truth, prediction) in enumerate(zip(true_tags, predicted_tags, strict=True)):
        if len(truth) != len(prediction):
            raise ValueError(
                f"Sequence {index} has {len(truth)} true tags but {len(prediction)} predicted: "
                "predict one tag per word."
            )
        true_entities.update((index, *entity) for entity in get_entities(truth))
        predicted_entities.update((index, *entity) for entity in get_entities(prediction))
    correct = true_entities & predicted_entities
    precision, recall, f1 = _precision_recall_f1(
        len(correct), len(predicted_entities), len(true_entities)
    )
    per_type = {}
    for kind in sorted({e[1] for e in true_entities | predicted_entities}):
        counts = [sum(e[1] == kind for e in group) for group in (correct, predicted_entities)]
        actual = sum(e[1] == kind for e in true_entities)
        p, r, f = _precision_recall_f1(counts[0], counts[1], actual)
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": actual}
    return {"precision": precision, "recall": recall, "f1": f1, "per_type": per_type}


# ----------------------------------------------------------------------------
# SQuAD: exact match and token F1 after normalisation
# ----------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold_answers: Iterable[str]) -> float:
    """1.0 if the prediction equals one of the gold answers after normalisation, else 0.0."""
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(gold) for gold in gold_answers))


def _token_f1(prediction: str, gold: str) -> float:
    predicted_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not predicted_tokens or not gold_tokens:  # an empty answer matches only an empty answer
        return float(predicted_tokens == gold_tokens)
    common = collections.Counter(predicted_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, gold_answers: Iterable[str]) -> float:
    """The best bag-of-words F1 between the prediction and any gold answer (after normalisation)."""
    return max((_token_f1(prediction, gold) for gold in gold_answers), default=0.0)


def squad_metrics(
    predictions: dict[str, str], gold_answers: dict[str, list[str]]
) -> dict[str, Any]:
    """Exact match and F1 in percent over the questions of `gold_answers` (id -> answer texts).

    A question without a prediction scores 0, as in the official script.
    """
    if not gold_answers:
        raise ValueError("No questions to score.")
    unknown = set(predictions) - set(gold_answers)
    if unknown:
        raise ValueError(f"Predictions for unknown question ids, e.g. {sorted(unknown)[:3]}.")
    em = f1 = 0.0
    for question_id, answers in gold_answers.items():
        if question_id in predictions:
            em += exact_match(predictions[question_id], answers)
            f1 += token_f1(predictions[question_id], answers)
    total = len(gold_answers)
    return {"exact_match": 100 * em / total, "f1": 100 * f1 / total, "num_questions": total}
