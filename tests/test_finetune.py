"""Fine-tuning: batches, label alignment, QA windows and spans, the engine's additions, the CLI."""

from __future__ import annotations

import csv
import json
import random
import shutil

import numpy as np
import pytest
import torch
import transformers

from bertcourse import BertConfig, BertForSequenceClassification, BertForTokenClassification
from bertcourse.commands import finetune
from bertcourse.data import LabelledData, QAExample
from bertcourse.finetune import (
    IGNORE_INDEX,
    PaddingCollator,
    align_word_labels,
    best_span,
    decode_answers,
    encode_classification,
    encode_tagged,
    load_for_task,
    predict_logits,
    prepare_qa_features,
    word_predictions,
)
from bertcourse.hf import minilm_path
from bertcourse.tokenization import BertTokenizer
from bertcourse.training import (
    LengthGroupedEpochSampler,
    TrainingArguments,
    read_best,
    train,
)
from bertcourse.viz import read_training_log


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_pretrained("minilm")


@pytest.fixture(scope="module")
def hf_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(str(minilm_path()))


# -- batches -----------------------------------------------------------------------------


def test_padding_collator_pads_each_field_with_its_own_value():
    examples = [
        {
            "input_ids": [101, 7, 102],
            "token_type_ids": [0, 0, 0],
            "attention_mask": [1, 1, 1],
            "labels": [IGNORE_INDEX, 3, IGNORE_INDEX],
            "word_ids": [None, 0, None],
        },
        {
            "input_ids": [101, 102],
            "token_type_ids": [0, 0],
            "attention_mask": [1, 1],
            "labels": [IGNORE_INDEX, IGNORE_INDEX],
            "word_ids": [None, None],
        },
    ]
    batch = PaddingCollator(pad_token_id=5)(examples)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 5]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist()[1] == [IGNORE_INDEX] * 3
    regression = PaddingCollator()(
        [{"input_ids": [1], "labels": 0.5}, {"input_ids": [1, 2], "labels": 2.0}]
    )
    assert regression["labels"].dtype == torch.float32
    assert regression["input_ids"].tolist() == [[1, 0], [1, 2]]
    with pytest.raises(KeyError, match="input_ids"):
        PaddingCollator()([{"labels": 1}])


def test_encode_classification_equals_transformers_tokenizer(tokenizer, hf_tokenizer):
    data = LabelledData(
        ["A short one.", "Une phrase accentuée, longer than the first " * 10],
        [0, 1],
        ["no", "yes"],
        pairs=["With a pair.", "And another pair"],
    )
    examples = encode_classification(data, tokenizer, max_length=32)
    expected = hf_tokenizer(data.texts, data.pairs, truncation=True, max_length=32)
    for i, example in enumerate(examples):
        assert example["input_ids"] == expected["input_ids"][i]
        assert example["token_type_ids"] == expected["token_type_ids"][i]
        assert example["labels"] == data.labels[i]
    with pytest.raises(ValueError, match="no examples"):
        encode_classification(LabelledData([], [], ["a"], name="empty"), tokenizer)


# -- length-grouped batches -----------------------------------------------------------


def test_length_grouped_sampler_is_a_seeded_permutation_with_little_padding():
    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(1000)]
    sampler = LengthGroupedEpochSampler(lengths, batch_size=16, seed=3, mega_batches=8)
    first = list(sampler)
    assert sorted(index for index, _, _ in first) == list(range(1000))
    assert [position for _, _, position in first] == list(range(1000))
    assert list(LengthGroupedEpochSampler(lengths, 16, seed=3, mega_batches=8)) == first
    sampler.set_epoch(1)
    assert [index for index, _, _ in sampler] != [index for index, _, _ in first]

    def padding(order):
        batches = [order[i : i + 16] for i in range(0, len(order) - len(order) % 16, 16)]
        return sum(
            max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches
        )

    grouped = padding([index for index, _, _ in first])
    shuffled = padding(torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist())
    assert grouped < 0.2 * shuffled, (grouped, shuffled)


# -- token classification -------------------------------------------------------------


