"""`python -m bertcourse finetune --task embedding`: pairs in, a searchable encoder out.

The export is checked against sentence-transformers (its vectors are those of our `encode` on
the best weights; searching with them reproduces metrics.json), "initial" against the untrained
model, and every mistake in the input ends with one line, status 2 and nothing written.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from sentence_transformers import SentenceTransformer

from bertcourse import BertModel, BertTokenizer, commands
from bertcourse.commands import embedding, finetune
from bertcourse.data import RetrievalData, RetrievalPair, load_retrieval_pairs, offline_retrieval
from bertcourse.embeddings import encode, evaluate_retrieval, retrieval_metrics, search
from bertcourse.finetune import load_for_task
from bertcourse.training import list_checkpoints, read_best

TINY = "random:course-tiny"  # the course checkpoint's shape and vocabulary, random weights
KEYS = {"recall@1", "recall@10", "mrr@10", "ndcg@10"}
ANIMALS = ["fox", "owl", "cat", "dog", "bee", "frog", "horse", "goat", "duck", "mole"]
FOODS = ["mice", "seeds", "fish", "grass", "nectar", "worms", "apples", "hay"]


def animal_pairs(n: int, start: int = 0) -> list[tuple[str, str]]:
    """Distinct (query, passage) pairs of different lengths (so batches hold padding)."""
    pairs = []
    for i in range(start, start + n):
        animal, food = ANIMALS[i % len(ANIMALS)], FOODS[i % len(FOODS)]
        query = f"what does the {animal} number {i} eat"
        passage = f"The {animal} number {i} eats {food}" + " every day" * (i % 4) + "."
        pairs.append((query, passage))
    return pairs


def write_pairs(path, rows, columns=("query", "passage")):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def embedding_argv(train, out, *extra):
    return ["finetune", "--task", "embedding", "--train", str(train), "--out", str(out),
            "--no-progress", *extra]  # fmt: skip


def searched_metrics(model: SentenceTransformer, task: embedding.SearchTask) -> dict:
    """The search metrics of `task` with sentence-transformers' vectors."""
    query_vectors, passage_vectors = (
        model.encode(texts, convert_to_tensor=True) for texts in (task.queries, task.passages)
    )
    _, rankings = search(query_vectors, passage_vectors, k=10)
    return retrieval_metrics(rankings, task.relevant)


def write_empty(path):
    path.write_text("")
    return path


# -- the parser ------------------------------------------------------------------------------


def test_each_task_gets_its_own_defaults_and_classification_is_unchanged():
    parse = finetune.build_parser().parse_args
    classification = parse(["--train", "x.tsv", "--out", "o"])
    assert (classification.task, classification.text_column, classification.label_column) == (
        "classification", "sentence", "label")  # fmt: skip
    assert (classification.holdout, classification.max_length) == ("stratified", 128)
    assert (classification.epochs, classification.max_steps) == (3, 800)
    assert not hasattr(classification, "query_column") and not hasattr(classification, "pooling")

    options = parse(["--task", "embedding", "--train", "x.tsv", "--out", "o"])
    assert (options.query_column, options.passage_column) == ("query", "passage")
    assert (options.pooling, options.scale) == ("mean", 20.0)
    assert (options.query_max_length, options.passage_max_length) == (64, 256)
    assert (options.epochs, options.max_steps, options.batch_size, options.lr) == (1, 150, 32, 5e-5)
    assert options.warmup_ratio == 0.1 and not hasattr(options, "text_column")
    assert (
        parse(["--task", "embedding", "--train", "x", "--out", "o", "--max-steps", "0"]).max_steps
        == 0
    )


