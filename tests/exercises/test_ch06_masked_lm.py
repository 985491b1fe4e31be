"""Chapter 6: the masking checker, its reference solution and the bugs planted in it."""

from __future__ import annotations

import pytest
import torch
from planted import PlantedBugs

from bertcourse.data import mask_tokens as package_mask_tokens
from bertcourse.exercises import ExerciseFailed, check_mask_tokens, check_whole_word_mask


def mask_tokens(
    input_ids,
    special_tokens_mask,
    vocab_size,
    mask_token_id,
    mlm_probability=0.15,
    generator=None,
    *,
    fixed_probability=None,
    exclude_specials=True,
    invert_with_tilde=False,
    label_everything=False,
    mask_share=0.8,
    random_share=0.1,
    corrupt_unchosen=False,
    random_vocab_size=None,
    labels_from_inputs=False,
    use_generator=True,
):
    """The chapter's masking, with switches that plant one bug each."""
    generator = generator if use_generator else None
    probability = fixed_probability or mlm_probability
    shape = input_ids.shape
    chosen = torch.rand(shape, generator=generator) < probability  # (B, T)
    if invert_with_tilde:  # on 0/1 integers ~ gives -1/-2, both nonzero: nothing is excluded
        chosen &= (~special_tokens_mask) != 0
    elif exclude_specials:
        chosen &= ~special_tokens_mask.bool()
    action = torch.rand(shape, generator=generator)  # (B, T)
    to_mask = chosen & (action < mask_share)
    to_random = (action >= mask_share) & (action < mask_share + random_share)
    if not corrupt_unchosen:
        to_random &= chosen
    random_ids = torch.randint(random_vocab_size or vocab_size, shape, generator=generator)
    inputs = input_ids.masked_fill(to_mask, mask_token_id)
    inputs = torch.where(to_random, random_ids, inputs)
    source = inputs if labels_from_inputs else input_ids
    labels = source.clone() if label_everything else source.masked_fill(~chosen, -100)
    return inputs, labels


def mask_tokens_conditional(
    input_ids, special_tokens_mask, vocab_size, mask_token_id, mlm_probability=0.15, generator=None
):
    """The transformers recipe: Bernoulli draws, [MASK] with 0.8, then random with 0.1 / 0.2."""
    probabilities = torch.full(input_ids.shape, mlm_probability)
    probabilities.masked_fill_(special_tokens_mask.bool(), 0.0)
    chosen = torch.bernoulli(probabilities, generator=generator).bool()
    to_mask = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool()
    to_mask &= chosen
    to_random = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
    to_random &= chosen & ~to_mask
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    inputs = input_ids.masked_fill(to_mask, mask_token_id)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, input_ids.masked_fill(~chosen, -100)


def masking_bug(name, **bug):
    """mask_tokens with one bug planted, under a name that says which."""

    def masking(
        input_ids,
        special_tokens_mask,
        vocab_size,
        mask_token_id,
        mlm_probability=0.15,
        generator=None,
    ):
        return mask_tokens(
            input_ids,
            special_tokens_mask,
            vocab_size,
            mask_token_id,
            mlm_probability,
            generator,
            **bug,
        )

    masking.__name__ = masking.__qualname__ = name
    return masking


MASKING_BUGS = [
    (masking_bug("chooses_specials", exclude_specials=False), "special_tokens_mask is True"),
    (masking_bug("labels_everywhere", label_everything=True), "-100 wherever"),
    (masking_bug("always_mask", mask_share=1.0, random_share=0.0), "80% become [MASK]"),
    (masking_bug("half_of_the_tokens", fixed_probability=0.5), "probability mlm_probability"),
    (masking_bug("ignores_mlm_probability", fixed_probability=0.15), "mlm_probability argument"),
    (masking_bug("random_ids_everywhere", corrupt_unchosen=True), "only chosen tokens may change"),
    (masking_bug("labels_from_corrupted_inputs", labels_from_inputs=True), "original token id"),
    (masking_bug("ignores_generator", use_generator=False), "`generator` argument"),
    (masking_bug("random_ids_from_five", random_vocab_size=5), "uniformly from the whole vocab"),
    (masking_bug("int_mask_inverted", invert_with_tilde=True), ".bool()"),
]


def mask_whole_words(
    input_ids,
    special_tokens_mask,
    word_starts,
    vocab_size,
    mask_token_id,
    mlm_probability=0.15,
    generator=None,
    *,
    words="cumsum",
    fixed_probability=None,
    exclude_specials=True,
    labels_from_inputs=False,
    use_generator=True,
):
    """Whole-word masking as the exercise asks for it, with switches that plant one bug each."""
    generator = generator if use_generator else None
    probability = fixed_probability or mlm_probability
    special = special_tokens_mask.bool()
    shape = input_ids.shape
    starts = (word_starts | special).long()
    word_ids = starts.cumsum(dim=1) - 1  # (B, T): 0, 1, ... per row
    if words == "exclusive_cumsum":  # a word's first piece numbered with the word before it
        word_ids = (word_ids + 1 - starts).clamp(max=shape[1] - 1)
    draws = torch.rand(shape, generator=generator)  # (B, T): one per word id
    if words in ("cumsum", "exclusive_cumsum"):
        chosen = draws.gather(1, word_ids) < probability
    elif words == "per_token":  # word_starts ignored
        chosen = draws < probability
    elif words == "first_piece_only":  # the word's first piece, without the rest of the word
        chosen = (draws < probability) & word_starts
    elif words in ("any_piece", "all_pieces"):  # a word chosen if any / all of its pieces draw low
        low = (draws < probability).long()
        per_word = torch.zeros(shape, dtype=torch.long).scatter_add_(1, word_ids, low)
        size = torch.zeros(shape, dtype=torch.long).scatter_add_(1, word_ids, torch.ones_like(low))
        chosen_word = per_word > 0 if words == "any_piece" else per_word == size
        chosen = chosen_word.gather(1, word_ids)
    if exclude_specials:
        chosen &= ~special
    action = torch.rand(shape, generator=generator)  # (B, T): each piece on its own
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    random_ids = torch.randint(vocab_size, shape, generator=generator)
    inputs = torch.where(to_random, random_ids, input_ids.masked_fill(to_mask, mask_token_id))
    source = inputs if labels_from_inputs else input_ids
    return inputs, source.masked_fill(~chosen, -100)