def test_word_labels_go_to_the_first_sub_word():
    assert align_word_labels([None, 0, 1, 1, 2, None], [4, 5, 6]) == [
        IGNORE_INDEX,
        4,
        5,
        IGNORE_INDEX,
        6,
        IGNORE_INDEX,
    ]
    assert align_word_labels([None, 0, 0, None], [7], label_all_subwords=True) == [
        IGNORE_INDEX,
        7,
        7,
        IGNORE_INDEX,
    ]
    # B-X (1) on a word's later pieces becomes I-X (2); other labels repeat.
    assert align_word_labels(
        [None, 0, 0, 0, 1, 1, None], [1, 0], label_all_subwords=True, inside_of={1: 2}
    ) == [IGNORE_INDEX, 1, 2, 2, 0, 0, IGNORE_INDEX]
    with pytest.raises(ValueError, match="one label per word"):
        align_word_labels([None, 0, 1, None], [1])


def test_encode_tagged_equals_transformers_word_ids(tokenizer, hf_tokenizer):
    sentences = [
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        ["Peter", "Blackburn", "visited", "U.S.", "headquarters", "(", "Zürich", ")"],
        ["unbelievably", "tokenizable", "words", "like", "ValueError", "and", "os.path.join()"],
    ]
    tags = [[(3 * i + j) % 5 for j in range(len(words))] for i, words in enumerate(sentences)]
    examples = encode_tagged(sentences, tags, tokenizer, max_length=64)
    for words, word_tags, example in zip(sentences, tags, examples, strict=True):
        expected = hf_tokenizer(words, is_split_into_words=True, truncation=True, max_length=64)
        assert example["input_ids"] == expected["input_ids"]
        assert example["word_ids"] == expected.word_ids()
        assert example["labels"] == align_word_labels(expected.word_ids(), word_tags)
        assert word_predictions(example["labels"], example["word_ids"], len(words)) == word_tags
    truncated = encode_tagged(sentences[:1], tags[:1], tokenizer, max_length=6)[0]
    assert word_predictions(truncated["labels"], truncated["word_ids"], 9)[-1] == -1
    with pytest.raises(ValueError, match="9 words but 2 tags"):
        encode_tagged(sentences[:1], [[0, 1]], tokenizer)


# -- question answering --------------------------------------------------------------


CONTEXT = (
    "The json module can serialize Python objects. It was added in Python 2.6. "
    "Its loads function parses a string and raises JSONDecodeError on bad input. "
) * 3