WRONG_TASK = [
    (["--task", "embedding", "--text-column", "q"],
     "--text-column is an option of --task classification, not of --task embedding"),
    (["--task", "embedding", "--holdout", "sentences", "--max-length", "64"],
     "--holdout, --max-length are options of --task classification"),
    (["--pooling", "cls"], "--pooling is an option of --task embedding, not of --task classification"),
    (["--query-column", "q"], "--query-column is an option of --task embedding"),
    (["--task", "embedding", "--batch-size", "1"], "--batch-size: 1: --task embedding needs 2 pairs"),
    (["--task", "embedding", "--pooling", "sum"], "--pooling: invalid choice: 'sum'"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), WRONG_TASK, ids=[" ".join(a) for a, _ in WRONG_TASK])
def test_an_option_of_the_other_task_is_refused_naming_it(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        commands.main(["finetune", "--train", "x.tsv", "--out", str(tmp_path / "out"), *argv])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_help_mentions_the_embedding_task(capsys):
    with pytest.raises(SystemExit) as stopped:
        commands.main(["finetune", "--help"])
    assert stopped.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("--task {classification,embedding}", "--task embedding:", "--query-column",
                 "--passage-column", "--pooling {cls,mean,max}", "'offline'", "SentenceTransformer"):  # fmt: skip
        assert part in text, part


# -- the held-out pairs ----------------------------------------------------------------------


def test_a_seeded_tenth_is_held_out_and_one_pair_at_least():
    data = RetrievalData([RetrievalPair(q, p, f"line {i + 2}")
                          for i, (q, p) in enumerate(animal_pairs(30))], "pairs.tsv")  # fmt: skip
    train, held_out = embedding.split_pairs(data, 0.1, seed=3)
    assert (len(train), len(held_out)) == (27, 3)
    assert sorted(train.pairs + held_out.pairs, key=data.pairs.index) == data.pairs
    assert embedding.split_pairs(data, 0.1, seed=3)[1].pairs == held_out.pairs  # seeded
    assert embedding.split_pairs(data, 0.1, seed=4)[1].pairs != held_out.pairs
    two = RetrievalData(data.pairs[:2], "two.tsv")
    assert [len(part) for part in embedding.split_pairs(two, 0.1)] == [1, 1]
    with pytest.raises(ValueError, match="one.tsv has only 1 pair: it needs 2 at least"):
        embedding.split_pairs(RetrievalData(data.pairs[:1], "one.tsv"))


def test_the_held_out_collection_holds_each_passage_once():
    pairs = [RetrievalPair("q1", "shared"), RetrievalPair("q2", "shared"),
             RetrievalPair("q3", "own"), RetrievalPair("q1", "second answer")]  # fmt: skip
    task = embedding.search_task(RetrievalData(pairs, extra_passages=["distractor", "own"]))
    assert task.queries == ["q1", "q2", "q3"]
    assert task.passages == ["shared", "own", "second answer", "distractor"]
    assert task.relevant == [{0, 2}, {0}, {1}]
    offline = offline_retrieval("test")  # already distinct: the task is the data's own
    task = embedding.search_task(offline)
    assert (task.queries, task.passages, task.relevant) == (
        offline.queries, offline.passages, offline.relevant)  # fmt: skip


# -- end to end ------------------------------------------------------------------------------


def test_tiny_run_exports_what_sentence_transformers_encodes_and_warns_of_shared_passages(
    tmp_path, capsys, monkeypatch
):
    evaluator = embedding.retrieval_evaluator

    def worse_at_the_end(*args, **kwargs):  # the last of 3 evaluations scores lower: the best
        evaluate, calls = evaluator(*args, **kwargs), []  # weights are not the last ones

        def scripted(*inputs):
            calls.append(len(calls) + 1)
            metrics = evaluate(*inputs)
            return {k: v / 2 for k, v in metrics.items()} if len(calls) == 3 else metrics

        return scripted

    monkeypatch.setattr(embedding, "retrieval_evaluator", worse_at_the_end)
    rows = animal_pairs(30)
    rows[7] = (rows[7][0], rows[3][1])  # a passage answering two queries: lines 5 and 9
    rows[11] = (rows[2][0], rows[11][1])  # a query with two passages: fine, no warning
    train = write_pairs(tmp_path / "train.tsv", rows)
    valid = write_pairs(tmp_path / "valid.csv", animal_pairs(12, start=100))
    out = tmp_path / "run"
    argv = embedding_argv(train, out, "--valid", str(valid), "--init", TINY, "--pooling", "max",
                          "--batch-size", "8", "--lr", "1e-3")  # fmt: skip
    assert commands.main(argv) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1 passage(s)" in warnings[0]
    assert "line 5 and line 9" in warnings[0] and "false negative" in warnings[0]
    summary = captured.out.strip().splitlines()[-1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary.startswith(
        f"Done: held-out MRR@10 {metrics['initial']['mrr@10']:.3f} -> {metrics['mrr@10']:.3f}"
    )
    assert KEYS <= set(metrics) and set(metrics["initial"]) == KEYS
    assert (metrics["train_pairs"], metrics["held_out_queries"], metrics["collection_size"]) == (
        30, 12, 12)  # fmt: skip
    assert metrics["steps"] == 3 and metrics["options"]["pooling"] == "max"  # one epoch of 8
    assert metrics["training_seconds"] > 0 and (out / "training_curves.png").is_file()

    # "initial" is the untrained model's search of the validation pairs.
    untrained, tokenizer = load_for_task(BertModel, TINY, seed=0)
    task = embedding.search_task(load_retrieval_pairs(valid))
    expected = evaluate_retrieval(untrained, tokenizer, task.queries, task.passages,
                                  task.relevant, pooling="max")  # fmt: skip
    assert metrics["initial"] == pytest.approx(expected)

    # The export: sentence-transformers' vectors are our encode() of the best weights, padding
    # and max pooling included; the export's own vocabulary and weights load into our classes.
    best = BertModel.from_hf(out / "best")
    texts = task.queries[:3] + task.passages[:5]
    ours = encode(best, tokenizer, texts, pooling="max")
    reference = SentenceTransformer(str(out / "model"), device="cpu")
    theirs = reference.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ours, encode(untrained, tokenizer, texts, pooling="max"))  # trained
    exported = BertModel.from_hf(out / "model")
    again = encode(exported, BertTokenizer.from_pretrained(out / "model"), texts, pooling="max")
    torch.testing.assert_close(again, ours)
    # metrics.json reports the best evaluation, that of the exported weights, not the last.
    assert metrics["best_step"] == read_best(out)["step"] == 2
    assert metrics["mrr@10"] > metrics["initial"]["mrr@10"]  # the toy task is learnt
    assert {name: metrics[name] for name in KEYS} == pytest.approx(
        searched_metrics(reference, task)
    )


def test_minilm_end_to_end_metrics_are_those_of_the_exported_model(tmp_path):
    train = write_pairs(tmp_path / "pairs.tsv", animal_pairs(40))
    out = tmp_path / "run"
    argv = embedding_argv(train, out, "--init", "minilm", "--batch-size", "8", "--max-steps", "2")
    assert commands.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    _, held_out = embedding.split_pairs(load_retrieval_pairs(train), 0.1, seed=0)
    task = embedding.search_task(held_out)
    assert (metrics["train_pairs"], metrics["held_out_queries"]) == (36, 4)
    assert metrics["best_step"] in (1, 2)

    minilm, tokenizer = load_for_task(BertModel, "minilm")
    initial = evaluate_retrieval(minilm, tokenizer, task.queries, task.passages, task.relevant)
    assert metrics["initial"] == pytest.approx(initial)
    reference = SentenceTransformer(str(out / "model"), device="cpu")
    assert {name: metrics[name] for name in KEYS} == pytest.approx(
        searched_metrics(reference, task)
    )


def test_the_offline_task_trains_on_its_train_split_and_searches_its_test_split(tmp_path):
    out = tmp_path / "run"
    argv = embedding_argv("offline", out, "--init", TINY, "--batch-size", "4", "--max-steps", "1",
                          "--passage-max-length", "64")  # fmt: skip
    assert commands.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    test = offline_retrieval("test")
    assert metrics["train_pairs"] == len(offline_retrieval("train"))
    assert (metrics["held_out_queries"], metrics["collection_size"]) == (
        len(test.queries), len(test.passages))  # fmt: skip
    assert metrics["held_out"] == "its test split" and metrics["steps"] == 1
    assert 0 < metrics["initial"]["recall@10"] < 1 and KEYS <= set(metrics)


# -- mistakes: one line, status 2, nothing written -------------------------------------------


BAD_INPUT = {
    "missing column": (
        lambda d: write_pairs(d / "t.tsv", animal_pairs(5), ("question", "answer")), [],
        ["no column 'query', 'passage'", "available columns are 'question', 'answer'"]),
    "empty file": (lambda d: write_empty(d / "t.tsv"), [], ["is empty"]),
    "header only": (
        lambda d: write_pairs(d / "t.tsv", []), [], ["has a header but no rows"]),
    "query without passage": (
        lambda d: write_pairs(d / "t.tsv", [*animal_pairs(3), ("a lonely query",)]), [],
        ["line 5", "'passage' cell is empty"]),
    "one pair": (
        lambda d: write_pairs(d / "t.tsv", animal_pairs(1)), [], ["has only 1 pair", "2 at least"]),
    "one training pair beside --valid": (
        lambda d: write_pairs(d / "t.tsv", animal_pairs(1)), ["--valid", "{d}/t.tsv"],
        ["has only 1 pair", "2 at least"]),
    "batch larger than the pairs": (
        lambda d: write_pairs(d / "t.tsv", animal_pairs(10)), ["--batch-size", "16"],
        ["--batch-size 16 is larger than the 9 training pairs", "--batch-size 9 or less"]),
    "passages longer than the positions": (
        lambda d: write_pairs(d / "t.tsv", animal_pairs(10)), ["--passage-max-length", "600", "--batch-size", "4"],
        ["--passage-max-length 600 is longer than the 512 positions"]),
    "other column names": (
        lambda d: write_pairs(d / "t.csv", animal_pairs(5), ("q", "p")), ["--query-column", "q"],
        ["no column 'passage'", "available columns are 'q', 'p'"]),
    "missing validation file": (
        lambda d: write_pairs(d / "t.tsv", animal_pairs(5)), ["--valid", "{d}/nowhere.tsv"],
        ["nowhere.tsv does not exist"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_with_status_2_and_nothing_written(case, tmp_path, capsys):
    make, extra, expected = BAD_INPUT[case]
    train = make(tmp_path)
    out = tmp_path / "out"
    extra = [part.format(d=tmp_path) for part in extra]
    code = commands.main(embedding_argv(train, out, "--init", TINY, *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(part in err[0] for part in expected), err[0]
    assert not out.exists()


# -- stopped and resumed ---------------------------------------------------------------------


def test_a_run_stopped_by_ctrl_c_exits_130_and_resumes_to_its_report(tmp_path, monkeypatch, capsys):
    train = write_pairs(tmp_path / "pairs.tsv", animal_pairs(20))
    out = tmp_path / "run"
    argv = embedding_argv(train, out, "--init", TINY, "--batch-size", "4", "--max-steps", "2")
    evaluator = embedding.retrieval_evaluator

    def interrupted_evaluator(*args, **kwargs):
        def ctrl_c(*_):  # the reader presses Ctrl-C during the first evaluation, at step 1
            raise KeyboardInterrupt

        return ctrl_c

    monkeypatch.setattr(embedding, "retrieval_evaluator", interrupted_evaluator)
    assert commands.main(argv) == 130
    assert "--resume" in capsys.readouterr().out
    assert [path.name for path in list_checkpoints(out)] == ["checkpoint-1"]
    assert not (out / "metrics.json").exists() and not (out / "model").exists()

    monkeypatch.setattr(embedding, "retrieval_evaluator", evaluator)
    assert commands.main([*argv, "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(metrics) and set(metrics["initial"]) == KEYS
    assert metrics["steps"] == 2 and metrics["best_step"] == 2
    assert (out / "model" / "modules.json").is_file()
