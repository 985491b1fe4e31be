"""Chapter 1: the WordPiece checker, its reference solution and the bugs planted in it."""

from __future__ import annotations

from planted import PlantedBugs

from bertcourse.exercises import check_wordpiece


def wordpiece(
    word,
    vocab,
    unk_token="[UNK]",
    max_input_chars_per_word=100,
    *,
    longest=True,
    prefix="##",
    prefix_first=False,
    partial_unk=False,
    too_long=lambda n, m: n > m,
    unk=None,
):
    unk = unk or unk_token
    if too_long(len(word), max_input_chars_per_word):
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        ends = range(len(word), start, -1) if longest else range(start + 1, len(word) + 1)
        for end in ends:
            piece = word[start:end]
            if start > 0 or prefix_first:
                piece = prefix + piece
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            if not partial_unk:
                return [unk]
            pieces.append(unk)
            start += 1
    return pieces


def wordpiece_shortest_first(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, longest=False)


def wordpiece_no_prefix(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, prefix="")


def wordpiece_prefix_on_first(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, prefix_first=True)


def wordpiece_partial_unknown(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, partial_unk=True)


def wordpiece_no_length_limit(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, too_long=lambda n, m: False)


def wordpiece_limit_off_by_one(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, too_long=lambda n, m: n >= m)


def wordpiece_hard_coded_unk(word, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
    return wordpiece(word, vocab, unk_token, max_input_chars_per_word, unk="[UNK]")


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_wordpiece: (
        wordpiece,
        [
            (wordpiece_shortest_first, "longest"),
            (wordpiece_no_prefix, '"##" prefix'),
            (wordpiece_prefix_on_first, "only continuation"),
            (wordpiece_partial_unknown, "whole word"),
            (wordpiece_no_length_limit, "longer than"),
            (wordpiece_limit_off_by_one, "exactly"),
            (wordpiece_hard_coded_unk, "unk_token argument"),
        ],
    ),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED
