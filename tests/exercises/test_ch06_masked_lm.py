"""Chapter 6: the masking checker, its reference solution and the bugs planted in it."""

from __future__ import annotations

import pytest
import torch
from planted import PlantedBugs

from bertcourse.data import mask_tokens as package_mask_tokens
from bertcourse.exercises import ExerciseFailed, check_mask_tokens


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


# checker -> (reference solution, [(planted bug, word its hint must contain), ...])
PLANTED = {
    check_mask_tokens: (mask_tokens, MASKING_BUGS),
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
