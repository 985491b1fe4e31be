"""Chapter 11, NER and QA: word labels on sub-words, the best answer span, the no-answer choice."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch

from ..finetune import IGNORE_INDEX
from ._grading import Case, Mistake, Problem, _run_cases, _variant

__all__ = [
    "check_align_labels",
    "check_align_every_subword",
    "check_best_span",
    "check_answer_or_null",
]


def _align(
    word_ids,
    word_labels,
    *,
    subwords="first",
    special=IGNORE_INDEX,
    zero_is_word=True,
    keep_unknown=True,
):
    """Token labels from word labels, the reference way or with one of the learners' mistakes."""
    labels = []
    for position, word in enumerate(word_ids):
        if word is None or (not zero_is_word and not word):
            labels.append(special)
            continue
        label = word_labels[word]
        if not keep_unknown and label == IGNORE_INDEX:
            label = 0
        previous = word_ids[position - 1] if position > 0 else None
        following = word_ids[position + 1] if position + 1 < len(word_ids) else None
        if (
            subwords == "all"
            or (subwords == "first" and word != previous)
            or (subwords == "last" and word != following)
        ):
            labels.append(label)
        else:
            labels.append(IGNORE_INDEX)
    return labels


def _align_problem(expected: list[int], got: Any) -> Problem | None:
    if not isinstance(got, (list, tuple)) and not isinstance(got, torch.Tensor):
        return Problem([f"expected a list of ints, one label per token; got {type(got).__name__}"])
    got = [int(x) for x in got]
    if len(got) != len(expected):
        return Problem(
            [f"expected {len(expected)} labels (one per token), got {len(got)}"],
            "return one label per entry of word_ids, special tokens and padding included.",
        )
    if got == expected:
        return None
    first = next(i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b)
    return Problem(
        [
            f"expected {expected}",
            f"got      {got}  (first difference at token {first})",
        ]
    )


def _align_case(description: str, word_ids: list, word_labels: list) -> Case:
    """A case whose expected labels come from the reference alignment."""
    return Case(description, (word_ids, word_labels), _align(word_ids, word_labels))


def _align_cases() -> list[Case]:
    """Split words, word id 0 split, padding, an unknown label, a truncated word, many words."""
    generator = random.Random(11)
    many_ids: list = [None]
    for word in range(30):
        many_ids += [word] * generator.randint(1, 4)
    many_ids.append(None)
    many_labels = [generator.randrange(5) for _ in range(30)]
    return [
        _align_case(
            "[CLS] 4 words, the second split into 3 sub-words [SEP]",
            [None, 0, 1, 1, 1, 2, 3, None],
            [1, 0, 3, 0],
        ),
        _align_case(
            "the first word (word id 0) split into 2 sub-words", [None, 0, 0, 1, 2, None], [3, 0, 1]
        ),
        _align_case(
            "padding after [SEP] (word id None)", [None, 0, 1, 1, 2, None, None, None], [0, 1, 2]
        ),
        _align_case(
            "a word whose label is -100 (unknown) stays -100",
            [None, 0, 0, 1, 2, 2, None],
            [IGNORE_INDEX, 1, 2],
        ),
        _align_case("truncated: the last word lost", [None, 0, 1, 1, 2, None], [0, 3, 4, 1]),
        _align_case("30 words of 1 to 4 sub-words", many_ids, many_labels),
    ]


_ALIGN_MISTAKES = [
    _variant(
        "only the first sub-word of a word gets the word's label; the later sub-words get "
        "-100, so each word counts once in the loss and the metric.",
        _align,
        subwords="all",
    ),
    _variant(
        "the label goes on the *first* sub-word of each word (a new word id, different from "
        "the previous token's), not on its last.",
        _align,
        subwords="last",
    ),
    _variant(
        "word id 0 is the first word, not a special token: test `word is None`, not `not word`.",
        _align,
        zero_is_word=False,
    ),
    _variant(
        "special tokens and padding (word id None) get -100, not 0: 0 is the label 'O', and "
        "the loss would learn to predict it on [CLS] and [SEP].",
        _align,
        special=0,
    ),
    _variant(
        "a word label of -100 (unknown) passes through unchanged: the loss must skip that word.",
        _align,
        keep_unknown=False,
    ),
]


