"""Chapter 10, sentence pairs: [CLS] A [SEP] B [SEP] with truncation, segment ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._grading import Case, Mistake, Problem, _run_cases

__all__ = [
    "check_pair_encoding",
    "check_segment_ids",
]


def _pair_encoding(ids_a, ids_b, max_length, cls_id, sep_id):
    """[CLS] A [SEP] B [SEP] after longest-first truncation (BertTokenizer.truncate's rule)."""
    budget = max_length - 3
    a, b = list(ids_a), list(ids_b)
    if len(a) + len(b) > budget:
        shorter, longer = sorted((len(a), len(b)))
        keep_longer = shorter if shorter > budget else max(shorter, budget - shorter)
        keep_shorter = shorter
        if keep_shorter + keep_longer > budget:
            keep_shorter = budget // 2
            keep_longer = keep_shorter + budget % 2
        n_a, n_b = (keep_shorter, keep_longer) if len(a) <= len(b) else (keep_longer, keep_shorter)
        a, b = a[:n_a], b[:n_b]
    input_ids = [cls_id, *a, sep_id, *b, sep_id]
    return input_ids, [0] * (len(a) + 2) + [1] * (len(b) + 1)


def _pair_problem(expected: Any, answer: Any) -> Problem | None:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return Problem(
            [f"your function returned a {type(answer).__name__}, not (input_ids, token_type_ids)"],
            "return two lists: the input ids and the segment ids.",
        )
    ids, segments = (list(map(int, part)) for part in answer)
    expected_ids, expected_segments = expected
    if ids != expected_ids:
        return Problem(
            [
                f"input ids: expected {len(expected_ids)} ids {expected_ids[:12]}...",
                f"got {len(ids)} ids {ids[:12]}...",
            ],
        )
    if segments != expected_segments:
        return Problem(
            [f"segment ids: expected {expected_segments}", f"got {segments}"],
            "segment 0 is [CLS] A [SEP] (the first [SEP] included), segment 1 is B [SEP].",
        )
    return None


_CLS_ID, _SEP_ID = 101, 102


def _pair_case(description: str, length_a: int, length_b: int, max_length: int) -> Case:
    """A of 1000, 1001, ..., B of 2000, 2001, ..., and the reference encoding."""
    ids_a = list(range(1000, 1000 + length_a))
    ids_b = list(range(2000, 2000 + length_b))
    args = (ids_a, ids_b, max_length, _CLS_ID, _SEP_ID)
    return Case(description, args, _pair_encoding(*args))


def _pair_untruncated(a: list[int], b: list[int], c: int, s: int) -> tuple[list[int], list[int]]:
    """[CLS] A [SEP] B [SEP] and its segment ids, however long."""
    return [c, *a, s, *b, s], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def _pair_one_at_a_time(
    a: list[int], b: list[int], max_length: int, c: int, s: int
) -> tuple[list[int], list[int]]:
    """Truncation one token at a time from the longer side, from B on a tie (Google's rule)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_length - 3:
        (a if len(a) > len(b) else b).pop()
    return [c, *a, s, *b, s], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def _pair_cut_from_the_start(
    a: list[int], b: list[int], max_length: int, c: int, s: int
) -> tuple[list[int], list[int]]:
    """The reference truncation, but cutting tokens from the start of each side."""
    ids, segments = _pair_encoding(a[::-1], b[::-1], max_length, c, s)
    n_a = segments.count(0) - 2
    return [c, *ids[1 : 1 + n_a][::-1], s, *ids[2 + n_a : -1][::-1], s], segments


def _pair_middle_sep_in_b(
    a: list[int], b: list[int], max_length: int, c: int, s: int
) -> tuple[list[int], list[int]]:
    """The reference ids, with the first [SEP] counted in segment 1."""
    ids, segments = _pair_encoding(a, b, max_length, c, s)
    ones = len([x for x in segments if x])
    return ids, [0] * (len(ids) - ones - 1) + [1] * (ones + 1)


_PAIR_ENCODING_MISTAKES = [
    Mistake(
        "the pair is not truncated to max_length: cut the longer side first.",
        lambda a, b, m, c, s: _pair_untruncated(a, b, c, s),
    ),
    Mistake(
        "max_length counts the 3 special tokens too: the room for A and B is max_length - 3.",
        lambda a, b, m, c, s: _pair_encoding(a, b, m + 3, c, s),
    ),
    Mistake(
        "tokens are cut from the end of a sequence, not from its start.",
        _pair_cut_from_the_start,
    ),
    Mistake(
        "only B is truncated: longest-first cuts the longer side (and both when needed).",
        lambda a, b, m, c, s: _pair_untruncated(a, b[: max(0, m - 3 - len(a))], c, s),
    ),
    Mistake(
        "removing one token at a time from the longer side (as Google's original "
        "_truncate_seq_pair did) leaves an odd token to A; transformers' rule, the "
        "reference here, gives each side half of the room and the odd token to the longer "
        "one (to B when they tie).",
        _pair_one_at_a_time,
    ),
    Mistake("the first [SEP] belongs to segment 0: segment 1 is B [SEP].", _pair_middle_sep_in_b),
]


def check_pair_encoding(fn: Callable) -> bool:
    """Grade `fn(ids_a, ids_b, max_length, cls_id, sep_id)` -> (input_ids, token_type_ids).

    [CLS] A [SEP] B [SEP] with segment ids 0 for [CLS] A [SEP] and 1 for
    B [SEP]; if the pair does not fit in max_length (special tokens
    included), longest-first truncation from the end as the package's
    BertTokenizer.truncate (and transformers' tokenizers): the shorter side is
    kept whole when the longer one can take the rest, else each gets half of
    the room, the odd token to the longer one (to B on a tie).
    """
    cases = [
        _pair_case("A of 5 and B of 4 tokens, max_length 20 (fits)", 5, 4, 20),
        _pair_case("A of 30, B of 6, max_length 24: only A is cut", 30, 6, 24),
        _pair_case("A of 4, B of 40, max_length 20: only B is cut", 4, 40, 20),
        _pair_case("A of 20, B of 20, max_length 16: both cut, half each", 20, 20, 16),
        _pair_case("A of 9, B of 9, max_length 12 (room 9, odd): the odd token", 9, 9, 12),
        _pair_case("A of 30, B of 12, max_length 17 (both cut, B longer than half)", 30, 12, 17),
    ]
    return _run_cases(
        "check_pair_encoding",
        fn,
        cases,
        _pair_problem,
        _PAIR_ENCODING_MISTAKES,
        "print your ids for case 1 next to [CLS] A [SEP] B [SEP].",
    )


def _segment_ids(input_ids: torch.Tensor, sep_id: int, pad_id: int = 0) -> torch.Tensor:
    after_first_sep = ((input_ids == sep_id).cumsum(-1) - (input_ids == sep_id).long()) >= 1
    return (after_first_sep & (input_ids != pad_id)).long()


def _segment_problem(expected: torch.Tensor, answer: Any) -> Problem | None:
    if not isinstance(answer, torch.Tensor):
        return Problem(
            [f"your function returned a {type(answer).__name__}, not a tensor"],
            "return a LongTensor of the shape of input_ids.",
        )
    if answer.shape != expected.shape:
        return Problem([f"expected shape {tuple(expected.shape)}, got {tuple(answer.shape)}"])
    if not torch.equal(answer.long(), expected):
        row = int((answer.long() != expected).any(-1).nonzero()[0])
        return Problem(
            [f"row {row}: expected {expected[row].tolist()}", f"got {answer[row].long().tolist()}"]
        )
    return None


def check_segment_ids(fn: Callable) -> bool:
    """Grade `fn(input_ids, sep_id, pad_id)` -> token_type_ids for a padded batch of pairs.

    input_ids (B, T) hold [CLS] A [SEP] B [SEP] [PAD]...: segment 0 up to
    and including the first [SEP], 1 after it up to the second [SEP], and 0
    on padding (as transformers' tokenizers pad token_type_ids). A row with
    a single [SEP] (one text, no pair) is all 0.
    """
    cls_id, sep_id, pad_id = 101, 102, 0

    def row(length_a, length_b, total):
        ids = [cls_id, *range(1000, 1000 + length_a), sep_id]
        if length_b is not None:
            ids += [*range(2000, 2000 + length_b), sep_id]
        return ids + [pad_id] * (total - len(ids))

    def case(description, shapes, total):
        input_ids = torch.tensor([row(a, b, total) for a, b in shapes])
        return Case(
            description, (input_ids, sep_id, pad_id), _segment_ids(input_ids, sep_id, pad_id)
        )

    cases = [
        case("one pair, no padding", [(3, 4)], 10),
        case("three pairs of different lengths, padded", [(2, 3), (5, 1), (1, 1)], 12),
        case("a single text (one [SEP]) next to a pair", [(4, None), (2, 2)], 9),
        case("empty A and empty B", [(0, 0), (1, 0)], 6),
        case("long batch, mostly padding", [(6, 9), (1, 2), (3, 3), (2, 7)], 30),
    ]
    mistakes = [
        Mistake(
            "the first [SEP] closes segment A: it belongs to segment 0.",
            lambda x, s, p: (
                ((x == s).cumsum(-1) >= 1).long()
                * (x != p).long()
                * ((x == s).cumsum(-1) - (x == s).long() <= 1).long()
            ),
        ),
        Mistake(
            "padding gets segment 0 (transformers' tokenizers pad token_type_ids with 0).",
            lambda x, s, p: (((x == s).cumsum(-1) - (x == s).long()) >= 1).long(),
        ),
        Mistake(
            "every token is segment 0: B's tokens must be 1.", lambda x, s, p: torch.zeros_like(x)
        ),
        Mistake(
            "only the tokens of B are segment 1: its closing [SEP] belongs to B too.",
            lambda x, s, p: (
                (((x == s).cumsum(-1) - (x == s).long()) >= 1) & (x != s) & (x != p)
            ).long(),
        ),
    ]
    return _run_cases(
        "check_segment_ids",
        fn,
        cases,
        _segment_problem,
        mistakes,
        "write the segment id under each token of case 1 by hand.",
    )
