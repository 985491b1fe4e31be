"""Chapter 7: the NSP pair checker, its reference solution and the bugs planted in it."""

from __future__ import annotations

import pytest
from planted import PlantedBugs

from bertcourse.exercises import ExerciseFailed, check_hard_nsp_pairs, check_nsp_pairs


def nsp_pairs(
    documents,
    rng,
    max_tokens,
    *,
    not_next_from="other",
    is_next_b="next",
    swap_labels=False,
    truncate="longest",
    not_next_rate=0.5,
):
    """The chapter's simple pair builder, with switches that plant one bug each."""
    pairs = []
    for index, document in enumerate(documents):
        for position in range(len(document) - 1):
            tokens_a = list(document[position])
            if rng.random() >= not_next_rate:
                label = 0
                b = document[position + 1] if is_next_b == "next" else rng.choice(document)
            else:
                label = 1
                if not_next_from == "other":
                    other = rng.randrange(len(documents) - 1)
                    other += other >= index
                    b = rng.choice(documents[other])
                else:
                    b = rng.choice(document)
            tokens_b = list(b)
            if truncate == "longest":
                while len(tokens_a) + len(tokens_b) > max_tokens:
                    longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
                    del longer[0 if rng.random() < 0.5 else -1]  # either end, as the original
            elif truncate == "b_only":
                tokens_b = tokens_b[: max(0, max_tokens - len(tokens_a))]
            elif truncate == "a_only":
                tokens_a = tokens_a[: max(0, max_tokens - len(tokens_b))]
            if swap_labels:
                label = 1 - label
            pairs.append((tokens_a, tokens_b, label))
    return pairs


def nsp_pairs_by_sampling(documents, rng, max_tokens):
    """Another correct answer: labels drawn first, B from a shuffled list of other documents."""
    labels = {}
    for index, document in enumerate(documents):
        for position in range(len(document) - 1):
            labels[index, position] = int(rng.random() < 0.5)
    pairs = []
    for (index, position), label in labels.items():
        if label == 0:
            b = documents[index][position + 1]
        else:
            others = [d for d in range(len(documents)) if d != index]
            b = rng.choice(documents[rng.choice(others)])
        a, b = list(documents[index][position]), list(b)
        while len(a) + len(b) > max_tokens:
            (a if len(a) > len(b) else b).pop()
        pairs.append((a, b, label))
    return pairs[::-1]


def nsp_bug(name, **bug):
    def pairs(documents, rng, max_tokens):
        return nsp_pairs(documents, rng, max_tokens, **bug)

    pairs.__name__ = pairs.__qualname__ = name
    return pairs


def nsp_pairs_skip_last_document(documents, rng, max_tokens):
    return nsp_pairs(documents[:-1], rng, max_tokens)


NSP_PAIR_BUGS = [
    (nsp_bug("not_next_from_same_document", not_next_from="same"), "another document"),
    (nsp_bug("is_next_random_sentence", is_next_b="random"), "right after A"),
    (nsp_bug("labels_swapped", swap_labels=True), "labels are swapped"),
    (nsp_bug("no_truncation", truncate="none"), "truncate each pair"),
    (nsp_bug("always_is_next", not_next_rate=0.0), "fair coin"),
    (nsp_bug("b_truncated_to_what_is_left", truncate="b_only"), "is empty"),
    (nsp_bug("a_truncated_only", truncate="a_only"), "longer side"),
    (nsp_bug("mostly_not_next", not_next_rate=0.7), "expected 50%"),
    (nsp_pairs_skip_last_document, "one per sentence that has a next sentence"),
]


def hard_nsp_pairs(
    documents,
    rng,
    max_tokens,
    min_gap=3,
    *,
    gap_offset=0,
    forward_only=False,
    fallback=True,
    pick="random",
    swap_labels=False,
):
    """Exercise 2's builder (NotNext from A's own document), with switches that plant one bug each."""
    pairs = []
    for index, document in enumerate(documents):
        for position in range(len(document) - 1):
            tokens_a = list(document[position])
            if rng.random() < 0.5:
                tokens_b, label = list(document[position + 1]), 0
            else:
                gap = min_gap + gap_offset
                allowed = [
                    s
                    for s in range(len(document))
                    if abs(s - position) >= gap and (s > position or not forward_only)
                ]
                if allowed or not fallback:
                    chosen = {"random": rng.choice, "first": min, "last": max}[pick](allowed)
                    tokens_b = list(document[chosen])
                else:
                    other = rng.randrange(len(documents) - 1)
                    other += other >= index
                    tokens_b = list(rng.choice(documents[other]))
                label = 1
            while len(tokens_a) + len(tokens_b) > max_tokens:
                longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
                del longer[0 if rng.random() < 0.5 else -1]
            pairs.append((tokens_a, tokens_b, 1 - label if swap_labels else label))
    return pairs