def check_align_labels(fn: Callable) -> bool:
    """Grade `fn(word_ids, word_labels)` -> one label per token: the word's label on its first
    sub-word, -100 on the later sub-words and on special tokens and padding (word id None).

    A word label of -100 (unknown) passes through. As `bertcourse.finetune.align_word_labels`.
    """
    return _run_cases(
        "check_align_labels",
        fn,
        _align_cases(),
        _align_problem,
        _ALIGN_MISTAKES,
        "walk through word_ids by hand: None -> -100; a new word id -> that word's label; the "
        "same id as the token before -> -100.",
    )


def _spans(
    start_logits,
    end_logits,
    context_mask,
    max_answer_length,
    *,
    ordered=True,
    length_check="<",
    use_mask=True,
    softmax_over="context",
    score="product",
):
    """(start, end, score) by brute force, the reference way or with one of the mistakes."""
    start_logits, end_logits = start_logits.double(), end_logits.double()
    if softmax_over == "context":
        low = torch.finfo(torch.float64).min
        start_probs = start_logits.masked_fill(~context_mask, low).softmax(-1)
        end_probs = end_logits.masked_fill(~context_mask, low).softmax(-1)
    else:
        start_probs, end_probs = start_logits.softmax(-1), end_logits.softmax(-1)
    best = None
    length = len(start_logits)
    for start in range(length):
        for end in range(length):
            if ordered and end < start:
                continue
            tokens = end - start + 1
            if length_check == "<" and tokens > max_answer_length:
                continue
            if length_check == "<=" and tokens > max_answer_length + 1:
                continue
            if use_mask and not (context_mask[start] and context_mask[end]):
                continue
            if score == "product":
                value = float(start_probs[start] * end_probs[end])
            else:
                value = float(start_logits[start] + end_logits[end])
            if best is None or value > best[2]:
                best = (start, end, value)
    return best


def _independent_argmax(start_logits, end_logits, context_mask, max_answer_length):
    start = int(start_logits.masked_fill(~context_mask, -1e9).argmax())
    end = int(end_logits.masked_fill(~context_mask, -1e9).argmax())
    low = torch.finfo(torch.float32).min
    probs = [
        x.float().masked_fill(~context_mask, low).softmax(-1) for x in (start_logits, end_logits)
    ]
    return start, end, float(probs[0][start] * probs[1][end])


def _span_problem(expected: tuple, got: Any) -> Problem | None:
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return Problem(["expected a tuple (start, end, score)"])
    start, end, score = int(got[0]), int(got[1]), float(got[2])
    if (start, end) != expected[:2]:
        return Problem(
            [
                f"expected the span ({expected[0]}, {expected[1]}) with score {expected[2]:.4f}",
                f"got the span ({start}, {end}) with score {score:.4f}",
            ]
        )
    if not math.isclose(score, expected[2], rel_tol=1e-4, abs_tol=1e-7):
        return Problem(
            [
                f"the span ({start}, {end}) is right, but its score is {score:.6g}, expected "
                f"{expected[2]:.6g}"
            ],
            "the score is p_start(start) * p_end(end), each a softmax over the context tokens.",
        )
    return None


def _window(question: int, context: int) -> torch.Tensor:
    """[CLS] question [SEP] context [SEP]: True on the context tokens."""
    mask = torch.zeros(question + context + 3, dtype=torch.bool)
    mask[question + 2 : question + 2 + context] = True
    return mask


def _peaks(length: int, peaks: dict[int, float], base: float = 0.0) -> list[float]:
    """Logits equal to `base` but at the positions given."""
    values = [base] * length
    for position, value in peaks.items():
        values[position] = value
    return values