def test_qa_windows_equal_transformers_overflowing_tokens(tokenizer, hf_tokenizer):
    question = "What does loads raise on bad input?"
    answer_start = CONTEXT.index("JSONDecodeError", 100)
    example = QAExample("q1", question, CONTEXT, [("JSONDecodeError", answer_start)])
    features = prepare_qa_features([example], tokenizer, max_length=48, stride=16)
    expected = hf_tokenizer(
        question,
        CONTEXT,
        truncation="only_second",
        max_length=48,
        stride=16,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    assert len(features) == len(expected["input_ids"]) > 2
    for i, feature in enumerate(features):
        assert feature["input_ids"] == expected["input_ids"][i]
        assert feature["token_type_ids"] == expected["token_type_ids"][i]
        sequence_ids = expected.sequence_ids(i)
        hf_offsets = [
            tuple(o) if s == 1 else None
            for o, s in zip(expected["offset_mapping"][i], sequence_ids, strict=True)
        ]
        assert feature["context_offsets"] == hf_offsets
        start, end = feature["start_positions"], feature["end_positions"]
        if start:
            assert CONTEXT[hf_offsets[start][0] : hf_offsets[end][1]] == "JSONDecodeError"
        else:  # the answer is not wholly inside this window
            inside = [o for o in hf_offsets if o is not None]
            assert inside[0][0] > answer_start or inside[-1][1] < answer_start + len(
                "JSONDecodeError"
            )
    assert any(f["start_positions"] for f in features)


def test_short_context_and_too_small_windows(tokenizer):
    short = QAExample(
        "q", "A question much longer than its context, is it not?", "Yes.", [("Yes", 0)]
    )
    (feature,) = prepare_qa_features([short], tokenizer)
    assert (
        tokenizer.decode(
            feature["input_ids"][feature["start_positions"] : feature["end_positions"] + 1]
        )
        == "yes"
    )
    with pytest.raises(ValueError, match="raise max_length or lower stride"):
        prepare_qa_features([short], tokenizer, max_length=32, stride=20)
    with pytest.raises(ValueError, match="not at character"):
        QAExample("bad", "q", "context", [("text", 0)])


@pytest.mark.parametrize("seed", range(10))
def test_best_span_equals_transformers_span_decoding(seed):
    from transformers.pipelines.document_question_answering import select_starts_ends

    generator = torch.Generator().manual_seed(seed)
    length = 40
    start_logits, end_logits = torch.randn(2, length, generator=generator) * 3
    context_mask = torch.zeros(length, dtype=torch.bool)
    context_mask[12 : 12 + 20 + seed] = True
    p_mask = (~context_mask).long().numpy()[None]
    starts, ends, scores, _ = select_starts_ends(
        start_logits.numpy()[None],
        end_logits.numpy()[None],
        p_mask,
        np.ones((1, length), dtype=int),
        max_answer_len=8,
    )
    start, end, score = best_span(start_logits, end_logits, context_mask, max_answer_length=8)
    assert (start, end) == (int(starts[0]), int(ends[0]))
    assert score == pytest.approx(float(scores[0]), rel=1e-5)


def test_decode_answers_maps_back_to_the_original_characters(tokenizer):
    context = "Le café Zürich opened in 1921; its owner, Ana Müller, still runs it."
    example = QAExample("q", "Who runs it?", context, [("Ana Müller", context.index("Ana"))])
    features = prepare_qa_features([example], tokenizer, max_length=64, stride=8)
    (feature,) = features
    logits = torch.full((2, len(feature["input_ids"])), -5.0)
    logits[0, feature["start_positions"]] = 5.0
    logits[1, feature["end_positions"]] = 5.0
    answer = decode_answers([example], features, [logits[0]], [logits[1]])["q"]
    assert answer["text"] == "Ana Müller"  # case and accents of the context, not "ana muller"
    assert context[answer["start"] : answer["end"]] == "Ana Müller"


# -- the engine: best checkpoint ------------------------------------------------------


def tiny_config():
    """A small BERT with MiniLM's vocabulary (so MiniLM's tokenizer fits it)."""
    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )


def tiny_checkpoint(directory, seed=0):
    """A small random BERT with MiniLM's vocabulary, saved as a transformers directory."""
    config = tiny_config()
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config, num_labels=2)
    model.save_pretrained(directory)
    BertTokenizer.from_pretrained("minilm").save_vocabulary(directory)
    return directory


def keyword_data(n, seed):
    """A learnable toy task: is the word 'good' or 'bad' in the sentence?"""
    rng = random.Random(seed)
    fillers = "the film was plot actors a story and music long".split()
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = rng.sample(fillers, rng.randint(2, 6)) + [["bad", "good"][label]]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return LabelledData(texts, labels, ["negative", "positive"], name="keywords")


def test_best_weights_are_kept_and_match_the_best_evaluation(tmp_path, tokenizer):
    model, _ = load_for_task(
        BertForSequenceClassification, str(tiny_checkpoint(tmp_path / "init")), num_labels=2
    )
    from bertcourse.finetune import evaluate_classification

    train_examples = encode_classification(keyword_data(256, 0), tokenizer)
    valid_examples = encode_classification(keyword_data(64, 1), tokenizer)
    args = TrainingArguments(
        output_dir=tmp_path / "run",
        max_steps=30,
        per_device_batch_size=16,
        learning_rate=1e-2,
        eval_every=5,
        log_every=5,
        group_by_length=True,
        metric_for_best="eval_loss",
        greater_is_better=False,
        show_progress=False,
    )
    result = train(
        model,
        train_examples,
        PaddingCollator(),
        args,
        eval_dataset=valid_examples,
        evaluate_fn=evaluate_classification,
    )
    evaluations = [
        row
        for row in read_training_log(tmp_path / "run")
        if not np.isnan(row.get("eval_loss", np.nan))
    ]
    assert len(evaluations) == 6
    best_row = min(evaluations, key=lambda row: row["eval_loss"])
    best = read_best(tmp_path / "run")
    assert best == result.best and best["step"] == best_row["step"]
    assert best["value"] == pytest.approx(best_row["eval_loss"])
    assert best["metrics"]["eval_accuracy"] > 0.9, "the toy task is learnable"
    reloaded = BertForSequenceClassification.from_hf(tmp_path / "run" / "best")
    logits = torch.stack(predict_logits(reloaded, valid_examples))
    labels = torch.tensor([e["labels"] for e in valid_examples])
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert loss == pytest.approx(best["value"], rel=1e-4)