def hard_nsp_pairs_by_distances(documents, rng, max_tokens, min_gap=3):
    """Another correct answer: the allowed sentences built from the two sides separately."""
    pairs = []
    for index, document in enumerate(documents):
        for position in range(len(document) - 1):
            a = list(document[position])
            if rng.random() >= 0.5:
                before = list(range(0, max(0, position - min_gap + 1)))
                after = list(range(position + min_gap, len(document)))
                if before + after:
                    b = list(document[rng.choice(before + after)])
                else:
                    others = [d for d in range(len(documents)) if d != index]
                    b = list(rng.choice(documents[rng.choice(others)]))
                label = 1
            else:
                b, label = list(document[position + 1]), 0
            while len(a) + len(b) > max_tokens:
                (a if len(a) > len(b) else b).pop()
            pairs.append((a, b, label))
    return pairs


def hard_bug(name, **bug):
    def pairs(documents, rng, max_tokens, min_gap=3):
        return hard_nsp_pairs(documents, rng, max_tokens, min_gap, **bug)

    pairs.__name__ = pairs.__qualname__ = name
    return pairs


def hard_nsp_pairs_from_other_documents(documents, rng, max_tokens, min_gap=3):
    """Exercise 1's pairs: a NotNext B always from another document."""
    return nsp_pairs(documents, rng, max_tokens)


def hard_nsp_pairs_any_other_sentence(documents, rng, max_tokens, min_gap=3):
    """A NotNext B from anywhere in A's document but A itself and its successor."""
    return hard_nsp_pairs(documents, rng, max_tokens, min_gap=2)


HARD_NSP_BUGS = [
    (hard_bug("gap_too_small", gap_offset=-1), "off by one"),
    (hard_bug("gap_too_large", gap_offset=1), "whenever it has a sentence"),
    (hard_bug("looks_forward_only", forward_only=True), "both directions"),
    (hard_bug("no_fallback", fallback=False), "Fall back"),
    (hard_bug("always_nearest_allowed", pick="first"), "at random"),
    (hard_bug("labels_swapped", swap_labels=True), "labels are swapped"),
    (hard_nsp_pairs_from_other_documents, "whenever it has a sentence"),
    (hard_nsp_pairs_any_other_sentence, "off by one"),
]


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_nsp_pairs: (nsp_pairs, NSP_PAIR_BUGS),
    check_hard_nsp_pairs: (hard_nsp_pairs, HARD_NSP_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize("solution", [nsp_pairs, nsp_pairs_by_sampling], ids=lambda f: f.__name__)
def test_check_nsp_pairs_passes_correct_builders(solution, capsys):
    assert check_nsp_pairs(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_nsp_pairs: all 5 cases passed"


def test_check_nsp_pairs_gives_each_call_a_fresh_rng():
    calls = []

    def records_first_draw(documents, rng, max_tokens):
        calls.append(rng.random())
        return nsp_pairs(documents, rng, max_tokens)

    check_nsp_pairs(records_first_draw)
    assert len(calls) == 5 and len(set(calls)) == 5  # one seeded Random per case, not shared


def test_check_nsp_pairs_reports_stubs_and_odd_answers():
    def my_nsp_pairs(documents, rng, max_tokens):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="^Not implemented yet: .* in my_nsp_pairs with"):
        check_nsp_pairs(my_nsp_pairs)
    with pytest.raises(ExerciseFailed, match="list of \\(tokens_a, tokens_b, label\\) tuples"):
        check_nsp_pairs(lambda documents, rng, max_tokens: None)
    with pytest.raises(ExerciseFailed, match="labels are the ints 0 and 1"):
        check_nsp_pairs(
            lambda documents, rng, max_tokens: [
                (a, b, "IsNext") for a, b, _ in nsp_pairs(documents, rng, max_tokens)
            ]
        )
    with pytest.raises(ExerciseFailed, match="expects your function itself"):
        check_nsp_pairs(None)


@pytest.mark.parametrize(
    "solution", [hard_nsp_pairs, hard_nsp_pairs_by_distances], ids=lambda f: f.__name__
)
def test_check_hard_nsp_pairs_passes_correct_builders(solution, capsys):
    assert check_hard_nsp_pairs(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_hard_nsp_pairs: all 5 cases passed"


def test_check_hard_nsp_pairs_names_the_line_of_an_empty_choice():
    with pytest.raises(ExerciseFailed) as failure:
        check_hard_nsp_pairs(hard_bug("no_fallback", fallback=False))
    assert "case 2 of 5" in failure.value.message
    assert "raised IndexError" in failure.value.message