def _span_case(
    description: str,
    start_logits: list[float],
    end_logits: list[float],
    mask: torch.Tensor,
    max_answer_length: int,
) -> Case:
    """A case whose expected span comes from the brute-force search."""
    start_logits = torch.tensor(start_logits, dtype=torch.float32)
    end_logits = torch.tensor(end_logits, dtype=torch.float32)
    args = (start_logits, end_logits, mask, max_answer_length)
    return Case(description, args, _spans(*args))


def _best_span_cases() -> list[Case]:
    """Clear peaks, the traps (end before start, too long, in the question), random logits."""
    mask = _window(3, 10)  # context tokens 5..14
    generator = torch.Generator().manual_seed(11)
    random_mask = _window(6, 30)
    return [
        _span_case(
            "a clear answer: start peak at 7, end peak at 9",
            _peaks(16, {7: 5.0}),
            _peaks(16, {9: 5.0}),
            mask,
            30,
        ),
        _span_case(
            "the best end (6) lies before the best start (10)",
            _peaks(16, {10: 6.0, 7: 4.0}),
            _peaks(16, {6: 6.0, 12: 4.0}),
            mask,
            30,
        ),
        _span_case(
            "the best pair (5, 14) is 10 tokens long, max_answer_length 4",
            _peaks(16, {5: 6.0, 11: 3.0}),
            _peaks(16, {14: 6.0, 13: 3.0}),
            mask,
            4,
        ),
        _span_case(
            "the best span is exactly max_answer_length 4 tokens long (6 to 9), one more would "
            "score higher",
            _peaks(16, {6: 6.0, 5: 6.5}),
            _peaks(16, {9: 6.0}),
            mask,
            4,
        ),
        _span_case(
            "the highest logits are on question tokens (1 and 2) and [CLS]",
            _peaks(16, {0: 9.0, 1: 9.0, 8: 3.0}),
            _peaks(16, {0: 9.0, 2: 9.0, 10: 3.0}),
            mask,
            30,
        ),
        _span_case(
            "random logits, 6 question and 30 context tokens, max_answer_length 5",
            torch.randn(39, generator=generator).mul(3).tolist(),
            torch.randn(39, generator=generator).mul(3).tolist(),
            random_mask,
            5,
        ),
        _span_case(
            "random logits, 6 question and 30 context tokens, max_answer_length 30",
            torch.randn(39, generator=generator).mul(2).tolist(),
            torch.randn(39, generator=generator).mul(2).tolist(),
            random_mask,
            30,
        ),
    ]


_BEST_SPAN_MISTAKES = [
    Mistake(
        "the best start and the best end taken separately need not form a span: search the "
        "pairs (start, end) with start <= end < start + max_answer_length.",
        _independent_argmax,
    ),
    _variant(
        "an answer cannot end before it starts: only pairs with end >= start are spans.",
        _spans,
        ordered=False,
    ),
    _variant(
        "spans longer than max_answer_length tokens are not allowed.",
        _spans,
        length_check="none",
    ),
    _variant(
        "a span from start to end has end - start + 1 tokens: it must be at most "
        "max_answer_length, so end < start + max_answer_length (one token too many allowed).",
        _spans,
        length_check="<=",
    ),
    _variant(
        "both ends must be context tokens (context_mask): an answer never starts or ends in "
        "the question, [CLS] or [SEP].",
        _spans,
        use_mask=False,
        softmax_over="all",
    ),
    _variant(
        "take each softmax over the context tokens only (mask the others out first), so the "
        "question's logits do not change the score.",
        _spans,
        softmax_over="all",
    ),
    _variant(
        "the score is a probability, p_start(start) * p_end(end), not the sum of the logits "
        "(the argmax is the same, the score is not).",
        _spans,
        score="logits",
    ),
]


def check_best_span(fn: Callable) -> bool:
    """Grade `fn(start_logits, end_logits, context_mask, max_answer_length)` -> (start, end, score).

    The best span of one window: start <= end, at most max_answer_length tokens, both ends context
    tokens (context_mask True), maximising p_start(start) * p_end(end) with each p a softmax over
    the context tokens; the score is that product. As `bertcourse.finetune.best_span`.
    """
    return _run_cases(
        "check_best_span",
        fn,
        _best_span_cases(),
        _span_problem,
        _BEST_SPAN_MISTAKES,
        "print your candidate spans and their scores for a small window and check each rule.",
    )


