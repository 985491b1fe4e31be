"""Chapter 13's reference results: search on the offline docstring task, the `cpu` profile.

    python scripts/embedding_reference.py                  # everything (~30 min on 2 cores)
    python scripts/embedding_reference.py --seeds 0 --json /tmp/quick.json

On the whole test split of `offline_retrieval("test")` (every query searches every test
passage), it measures:

- pooling: MRR@10 and recall@k of MiniLM, the course's tiny BERT and MiniLM's architecture with
  random weights, for [CLS], mean and max pooling, with and without normalisation;
- BM25 (bm25s), and BM25 fused with MiniLM by reciprocal rank;
- contrastive fine-tuning of MiniLM on the train split (in-batch negatives), one run per seed
  with the chapter's `cpu` settings, and each run fused with BM25;
- a cross-encoder (MiniLM with a pair-classification head, trained on the train split's queries
  with their passage as positive, and a wrong passage from MiniLM's top 20 and a random one as
  negatives) reranking the top 20 of off-the-shelf MiniLM and of the first fine-tuned model,
  alone and fused by reciprocal rank with the order it reranked;
- the in-batch loss against the batch size, for off-the-shelf MiniLM.

Results go to bertcourse/reference/embeddings_cpu_reference.json with the commit, the machine and
the command. Time it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bertcourse import BertForSequenceClassification, BertModel, BertTokenizer
from bertcourse.data import LabelledData, offline_retrieval
from bertcourse.embeddings import (
    BiEncoder,
    PairCollator,
    bm25_search,
    contrastive_loss,
    encode,
    encode_poolings,
    pair_examples,
    reciprocal_rank_fusion,
    rerank,
    retrieval_metrics,
    search,
)
from bertcourse.finetune import PaddingCollator, encode_classification, load_for_task
from bertcourse.training import TrainingArguments, train

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bertcourse" / "reference" / "embeddings_cpu_reference.json"
# The chapter's `cpu` settings (notebooks/13_embeddings_and_search.ipynb, RUNS["cpu"]).
FINETUNE = dict(steps=150, batch_size=32, learning_rate=5e-5, warmup_ratio=0.1)
QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH = 64, 128
RERANK = dict(steps=200, batch_size=16, learning_rate=1e-4, max_length=160, top=20)
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256, 512)


def rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in metrics.items()}


def pooling_table(name: str, model, tokenizer, test) -> dict[str, dict[str, float]]:
    queries = encode_poolings(model, tokenizer, test.queries, normalize=False)
    passages = encode_poolings(model, tokenizer, test.passages, normalize=False)
    rows = {}
    for pooling in queries:
        for normalize in (True, False):
            q, p = queries[pooling], passages[pooling]
            if normalize:
                q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
            _, ranking = search(q, p, 10)
            key = f"{name}/{pooling}/{'cosine' if normalize else 'dot'}"
            rows[key] = rounded(retrieval_metrics(ranking, test.relevant))
            print(key, rows[key], flush=True)
    return rows


def finetune(seed: int, train_data, test, tokenizer) -> tuple[BertModel, dict]:
    model = BertModel.from_hf("minilm")
    examples = pair_examples(
        tokenizer,
        train_data.queries,
        [pair.passage for pair in train_data.pairs],
        query_max_length=QUERY_MAX_LENGTH,
        passage_max_length=PASSAGE_MAX_LENGTH,
    )
    args = TrainingArguments(
        output_dir=Path(tempfile.mkdtemp()) / f"seed{seed}",
        max_steps=FINETUNE["steps"],
        per_device_batch_size=FINETUNE["batch_size"],
        learning_rate=FINETUNE["learning_rate"],
        warmup_ratio=FINETUNE["warmup_ratio"],
        weight_decay=0.01,
        log_every=10,
        save_every=FINETUNE["steps"],
        seed=seed,
        group_by_length=True,
        show_progress=False,
    )
    started = time.perf_counter()
    result = train(BiEncoder(model), examples, PairCollator(tokenizer.pad_token_id), args)
    seconds = time.perf_counter() - started
    query_vectors = encode(model, tokenizer, test.queries)
    passage_vectors = encode(model, tokenizer, test.passages)
    _, ranking = search(query_vectors, passage_vectors, 20)
    run = {
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "metrics": rounded(retrieval_metrics(ranking, test.relevant)),
        "loss": [[row["step"], row["loss"]] for row in result.log_history if "loss" in row],
    }
    print(f"fine-tuned seed {seed}", run["metrics"], f"{seconds:.0f} s", flush=True)
    return model, run, ranking


def cross_encoder(train_data, tokenizer, minilm):
    """MiniLM + a 2-way head, trained on (query, passage) pairs labelled relevant or not.

    Each train query gives two relevant pairs (its own passage, twice) and two irrelevant ones: a
    wrong passage drawn from MiniLM's top 20 for the query (what the reranker will be shown) and
    a wrong passage drawn at random. BM25's best wrong passage was tried first: on this task it
    shares more words with the query than the right passage does, and the model learned that
    shared words mean "irrelevant" (reranked MRR@10 fell below a random order).
    """
    passages = [pair.passage for pair in train_data.pairs]
    q, p = encode(minilm, tokenizer, train_data.queries), encode(minilm, tokenizer, passages)
    _, top = search(q, p, RERANK["top"])
    rng = random.Random(0)
    near = [rng.choice([j for j in row.tolist() if j != i]) for i, row in enumerate(top)]
    far = [(i + rng.randrange(1, len(passages))) % len(passages) for i in range(len(passages))]
    texts = train_data.queries * 4
    pairs = passages * 2 + [passages[j] for j in near] + [passages[j] for j in far]
    labels = [1] * (2 * len(passages)) + [0] * (2 * len(passages))
    data = LabelledData(texts, labels, ["irrelevant", "relevant"], pairs, name="rerank/train")
    model, _ = load_for_task(BertForSequenceClassification, "minilm", num_labels=2)
    examples = encode_classification(data, tokenizer, RERANK["max_length"])
    args = TrainingArguments(
        output_dir=Path(tempfile.mkdtemp()) / "cross-encoder",
        max_steps=RERANK["steps"],
        per_device_batch_size=RERANK["batch_size"],
        learning_rate=RERANK["learning_rate"],
        warmup_ratio=0.1,
        weight_decay=0.01,
        log_every=25,
        save_every=RERANK["steps"],
        seed=0,
        group_by_length=True,
        show_progress=False,
    )
    started = time.perf_counter()
    train(model, examples, PaddingCollator(tokenizer.pad_token_id), args)
    return model, time.perf_counter() - started


def loss_by_batch_size(model, tokenizer, test) -> list[dict[str, float]]:
    """The mean in-batch loss over consecutive batches of the test pairs, per batch size."""
    q = encode(model, tokenizer, test.queries)
    p = encode(model, tokenizer, [pair.passage for pair in test.pairs])
    rows = []
    for size in BATCH_SIZES:
        losses = [
            contrastive_loss(q[i : i + size], p[i : i + size]).item()
            for i in range(0, len(q) - size + 1, size)
        ]
        rows.append(
            {"batch_size": size, "loss": round(sum(losses) / len(losses), 4),
             "chance": round(math.log(size), 4)}
        )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=OUT)
    options = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    train_data, test = offline_retrieval("train"), offline_retrieval("test")
    tokenizer = BertTokenizer.from_pretrained("minilm")
    results: dict = {
        "task": {
            "name": test.name,
            "train_pairs": len(train_data),
            "test_queries": len(test),
            "collection": len(test.passages),
            "provenance": test.provenance,
        }
    }
    minilm = BertModel.from_hf("minilm").eval()
    results["pooling"] = pooling_table("minilm", minilm, tokenizer, test)
    course, course_tokenizer = load_for_task(BertModel, "course-tiny")
    results["pooling"] |= pooling_table("course-tiny", course.eval(), course_tokenizer, test)
    random_model, _ = load_for_task(BertModel, "random:minilm")
    results["pooling"] |= pooling_table("random-minilm", random_model.eval(), tokenizer, test)

    _, bm25 = bm25_search(test.queries, test.passages, k=20)
    results["bm25"] = rounded(retrieval_metrics(bm25, test.relevant))
    q, p = encode(minilm, tokenizer, test.queries), encode(minilm, tokenizer, test.passages)
    _, dense = search(q, p, 20)
    results["minilm"] = rounded(retrieval_metrics(dense, test.relevant))
    results["fused"] = rounded(
        retrieval_metrics(reciprocal_rank_fusion(bm25, dense, top=20), test.relevant)
    )
    results["loss_by_batch_size"] = loss_by_batch_size(minilm, tokenizer, test)
    print("bm25", results["bm25"], "fused", results["fused"], flush=True)

    results["finetuned"], first_ranking = [], None
    for seed in options.seeds:
        _, run, ranking = finetune(seed, train_data, test, tokenizer)
        run["fused"] = rounded(
            retrieval_metrics(reciprocal_rank_fusion(bm25, ranking, top=20), test.relevant)
        )
        results["finetuned"].append(run)
        first_ranking = ranking if first_ranking is None else first_ranking

    reranker, seconds = cross_encoder(train_data, tokenizer, minilm)
    top = RERANK["top"]
    results["reranked"] = {"train_seconds": round(seconds, 1)}
    for name, ranking in (("minilm", dense), ("finetuned", first_ranking)):
        t0 = time.perf_counter()
        reordered = rerank(reranker, tokenizer, test.queries, test.passages, ranking[:, :top])
        results["reranked"][name] = rounded(retrieval_metrics(reordered, test.relevant))
        # the cross-encoder's order and the first stage's, fused by reciprocal rank
        both = reciprocal_rank_fusion(reordered, ranking[:, :top], top=top)
        results["reranked"][f"{name}_fused"] = rounded(retrieval_metrics(both, test.relevant))
        results["reranked"][f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
        print("reranked", name, results["reranked"][name], flush=True)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip()  # fmt: skip
    results["settings"] = {
        "finetune": FINETUNE,
        "query_max_length": QUERY_MAX_LENGTH,
        "passage_max_length": PASSAGE_MAX_LENGTH,
        "rerank": RERANK,
        "pooling_for_search": "mean, cosine (MiniLM's own)",
    }
    results["command"] = "python " + " ".join([f"scripts/{Path(__file__).name}", *sys.argv[1:]])
    results["commit"] = commit
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results["machine"] = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, Python {platform.python_version()}, load average at the end "
        f"{load:.1f}"
    )
    options.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {options.json} in {results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
