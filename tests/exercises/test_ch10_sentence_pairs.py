"""Chapter 10: the pair-encoding and segment-id checkers, their solutions and planted bugs."""

from __future__ import annotations

import pytest
import torch
from planted import PlantedBugs

from bertcourse.exercises import check_pair_encoding, check_segment_ids
from bertcourse.exercises.ch10_sentence_pairs import _segment_ids
from bertcourse.tokenization import BertTokenizer


def pair_encoding(ids_a, ids_b, max_length, cls_id, sep_id):
    a, b = list(ids_a), list(ids_b)
    room = max_length - 3
    if len(a) + len(b) > room:
        shorter = min(len(a), len(b))
        if shorter <= room // 2:
            keep = (shorter, room - shorter)
        else:
            keep = (room // 2, room - room // 2)
        n_a, n_b = keep if len(a) <= len(b) else keep[::-1]
        a, b = a[:n_a], b[:n_b]
    return [cls_id, *a, sep_id, *b, sep_id], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def pair_encoding_by_the_tokenizer(ids_a, ids_b, max_length, cls_id, sep_id):
    """Another correct answer: the package tokenizer's own truncation rule."""
    from bertcourse.tokenization import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained("minilm")
    a, b = tokenizer.truncate(list(ids_a), list(ids_b), max_length)
    return [cls_id, *a, sep_id, *b, sep_id], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def pair_not_truncated(ids_a, ids_b, max_length, cls_id, sep_id):
    return pair_encoding(ids_a, ids_b, 10**6, cls_id, sep_id)


def pair_budget_without_specials(ids_a, ids_b, max_length, cls_id, sep_id):
    return pair_encoding(ids_a, ids_b, max_length + 3, cls_id, sep_id)


def pair_cut_from_the_start(ids_a, ids_b, max_length, cls_id, sep_id):
    ids, segments = pair_encoding(ids_a[::-1], ids_b[::-1], max_length, cls_id, sep_id)
    n_a = segments.count(0) - 2
    a, b = ids[1 : 1 + n_a][::-1], ids[2 + n_a : -1][::-1]
    return [cls_id, *a, sep_id, *b, sep_id], segments


def pair_truncates_b_only(ids_a, ids_b, max_length, cls_id, sep_id):
    b = list(ids_b)[: max(0, max_length - 3 - len(ids_a))]
    return [cls_id, *ids_a, sep_id, *b, sep_id], [0] * (len(ids_a) + 2) + [1] * (len(b) + 1)


def pair_one_token_at_a_time(ids_a, ids_b, max_length, cls_id, sep_id):
    a, b = list(ids_a), list(ids_b)
    while len(a) + len(b) > max_length - 3:
        (a if len(a) > len(b) else b).pop()
    return [cls_id, *a, sep_id, *b, sep_id], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def pair_middle_sep_in_segment_b(ids_a, ids_b, max_length, cls_id, sep_id):
    ids, segments = pair_encoding(ids_a, ids_b, max_length, cls_id, sep_id)
    first_sep = ids.index(sep_id)
    segments[first_sep] = 1
    return ids, segments


def pair_all_segment_zero(ids_a, ids_b, max_length, cls_id, sep_id):
    ids, _ = pair_encoding(ids_a, ids_b, max_length, cls_id, sep_id)
    return ids, [0] * len(ids)


PAIR_BUGS = [
    (pair_not_truncated, "not truncated"),
    (pair_budget_without_specials, "3 special tokens"),
    (pair_cut_from_the_start, "from the end"),
    (pair_truncates_b_only, "only B is truncated"),
    (pair_one_token_at_a_time, "one token at a time"),
    (pair_middle_sep_in_segment_b, "first [SEP] belongs to segment 0"),
    (pair_all_segment_zero, "segment 1 is B [SEP]"),
]


def segment_ids(input_ids, sep_id, pad_id=0):
    segments = torch.zeros_like(input_ids)
    for row in range(input_ids.shape[0]):
        seps_seen = 0
        for position, token in enumerate(input_ids[row].tolist()):
            if token == pad_id:
                break
            segments[row, position] = 1 if seps_seen >= 1 else 0
            seps_seen += token == sep_id
    return segments


def segment_ids_by_cumsum(input_ids, sep_id, pad_id=0):
    is_sep = (input_ids == sep_id).long()
    return (((is_sep.cumsum(-1) - is_sep) >= 1) & (input_ids != pad_id)).long()


def segments_first_sep_in_b(input_ids, sep_id, pad_id=0):
    return (((input_ids == sep_id).cumsum(-1) >= 1) & (input_ids != pad_id)).long()


def segments_padding_in_b(input_ids, sep_id, pad_id=0):
    is_sep = (input_ids == sep_id).long()
    return ((is_sep.cumsum(-1) - is_sep) >= 1).long()


def segments_all_zero(input_ids, sep_id, pad_id=0):
    return torch.zeros_like(input_ids)


def segments_without_closing_sep(input_ids, sep_id, pad_id=0):
    return segment_ids_by_cumsum(input_ids, sep_id, pad_id) * (input_ids != sep_id).long()


def segments_as_list(input_ids, sep_id, pad_id=0):
    return segment_ids(input_ids, sep_id, pad_id).tolist()


SEGMENT_BUGS = [
    (segments_first_sep_in_b, "first [SEP] closes segment A"),
    (segments_padding_in_b, "padding gets segment 0"),
    (segments_all_zero, "B's tokens must be 1"),
    (segments_without_closing_sep, "closing [SEP] belongs to B"),
    (segments_as_list, "not a tensor"),
]


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_pair_encoding: (pair_encoding, PAIR_BUGS),
    check_segment_ids: (segment_ids, SEGMENT_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize(
    "solution", [pair_encoding, pair_encoding_by_the_tokenizer], ids=lambda f: f.__name__
)
def test_check_pair_encoding_passes_correct_encoders(solution, capsys):
    assert check_pair_encoding(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_pair_encoding: all 6 cases passed"


@pytest.mark.parametrize("solution", [segment_ids, segment_ids_by_cumsum], ids=lambda f: f.__name__)
def test_check_segment_ids_passes_correct_solutions(solution, capsys):
    assert check_segment_ids(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_segment_ids: all 5 cases passed"


def test_segment_ids_match_the_tokenizers():
    """The checker's reference equals the package tokenizer's segment ids on padded real pairs."""
    tokenizer = BertTokenizer.from_pretrained("minilm")
    encoded = tokenizer(
        ["A short one.", "Two sentences here"],
        ["And its pair, longer.", "B"],
        padding=True,
        return_tensors="pt",
    )
    torch.testing.assert_close(
        _segment_ids(encoded["input_ids"], tokenizer.sep_token_id, tokenizer.pad_token_id),
        encoded["token_type_ids"],
    )


@pytest.mark.parametrize(
    ("length_a", "length_b", "max_length"),
    [(9, 9, 12), (12, 30, 16), (30, 12, 16), (1, 1, 4), (20, 20, 16), (4, 40, 20)],
)
def test_pair_reference_truncates_as_transformers(length_a, length_b, max_length):
    """Odd rooms and ties included: the odd token goes to the longer side, to B on a tie."""
    transformers = pytest.importorskip("transformers")
    from bertcourse.exercises.ch10_sentence_pairs import _pair_encoding
    from bertcourse.hf import minilm_path

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    text_a, text_b = " ".join(["a"] * length_a), " ".join(["b"] * length_b)
    expected = hf_tokenizer(text_a, text_b, truncation="longest_first", max_length=max_length)
    ids_a = hf_tokenizer.convert_tokens_to_ids(["a"] * length_a)
    ids_b = hf_tokenizer.convert_tokens_to_ids(["b"] * length_b)
    ids, segments = _pair_encoding(
        ids_a, ids_b, max_length, hf_tokenizer.cls_token_id, hf_tokenizer.sep_token_id
    )
    assert ids == expected["input_ids"] and segments == expected["token_type_ids"]