# ----------------------------------------------------------------------------
# Every sub-word labelled: B-X on a word's first piece, I-X on the rest
# ----------------------------------------------------------------------------


def _align_every(
    word_ids,
    word_labels,
    label_names,
    *,
    later="inside",
    special=IGNORE_INDEX,
    zero_is_word=True,
    keep_unknown=True,
    first="word",
):
    """Every piece labelled (the reference), or one of the learners' mistakes by its switches."""
    ids = {name: index for index, name in enumerate(label_names)}
    labels, previous = [], None
    for word in word_ids:
        if word is None or (not zero_is_word and not word):
            labels.append(special)
            previous = word
            continue
        label = word_labels[word]
        if label == IGNORE_INDEX and not keep_unknown:
            label = ids["O"]
        name = label_names[label] if label != IGNORE_INDEX else None
        inside = ids["I-" + name[2:]] if name and name.startswith("B-") else label
        if word != previous:  # the word's first piece
            labels.append(inside if first == "inside" else label)
        elif later == "inside":
            labels.append(inside)
        elif later == "next_id":
            labels.append(label + 1 if name and name.startswith("B-") else label)
        elif later == "ignored":
            labels.append(IGNORE_INDEX)
        else:  # "same": the word's own label on every piece
            labels.append(label)
        previous = word
    return labels


_IOB_ORDER = ["O", "B-NAME", "I-NAME", "B-CODE", "I-CODE"]  # the chapter's NER_LABEL_NAMES
_OTHER_ORDER = ["O", "B-PER", "B-LOC", "I-PER", "I-LOC"]  # I-X is not the id after B-X


def _align_every_case(description: str, word_ids: list, word_labels: list, names: list) -> Case:
    args = (word_ids, word_labels, names)
    return Case(description, args, _align_every(*args))


def _align_every_cases() -> list[Case]:
    generator = random.Random(5)
    many_ids: list = [None]
    for word in range(25):
        many_ids += [word] * generator.randint(1, 4)
    many_ids.append(None)
    many_labels = [generator.randrange(5) for _ in range(25)]
    return [
        _align_every_case(
            "[CLS] 3 words, the B-CODE word split into 3 pieces [SEP]",
            [None, 0, 1, 1, 1, 2, None],
            [0, 3, 0],
            _IOB_ORDER,
        ),
        _align_every_case(
            "a name of two words (B-NAME I-NAME), each in 2 pieces, then O in 2 pieces",
            [None, 0, 0, 1, 1, 2, 2, None],
            [1, 2, 0],
            _IOB_ORDER,
        ),
        _align_every_case(
            "the first word (word id 0) is split, padding after [SEP]",
            [None, 0, 0, 1, 2, None, None],
            [3, 0, 1],
            _IOB_ORDER,
        ),
        _align_every_case(
            "a word whose label is -100 (unknown), in 2 pieces",
            [None, 0, 0, 1, 1, None],
            [IGNORE_INDEX, 1],
            _IOB_ORDER,
        ),
        _align_every_case(
            "other label names, in another order: " + ", ".join(_OTHER_ORDER),
            [None, 0, 0, 1, 2, 2, 2, None],
            [1, 0, 2],
            _OTHER_ORDER,
        ),
        _align_every_case("25 words of 1 to 4 pieces", many_ids, many_labels, _IOB_ORDER),
    ]