def test_metric_for_best_must_be_an_evaluation_metric(tmp_path, tokenizer):
    model, _ = load_for_task(
        BertForSequenceClassification, str(tiny_checkpoint(tmp_path / "init")), num_labels=2
    )
    from bertcourse.finetune import evaluate_classification

    examples = encode_classification(keyword_data(32, 0), tokenizer)
    args = TrainingArguments(
        output_dir=tmp_path / "run",
        max_steps=2,
        per_device_batch_size=16,
        metric_for_best="eval_f1",
        show_progress=False,
    )
    with pytest.raises(ValueError, match="eval_accuracy, eval_loss, eval_macro_f1"):
        train(
            model,
            examples,
            PaddingCollator(),
            args,
            eval_dataset=examples,
            evaluate_fn=evaluate_classification,
        )


# -- the command line, and pipelines on its export ----------------------------------


def write_table(path, rows, columns=("sentence", "label")):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file, delimiter="\t" if str(path).endswith(".tsv") else ",")
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def test_finetune_cli_end_to_end_and_text_classification_pipeline(tmp_path, capsys):
    init = tiny_checkpoint(tmp_path / "init")
    train_data, valid_data = keyword_data(320, 0), keyword_data(80, 1)
    names = train_data.label_names
    train_file = write_table(
        tmp_path / "train.tsv",
        [(t, names[y]) for t, y in zip(train_data.texts, train_data.labels, strict=True)],
    )
    valid_file = write_table(
        tmp_path / "dev.csv",
        [(t, names[y]) for t, y in zip(valid_data.texts, valid_data.labels, strict=True)],
    )
    out = tmp_path / "run"
    code = finetune.main(
        [
            "--train",
            str(train_file),
            "--valid",
            str(valid_file),
            "--init",
            str(init),
            "--epochs",
            "2",
            "--lr",
            "1e-2",
            "--batch-size",
            "16",
            "--out",
            str(out),
            "--no-progress",
            "--max-steps",
            "30",  # 2 epochs would be 40 steps: the cap wins
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "metrics.json" in printed and "confusion_matrix.png" in printed
    assert "Stopping after 30 steps (1.50 epochs) instead of 2 epochs (40 steps)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["best_step"] in (15, 30)
    assert metrics["label_names"] == ["negative", "positive"]
    assert metrics["accuracy"] > 0.9
    assert sum(map(sum, metrics["confusion_matrix"])) == 80
    assert set(metrics["per_class"]) == {"negative", "positive"}
    for name in ("confusion_matrix.png", "training_curves.png", "log.csv", "best/best.json"):
        assert (out / name).is_file(), name

    # The exported directory: transformers' pipeline predicts what our model predicts.
    ours, tokenizer = load_for_task(BertForSequenceClassification, str(out / "model"), num_labels=2)
    classifier = transformers.pipeline(
        "text-classification", model=str(out / "model"), device="cpu"
    )
    texts = valid_data.texts[:12]
    predictions = classifier(texts, top_k=None)
    our_probs = torch.stack(
        predict_logits(
            ours.eval(),
            encode_classification(LabelledData(texts, [0] * len(texts), names), tokenizer),
        )
    ).softmax(-1)
    for probs, predicted in zip(our_probs, predictions, strict=True):
        by_label = {p["label"]: p["score"] for p in predicted}
        assert by_label["negative"] == pytest.approx(probs[0].item(), abs=1e-5)
        assert by_label["positive"] == pytest.approx(probs[1].item(), abs=1e-5)


def test_finetune_cli_bad_input(tmp_path):
    init = str(tiny_checkpoint(tmp_path / "init"))
    good = write_table(
        tmp_path / "train.csv", [(f"text {i}", ["a", "b"][i % 2]) for i in range(40)]
    )

    def run(*extra):
        return finetune.main(
            [
                "--train",
                str(good),
                "--init",
                init,
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
                "--max-steps",
                "1",
                "--overwrite",
                *extra,
            ]
        )

    unseen = write_table(tmp_path / "unseen.csv", [("x", "a"), ("y", "c")])
    with pytest.raises(ValueError, match=r"label\(s\) \['c'\] that .* never shows"):
        run("--valid", str(unseen))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        finetune.main(["--train", str(empty), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="no column 'premise'"):
        run("--text-pair-column", "premise")
    with pytest.raises(ValueError, match="no column 'text'"):
        run("--text-column", "text")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        finetune.main(["--train", str(good), "--init", str(tmp_path), "--out", str(tmp_path / "o")])
    too_few = write_table(tmp_path / "few.csv", [("x", "a"), ("y", "b")])
    with pytest.raises(ValueError, match="fewer than one batch"):
        finetune.main(
            [
                "--train",
                str(too_few),
                "--valid",
                str(too_few),
                "--init",
                init,
                "--out",
                str(tmp_path / "o"),
            ]
        )
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


def test_token_classification_pipeline_equals_our_model(tmp_path, tokenizer):
    config = tiny_config()
    names = ["O", "B-MOD", "I-MOD", "B-EXC", "I-EXC"]
    ours = BertForTokenClassification(config, num_labels=5, id2label=dict(enumerate(names))).eval()
    from bertcourse.hf import export_for_transformers

    directory = export_for_transformers(ours, tokenizer, tmp_path / "ner")
    tagger = transformers.pipeline("token-classification", model=str(directory), device="cpu")
    sentence = "The json module raises a JSONDecodeError when os.path is missing."
    entities = tagger(sentence)  # aggregation "none": one entry per sub-word, "O" left out
    encoded = tokenizer(sentence, return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad():
        logits = ours(
            encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]
        ).logits[0]
    probs = logits.softmax(-1)
    expected = [
        (names[int(p.argmax())], float(p.max()), start, end)
        for p, (start, end) in zip(
            probs[1:-1], encoded["offset_mapping"][0][1:-1].tolist(), strict=True
        )
        if names[int(p.argmax())] != "O"
    ]
    got = [(e["entity"], e["score"], e["start"], e["end"]) for e in entities]
    assert [g[0] for g in got] == [e[0] for e in expected] and [g[2:] for g in got] == [
        e[2:] for e in expected
    ]
    assert np.allclose([g[1] for g in got], [e[1] for e in expected], atol=1e-5)


def test_evaluate_token_classification_equals_seqeval_on_first_sub_words(tokenizer):
    import seqeval.metrics
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from bertcourse.finetune import evaluate_token_classification

    names = ["O", "B-CODE", "I-CODE", "B-NAME", "I-NAME"]
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_config(), num_labels=5, id2label=dict(enumerate(names)))
    sentences = [["the", "os.path", "module", "of", "Python"], ["raise", "ValueError", "now"]] * 3
    tags = [[0, 1, 0, 0, 3], [0, 1, 0]] * 3
    examples = encode_tagged(sentences, tags, tokenizer)
    loader = DataLoader(examples, batch_size=4, collate_fn=PaddingCollator())
    metrics = evaluate_token_classification(model, loader, Accelerator(cpu=True), names)
    true_tags, predicted_tags = [], []
    for logits, example in zip(predict_logits(model, examples), examples, strict=True):
        words = word_predictions(logits.argmax(-1).tolist(), example["word_ids"], 5)
        labels = [label for label in example["labels"] if label != IGNORE_INDEX]
        true_tags.append([names[t] for t in labels])
        predicted_tags.append([names[p] for p in words[: len(labels)]])
    assert metrics["eval_f1"] == pytest.approx(seqeval.metrics.f1_score(true_tags, predicted_tags))
    assert metrics["eval_accuracy"] == pytest.approx(
        seqeval.metrics.accuracy_score(true_tags, predicted_tags)
    )
    assert 0 < metrics["eval_loss"] < 10
