"""Chapter 11: the label-alignment, answer-span and no-answer checkers, their solutions and planted
bugs."""

from __future__ import annotations

import pytest
import torch
from planted import PlantedBugs

from bertcourse.exercises import (
    ExerciseFailed,
    check_align_every_subword,
    check_align_labels,
    check_answer_or_null,
    check_best_span,
)


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


def align_every_subword(word_ids, word_labels, label_names):
    """The chapter's solution: B-X on a word's first piece, I-X on its later pieces."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        else:
            label = word_labels[word]
            name = label_names[label] if label != -100 else "O"
            if word == previous and name.startswith("B-"):
                label = label_names.index("I-" + name[2:])
            labels.append(label)
        previous = word
    return labels


def every_subword_b_on_all(word_ids, word_labels, label_names):
    return [-100 if word is None else word_labels[word] for word in word_ids]


def every_subword_first_only(word_ids, word_labels, label_names):
    return align_labels(word_ids, word_labels)


def every_subword_i_on_first_piece(word_ids, word_labels, label_names):
    labels = []
    for word in word_ids:
        label = -100 if word is None else word_labels[word]
        name = label_names[label] if label != -100 else "O"
        labels.append(label_names.index("I-" + name[2:]) if name.startswith("B-") else label)
    return labels


def every_subword_next_id(word_ids, word_labels, label_names):
    labels, previous = [], None
    for word in word_ids:
        label = -100 if word is None else word_labels[word]
        if label != -100 and word == previous and label_names[label].startswith("B-"):
            label += 1  # I-X is the next id in the chapter's label order, not in every order
        labels.append(label)
        previous = word
    return labels


def every_subword_zero_is_special(word_ids, word_labels, label_names):
    labels = align_every_subword(word_ids, word_labels, label_names)
    return [-100 if word == 0 else label for word, label in zip(word_ids, labels, strict=True)]


def every_subword_specials_zero(word_ids, word_labels, label_names):
    labels = align_every_subword(word_ids, word_labels, label_names)
    return [0 if word is None else label for word, label in zip(word_ids, labels, strict=True)]


def every_subword_unknown_to_o(word_ids, word_labels, label_names):
    return align_every_subword(word_ids, [max(label, 0) for label in word_labels], label_names)


ALIGN_EVERY_BUGS = [
    (every_subword_b_on_all, "new entity at each piece"),
    (every_subword_first_only, "labels every piece"),
    (every_subword_i_on_first_piece, "first piece keeps"),
    (every_subword_next_id, "by its name"),
    (every_subword_zero_is_special, "word id 0"),
    (every_subword_specials_zero, "special tokens and padding"),
    (every_subword_unknown_to_o, "stays -100"),
]


def answer_or_null(start_logits, end_logits, context_mask, max_answer_length, threshold):
    """The chapter's solution: the best valid span by logit sum against the [CLS] score."""
    best, best_score = None, None
    context = context_mask.nonzero().flatten().tolist()
    for start in context:
        for end in context:
            if start <= end < start + max_answer_length:
                score = float(start_logits[start] + end_logits[end])
                if best_score is None or score > best_score:
                    best, best_score = (start, end), score
    null_score = float(start_logits[0] + end_logits[0])
    return best if best_score > null_score + threshold else None


def answer_or_null_by_best_span(
    start_logits, end_logits, context_mask, max_answer_length, threshold
):
    """Another correct answer: the package's best_span (its argmax is the best logit sum)."""
    from bertcourse.finetune import best_span

    start, end, _ = best_span(start_logits, end_logits, context_mask, max_answer_length)
    span_score = start_logits[start] + end_logits[end]
    return (start, end) if span_score > start_logits[0] + end_logits[0] + threshold else None


def null_margin_on_span_side(start_logits, end_logits, context_mask, max_answer_length, threshold):
    span = answer_or_null(start_logits, end_logits, context_mask, max_answer_length, -1e9)
    span_score = float(start_logits[span[0]] + end_logits[span[1]])
    null_score = float(start_logits[0] + end_logits[0])
    return span if span_score + threshold > null_score else None


def null_from_start_only(start_logits, end_logits, context_mask, max_answer_length, threshold):
    span = answer_or_null(start_logits, end_logits, context_mask, max_answer_length, -1e9)
    span_score = float(start_logits[span[0]] + end_logits[span[1]])
    return span if span_score > float(start_logits[0]) + threshold else None


def null_never(start_logits, end_logits, context_mask, max_answer_length, threshold):
    return answer_or_null(start_logits, end_logits, context_mask, max_answer_length, -1e9)


def null_separate_argmax(start_logits, end_logits, context_mask, max_answer_length, threshold):
    start = int(start_logits.masked_fill(~context_mask, -1e9).argmax())
    end = int(end_logits.masked_fill(~context_mask, -1e9).argmax())
    span_score = float(start_logits[start] + end_logits[end])
    null_score = float(start_logits[0] + end_logits[0])
    return (start, end) if span_score > null_score + threshold else None


def null_spans_anywhere(start_logits, end_logits, context_mask, max_answer_length, threshold):
    everywhere = torch.ones_like(context_mask)
    return answer_or_null(start_logits, end_logits, everywhere, max_answer_length, threshold)


NULL_BUGS = [
    (null_margin_on_span_side, "null_score + threshold"),
    (null_from_start_only, "starts and ends at [CLS]"),
    (null_never, "return None"),
    (null_separate_argmax, "taken separately"),
    (null_spans_anywhere, "context tokens"),
]

# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_align_labels: (align_labels, ALIGN_BUGS),
    check_best_span: (span_search, SPAN_BUGS),
    check_align_every_subword: (align_every_subword, ALIGN_EVERY_BUGS),
    check_answer_or_null: (answer_or_null, NULL_BUGS),
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
        (check_answer_or_null, answer_or_null_by_best_span),
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