_ALIGN_EVERY_MISTAKES = [
    _variant(
        "a B-X on every piece starts a new entity at each piece, and reading the tags back "
        "finds several one-piece entities: the later pieces of a B-X word get I-X.",
        _align_every,
        later="same",
    ),
    _variant(
        "this exercise labels every piece: the later pieces of a word get a label too (I-X "
        "after B-X, the word's own label otherwise), not -100.",
        _align_every,
        later="ignored",
    ),
    _variant(
        "the first piece keeps the word's own label (B-X starts the entity); only the later "
        "pieces of a B-X word become I-X.",
        _align_every,
        first="inside",
    ),
    _variant(
        "find I-X by its name, label_names.index('I-' + name[2:]): the id of I-X is not "
        "always the id of B-X plus 1.",
        _align_every,
        later="next_id",
    ),
    _variant(
        "word id 0 is the first word, not a special token: test `word is None`, not `not word`.",
        _align_every,
        zero_is_word=False,
    ),
    _variant(
        "special tokens and padding (word id None) get -100, not 0 ('O').",
        _align_every,
        special=0,
    ),
    _variant(
        "a word label of -100 (unknown) stays -100 on all of its pieces.",
        _align_every,
        keep_unknown=False,
    ),
]


def check_align_every_subword(fn: Callable) -> bool:
    """Grade `fn(word_ids, word_labels, label_names)` -> one label per token, every piece labelled.

    Special tokens and padding (word id None) get -100; a word's first piece gets the word's
    label; its later pieces get I-X if the word's label is B-X (looked up by name in
    label_names), else the word's label; a word label of -100 stays -100 on every piece.
    """
    return _run_cases(
        "check_align_every_subword",
        fn,
        _align_every_cases(),
        _align_problem,
        _ALIGN_EVERY_MISTAKES,
        "walk through word_ids by hand: None -> -100; a new word id -> that word's label; the "
        "same id as the token before -> I-X after a B-X word, else the word's label again.",
    )


# ----------------------------------------------------------------------------
# SQuAD 2.0: an answer, or none
# ----------------------------------------------------------------------------


def _answer_or_null(
    start_logits,
    end_logits,
    context_mask,
    max_answer_length,
    threshold,
    *,
    null="both",
    margin_side="null",
    span_search="pairs",
    use_mask=True,
    always_answer=False,
):
    """(start, end) of the best span if it beats the [CLS] score by `threshold`, else None."""
    if span_search == "pairs":
        start, end, _ = _spans(
            start_logits,
            end_logits,
            context_mask,
            max_answer_length,
            use_mask=use_mask,
            score="logits",
        )
    else:  # the best start and the best end, each on its own
        start, end, _ = _independent_argmax(
            start_logits, end_logits, context_mask, max_answer_length
        )
    span_score = float(start_logits[start] + end_logits[end])
    null_score = (
        float(start_logits[0] + end_logits[0]) if null == "both" else float(start_logits[0])
    )
    if always_answer:
        return start, end
    if margin_side == "null":
        answered = span_score > null_score + threshold
    else:
        answered = span_score + threshold > null_score
    return (start, end) if answered else None


def _null_problem(expected: Any, got: Any) -> Problem | None:
    if got is not None and (not isinstance(got, (tuple, list)) or len(got) != 2):
        return Problem(
            [f"expected None or a pair (start, end); got {got!r:.60}"],
            "return None for 'no answer', else the span's (start, end) as two ints.",
        )
    got = None if got is None else (int(got[0]), int(got[1]))
    if got == expected:
        return None
    describe = {None: "None (no answer)"}
    return Problem(
        [
            f"expected {describe.get(expected, expected)}",
            f"got      {describe.get(got, got)}",
        ]
    )


def _null_case(
    description: str,
    start_logits: list[float],
    end_logits: list[float],
    mask: torch.Tensor,
    max_answer_length: int,
    threshold: float,
) -> Case:
    args = (
        torch.tensor(start_logits, dtype=torch.float32),
        torch.tensor(end_logits, dtype=torch.float32),
        mask,
        max_answer_length,
        threshold,
    )
    return Case(description, args, _answer_or_null(*args))


