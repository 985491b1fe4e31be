"""MLM masking and NSP pairs follow the BERT recipe, checked statistically on real text."""

import functools

import pytest
import torch
import transformers

from bertcourse.data import (
    PretrainingCollator,
    continuation_table,
    create_mlm_examples,
    create_nsp_examples,
    mask_tokens,
    offline_corpus,
    special_tokens_mask,
)
from bertcourse.hf import minilm_path
from bertcourse.tokenization import BertTokenizer


@functools.cache
def tokenizer():
    return BertTokenizer.from_pretrained("minilm")


@functools.cache
def corpus_batch(rows: int = 9_000, length: int = 128) -> torch.Tensor:
    """Over 1M token ids of real text as (rows, length): [CLS] ... [SEP] and some padding."""
    ids = [
        i for s in offline_corpus("all").sentences() for i in tokenizer().encode(s)[1:-1]
    ]  # ~313k ids
    stream = torch.tensor(ids).repeat(rows * length // len(ids) + 1)[: rows * (length - 2)]
    batch = stream.view(rows, length - 2)
    cls = torch.full((rows, 1), tokenizer().cls_token_id)
    sep = torch.full((rows, 1), tokenizer().sep_token_id)
    batch = torch.cat([cls, batch, sep], dim=1)
    batch[::7, 100:] = tokenizer().pad_token_id  # every 7th row padded after 100 tokens
    return batch


def masking_rates(original, inputs, labels, special):
    chosen = labels != -100
    candidates = ~special
    as_mask = chosen & (inputs == tokenizer().mask_token_id)
    kept = chosen & (inputs == original)
    randomised = chosen & ~as_mask & ~kept
    n = chosen.sum().item()
    return {
        "chosen": n / candidates.sum().item(),
        "mask": as_mask.sum().item() / n,
        "random": randomised.sum().item() / n,
        "kept": kept.sum().item() / n,
    }


def test_masking_rates_on_a_million_tokens():
    batch = corpus_batch()
    assert batch.numel() >= 1_000_000
    special = special_tokens_mask(batch, tokenizer().all_special_ids)
    generator = torch.Generator().manual_seed(0)
    inputs, labels = mask_tokens(
        batch, special, tokenizer().vocab_size, tokenizer().mask_token_id, generator=generator
    )
    rates = masking_rates(batch, inputs, labels, special)
    assert abs(rates["chosen"] - 0.15) < 0.003, rates
    assert abs(rates["mask"] - 0.80) < 0.01, rates
    assert abs(rates["random"] - 0.10) < 0.01, rates
    assert abs(rates["kept"] - 0.10) < 0.01, rates
    # special tokens and padding: never chosen, never changed
    assert (labels[special] == -100).all()
    assert torch.equal(inputs[special], batch[special])
    # labels hold the original token wherever something is predicted
    chosen = labels != -100
    assert torch.equal(labels[chosen], batch[chosen])


def test_rates_agree_with_transformers_collator():
    batch = corpus_batch()[:4_000]
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    collator = transformers.DataCollatorForLanguageModeling(
        reference_tokenizer, mlm=True, mlm_probability=0.15, return_tensors="pt"
    )
    torch.manual_seed(0)
    reference = collator([{"input_ids": row.tolist()} for row in batch])
    special = special_tokens_mask(batch, tokenizer().all_special_ids)
    theirs = masking_rates(batch, reference["input_ids"], reference["labels"], special)
    inputs, labels = mask_tokens(
        batch,
        special,
        tokenizer().vocab_size,
        tokenizer().mask_token_id,
        generator=torch.Generator().manual_seed(1),
    )
    ours = masking_rates(batch, inputs, labels, special)
    assert abs(ours["chosen"] - theirs["chosen"]) < 0.003, (ours, theirs)
    for key in ("mask", "random", "kept"):
        assert abs(ours[key] - theirs[key]) < 0.01, (key, ours, theirs)


def test_whole_word_masking_keeps_words_together():
    batch = corpus_batch()[:2_000]
    special = special_tokens_mask(batch, tokenizer().all_special_ids)
    continuation = continuation_table(tokenizer())[batch]
    inputs, labels = mask_tokens(
        batch,
        special,
        tokenizer().vocab_size,
        tokenizer().mask_token_id,
        generator=torch.Generator().manual_seed(0),
        word_starts=~continuation,
    )
    chosen = labels != -100
    # a "##" piece is chosen exactly when the piece before it is (same word), unless that is special
    follows_word = continuation[:, 1:] & ~special[:, :-1] & ~special[:, 1:]
    assert torch.equal(chosen[:, 1:][follows_word], chosen[:, :-1][follows_word])
    assert follows_word.sum() > 10_000  # the corpus has many multi-piece words
    word_starts = ~continuation & ~special
    word_rate = chosen[word_starts].float().mean().item()
    assert abs(word_rate - 0.15) < 0.005
    assert (labels[special] == -100).all()


def test_mask_tokens_errors_and_reproducibility():
    batch = corpus_batch()[:10]
    special = special_tokens_mask(batch, tokenizer().all_special_ids)
    with pytest.raises(ValueError, match="probability"):
        mask_tokens(batch, special, 100, 103, mlm_probability=1.5)
    with pytest.raises(ValueError, match="must have the shape"):
        mask_tokens(batch, special[:, :5], 100, 103)
    a = mask_tokens(batch, special, 30522, 103, generator=torch.Generator().manual_seed(3))
    b = mask_tokens(batch, special, 30522, 103, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@functools.cache
def nsp_examples(max_seq_length=128):
    return create_nsp_examples(
        offline_corpus("train"), tokenizer(), max_seq_length=max_seq_length, dupe_factor=10, seed=0
    )


def test_nsp_pairs_are_half_is_next_and_not_next_comes_from_another_document():
    examples = nsp_examples()
    assert len(examples) > 25_000
    is_next = [e for e in examples if e["next_sentence_label"] == 0]
    not_next = [e for e in examples if e["next_sentence_label"] == 1]
    rate = len(is_next) / len(examples)
    assert abs(rate - 0.5) < 0.01, rate
    assert all(e["b_document"] != e["document"] for e in not_next)
    # IsNext: B continues A in the same document (the next sentence, or the rest of one cut sentence)
    assert all(e["b_document"] == e["document"] for e in is_next)
    assert all(
        e["b_sentences"][0] in (e["a_sentences"][-1], e["a_sentences"][-1] + 1) for e in is_next
    )


def test_nsp_example_layout_and_length():
    tok = tokenizer()
    for max_seq_length in (32, 128):
        for example in nsp_examples(max_seq_length)[:3_000]:
            ids, types = example["input_ids"], example["token_type_ids"]
            assert len(ids) == len(types) <= max_seq_length
            assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
            first_sep = ids.index(tok.sep_token_id)
            assert ids.count(tok.sep_token_id) == 2 and first_sep < len(ids) - 1
            assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    lengths = [len(e["input_ids"]) for e in nsp_examples()]
    short = sum(n < 64 for n in lengths) / len(lengths)
    assert 0.03 < short < 0.4  # short_seq_prob=0.1 makes some inputs deliberately short


def test_nsp_needs_two_documents():
    with pytest.raises(ValueError, match="at least two"):
        create_nsp_examples([["Only one document here.", "With two sentences."]], tokenizer())


def test_mlm_examples_pack_one_document_each():
    examples = create_mlm_examples(offline_corpus("validation"), tokenizer(), max_seq_length=64)
    assert all(len(e["input_ids"]) <= 64 for e in examples)
    assert all(e["token_type_ids"] == [0] * len(e["input_ids"]) for e in examples)
    assert all(e["input_ids"].count(tokenizer().sep_token_id) == 1 for e in examples)
    mean_length = sum(len(e["input_ids"]) for e in examples) / len(examples)
    assert mean_length > 40  # windows are filled, not one sentence each


def test_collator_pads_per_batch_and_masks():
    examples = nsp_examples()[:16]
    collator = PretrainingCollator(tokenizer(), seed=0)
    batch = collator(examples)
    longest = max(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape == (16, longest)
    lengths = torch.tensor([len(e["input_ids"]) for e in examples])
    assert torch.equal(batch["attention_mask"].sum(1), lengths)
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert (batch["labels"] != -100).any()
    assert torch.equal(
        batch["next_sentence_label"], torch.tensor([e["next_sentence_label"] for e in examples])
    )
    again = PretrainingCollator(tokenizer(), seed=0)(examples)
    assert torch.equal(again["input_ids"], batch["input_ids"])
    other = collator(examples, generator=torch.Generator().manual_seed(99))
    assert not torch.equal(other["labels"], batch["labels"])
    with pytest.raises(ValueError, match="empty"):
        collator([])
