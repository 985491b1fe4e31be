"""Chapter 11: the label-alignment and answer-span checkers, their solutions and planted bugs."""

from __future__ import annotations

import pytest
import torch
from planted import PlantedBugs

from bertcourse.exercises import ExerciseFailed, check_align_labels, check_best_span


def align_labels(word_ids, word_labels):
    """The chapter's solution: the word's label on its first sub-word, -100 elsewhere."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(word_labels[word])
        else:
            labels.append(-100)
        previous = word
    return labels


def align_every_subword(word_ids, word_labels):
    return [-100 if word is None else word_labels[word] for word in word_ids]


def align_last_subword(word_ids, word_labels):
    labels = []
    for position, word in enumerate(word_ids):
        following = word_ids[position + 1] if position + 1 < len(word_ids) else None
        labels.append(-100 if word is None or word == following else word_labels[word])
    return labels


def align_zero_is_special(word_ids, word_labels):
    labels, previous = [], None
    for word in word_ids:
        if not word:  # word 0 is falsy too
            labels.append(-100)
        elif word != previous:
            labels.append(word_labels[word])
        else:
            labels.append(-100)
        previous = word
    return labels


def align_specials_zero(word_ids, word_labels):
    return [
        0 if label == -100 and word is None else label
        for word, label in zip(word_ids, align_labels(word_ids, word_labels), strict=True)
    ]


def align_unknown_to_zero(word_ids, word_labels):
    return align_labels(word_ids, [max(label, 0) for label in word_labels])


def align_drops_padding(word_ids, word_labels):
    while word_ids and word_ids[-1] is None:
        word_ids = word_ids[:-1]
    return align_labels(word_ids, word_labels) + [-100]


ALIGN_BUGS = [
    (align_every_subword, "only the first sub-word"),
    (align_last_subword, "*first* sub-word"),
    (align_zero_is_special, "word id 0"),
    (align_specials_zero, "special tokens and padding"),
    (align_unknown_to_zero, "passes through"),
    (align_drops_padding, "one label per entry of word_ids"),
]


def span_search(start_logits, end_logits, context_mask, max_answer_length=30, *, bug=None):
    """The chapter's solution (bug=None) and the planted bugs: scores of every valid pair."""
    low = torch.finfo(torch.float32).min
    over = torch.ones_like(context_mask) if bug in ("softmax_all", "question") else context_mask
    start_probs = start_logits.masked_fill(~over, low).softmax(-1)
    end_probs = end_logits.masked_fill(~over, low).softmax(-1)
    best = (0, 0, -1.0)
    for start in range(len(start_logits)):
        for end in range(len(end_logits)):
            if end < start and bug != "unordered":
                continue
            limit = {"no_limit": 10**9, "off_by_one": max_answer_length + 1}.get(
                bug, max_answer_length
            )
            if end - start + 1 > limit:
                continue
            if bug != "question" and not (context_mask[start] and context_mask[end]):
                continue
            if bug == "logit_sum":
                score = float(start_logits[start] + end_logits[end])
            else:
                score = float(start_probs[start] * end_probs[end])
            if score > best[2]:
                best = (start, end, score)
    return best


def span_bug(name, bug):
    def spans(start_logits, end_logits, context_mask, max_answer_length):
        return span_search(start_logits, end_logits, context_mask, max_answer_length, bug=bug)

    spans.__name__ = spans.__qualname__ = name
    return spans


def span_independent_argmax(start_logits, end_logits, context_mask, max_answer_length):
    low = torch.finfo(torch.float32).min
    start_probs = start_logits.masked_fill(~context_mask, low).softmax(-1)
    end_probs = end_logits.masked_fill(~context_mask, low).softmax(-1)
    start, end = int(start_probs.argmax()), int(end_probs.argmax())
    return start, end, float(start_probs[start] * end_probs[end])


SPAN_BUGS = [
    (span_independent_argmax, "taken separately"),
    (span_bug("end_before_start", "unordered"), "cannot end before it starts"),
    (span_bug("no_length_limit", "no_limit"), "longer than max_answer_length"),
    (span_bug("length_off_by_one", "off_by_one"), "end - start + 1"),
    (span_bug("spans_in_the_question", "question"), "context tokens"),
    (span_bug("softmax_over_the_window", "softmax_all"), "context tokens only"),
    (span_bug("score_is_logit_sum", "logit_sum"), "not the sum of the logits"),
]


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_align_labels: (align_labels, ALIGN_BUGS),
    check_best_span: (span_search, SPAN_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


def test_chapter_11_reference_solutions_and_package_pass(capsys):
    from bertcourse.finetune import align_word_labels, best_span

    for checker, solution in [
        (check_align_labels, align_labels),
        (check_align_labels, align_word_labels),
        (check_best_span, span_search),
        (check_best_span, best_span),
    ]:
        assert checker(solution) is True
        assert capsys.readouterr().out.startswith(f"✓ {checker.__name__}: all ")


def test_chapter_11_checkers_report_stubs_and_odd_answers():
    def my_align(word_ids, word_labels):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="^Not implemented yet: .* in my_align with"):
        check_align_labels(my_align)
    with pytest.raises(ExerciseFailed, match="expected a list of ints"):
        check_align_labels(lambda word_ids, word_labels: None)
    with pytest.raises(ExerciseFailed, match="expected a tuple \\(start, end, score\\)"):
        check_best_span(lambda start_logits, end_logits, context_mask, max_answer_length: 3)