def _null_cases() -> list[Case]:
    mask = _window(3, 10)  # context tokens 5..14
    generator = torch.Generator().manual_seed(23)
    random_mask = _window(5, 25)
    random_cases = []
    for number in range(3):
        start = torch.randn(33, generator=generator).mul(2)
        end = torch.randn(33, generator=generator).mul(2)
        start[0] = end[0] = 2.0 + number  # a [CLS] score near the best spans'
        random_cases.append(
            _null_case(
                f"random logits, [CLS] logits {2.0 + number:g} each, threshold {number - 1:g}",
                start.tolist(),
                end.tolist(),
                random_mask,
                8,
                float(number - 1),
            )
        )
    return [
        _null_case(
            "a clear answer (7, 9) with logits 5 + 5; [CLS] logits 1 + 1; threshold 0",
            _peaks(16, {0: 1.0, 7: 5.0}),
            _peaks(16, {0: 1.0, 9: 5.0}),
            mask,
            30,
            0.0,
        ),
        _null_case(
            "[CLS] logits 6 + 6 beat the best span's 5 + 5; threshold 0",
            _peaks(16, {0: 6.0, 7: 5.0}),
            _peaks(16, {0: 6.0, 9: 5.0}),
            mask,
            30,
            0.0,
        ),
        _null_case(
            "[CLS] logits 11 + (-5) = 6: the span's 5 + 5 wins",
            _peaks(16, {0: 11.0, 7: 5.0}),
            _peaks(16, {0: -5.0, 9: 5.0}),
            mask,
            30,
            0.0,
        ),
        _null_case(
            "span 10 beats [CLS] 8 by 2, but the threshold asks for 3",
            _peaks(16, {0: 4.0, 7: 5.0}),
            _peaks(16, {0: 4.0, 9: 5.0}),
            mask,
            30,
            3.0,
        ),
        _null_case(
            "[CLS] 12 beats the span's 10 by 2, a threshold of -3 still answers",
            _peaks(16, {0: 6.0, 7: 5.0}),
            _peaks(16, {0: 6.0, 9: 5.0}),
            mask,
            30,
            -3.0,
        ),
        _null_case(
            "the best end (6) lies before the best start (10); [CLS] 3 + 3",
            _peaks(16, {0: 3.0, 10: 6.0, 7: 4.0}),
            _peaks(16, {0: 3.0, 6: 6.0, 12: 4.0}),
            mask,
            30,
            0.0,
        ),
        _null_case(
            "the highest logits are on question tokens (1, 2); [CLS] 2 + 2",
            _peaks(16, {0: 2.0, 1: 9.0, 8: 3.0}),
            _peaks(16, {0: 2.0, 2: 9.0, 10: 3.0}),
            mask,
            30,
            0.0,
        ),
        *random_cases,
    ]


_NULL_MISTAKES = [
    _variant(
        "the answer must beat the null score by the threshold: answer when "
        "span_score > null_score + threshold (a larger threshold answers less often).",
        _answer_or_null,
        margin_side="span",
    ),
    _variant(
        "the no-answer 'span' starts and ends at [CLS]: its score is start_logits[0] + "
        "end_logits[0], not the start logit alone.",
        _answer_or_null,
        null="start",
    ),
    _variant(
        "compare the best span's score with the null score: return None when it does not "
        "beat it by the threshold.",
        _answer_or_null,
        always_answer=True,
    ),
    _variant(
        "the best start and the best end taken separately need not form a span: search the "
        "pairs start <= end < start + max_answer_length.",
        _answer_or_null,
        span_search="separately",
    ),
    _variant(
        "both ends of an answer must be context tokens (context_mask): an answer never starts "
        "or ends in the question, [CLS] or [SEP].",
        _answer_or_null,
        use_mask=False,
    ),
]


def check_answer_or_null(fn: Callable) -> bool:
    """Grade `fn(start_logits, end_logits, context_mask, max_answer_length, threshold)`.

    BERT's rule for SQuAD 2.0: the best valid span (both ends context tokens, start <= end,
    at most max_answer_length tokens) by start_logits[i] + end_logits[j]; the null score
    start_logits[0] + end_logits[0] ([CLS]); return (start, end) if the span's score exceeds
    the null score + threshold, else None.
    """
    return _run_cases(
        "check_answer_or_null",
        fn,
        _null_cases(),
        _null_problem,
        _NULL_MISTAKES,
        "print the best span's score and the null score for this case, then apply the rule.",
    )