def package_whole_word_mask(
    input_ids,
    special_tokens_mask,
    word_starts,
    vocab_size,
    mask_token_id,
    mlm_probability=0.15,
    generator=None,
):
    """bertcourse.data.mask_tokens with word_starts: a running maximum over word starts."""
    return package_mask_tokens(
        input_ids,
        special_tokens_mask,
        vocab_size,
        mask_token_id,
        mlm_probability,
        generator,
        word_starts=word_starts,
    )


def whole_word_bug(name, **bug):
    """mask_whole_words with one bug planted, under a name that says which."""

    def masking(
        input_ids,
        special_tokens_mask,
        word_starts,
        vocab_size,
        mask_token_id,
        mlm_probability=0.15,
        generator=None,
    ):
        return mask_whole_words(
            input_ids,
            special_tokens_mask,
            word_starts,
            vocab_size,
            mask_token_id,
            mlm_probability,
            generator,
            **bug,
        )

    masking.__name__ = masking.__qualname__ = name
    return masking


WHOLE_WORD_BUGS = [
    (whole_word_bug("draws_per_token", words="per_token"), "once per word"),
    (whole_word_bug("first_piece_only", words="first_piece_only"), "not only its first piece"),
    (whole_word_bug("word_numbers_off_by_one", words="exclusive_cumsum"), "how you number"),
    (whole_word_bug("any_piece_chooses_the_word", words="any_piece"), "any of its pieces"),
    (whole_word_bug("all_pieces_must_draw_low", words="all_pieces"), "all of its pieces"),
    (whole_word_bug("ignores_mlm_probability", fixed_probability=0.15), "mlm_probability argument"),
    (whole_word_bug("chooses_specials", exclude_specials=False), "special_tokens_mask is True"),
    (whole_word_bug("labels_from_corrupted_inputs", labels_from_inputs=True), "original token id"),
    (whole_word_bug("ignores_generator", use_generator=False), "`generator` argument"),
]


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_mask_tokens: (mask_tokens, MASKING_BUGS),
    check_whole_word_mask: (mask_whole_words, WHOLE_WORD_BUGS),
}


class TestPlantedBugs(PlantedBugs):
    planted = PLANTED


@pytest.mark.parametrize(
    "solution",
    [mask_tokens, mask_tokens_conditional, package_mask_tokens],
    ids=lambda f: f.__name__,
)
def test_check_mask_tokens_passes_correct_masking(solution, capsys):
    assert check_mask_tokens(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_mask_tokens: all 6 cases passed"


def test_check_mask_tokens_reports_stubs_and_odd_answers():
    def my_mask_tokens(
        input_ids,
        special_tokens_mask,
        vocab_size,
        mask_token_id,
        mlm_probability=0.15,
        generator=None,
    ):
        raise NotImplementedError

    with pytest.raises(ExerciseFailed, match="^Not implemented yet: .* in my_mask_tokens with"):
        check_mask_tokens(my_mask_tokens)

    def returns_one_tensor(
        input_ids,
        special_tokens_mask,
        vocab_size,
        mask_token_id,
        mlm_probability=0.15,
        generator=None,
    ):
        return input_ids

    with pytest.raises(ExerciseFailed, match="expected a pair"):
        check_mask_tokens(returns_one_tensor)
    with pytest.raises(ExerciseFailed, match="expects your function itself"):
        check_mask_tokens(None)


def test_check_mask_tokens_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    with pytest.raises(ExerciseFailed):
        check_mask_tokens(masking_bug("ignores_generator", use_generator=False))
    check_mask_tokens(mask_tokens)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize(
    "solution", [mask_whole_words, package_whole_word_mask], ids=lambda f: f.__name__
)
def test_check_whole_word_mask_passes_correct_masking(solution, capsys):
    assert check_whole_word_mask(solution) is True
    assert capsys.readouterr().out.strip() == "✓ check_whole_word_mask: all 6 cases passed"


def test_check_whole_word_mask_rejects_token_level_masking():
    def token_level(
        input_ids,
        special_tokens_mask,
        word_starts,
        vocab_size,
        mask_token_id,
        mlm_probability=0.15,
        generator=None,
    ):
        return mask_tokens(
            input_ids, special_tokens_mask, vocab_size, mask_token_id, mlm_probability, generator
        )

    with pytest.raises(ExerciseFailed, match="only partly chosen"):
        check_whole_word_mask(token_level)


def test_check_whole_word_mask_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    check_whole_word_mask(mask_whole_words)
    assert torch.equal(torch.random.get_rng_state(), state)
