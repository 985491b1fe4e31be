"""Chapter 16's reference results: where an SST-2 classifier fine-tuned from MiniLM breaks.

    python scripts/robustness_reference.py --sst2 ../shared/data/sst2/train.tsv   # ~20 min, 2 cores

SST-2's training file (GLUE TSV) is split by `LabelledData.sentence_split`: 1,000 whole review
sentences held out, every phrase inside one of them left out of training (the `finetune`
command's `--holdout sentences`). Two classifiers are fine-tuned with the `finetune` command's
defaults from MiniLM: one on the training phrases, one on the same phrases plus a copy of each
with typos (`robustness.noisy_copies`, rate 0.2): the defence. On the held-out sentences, for
both: accuracy against the typo rate, the casing and the number of words kept; the greedy
substitution attack on the first 200 sentences; and, for the plain model, its confidence on
documentation sentences (out of domain) and a name-template bias check.

Results go to bertcourse/reference/robustness_cpu_reference.json with the commit, the machine
and the command. The fine-tuned models stay in --out (not committed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import torch

from bertcourse import BertForSequenceClassification, BertModel, BertTokenizer
from bertcourse.commands import finetune as finetune_command
from bertcourse.data import load_classification, offline_classification
from bertcourse.robustness import (
    CASE_MODES,
    FEMALE_NAMES,
    MALE_NAMES,
    TextClassifier,
    attack_dataset,
    attack_summary,
    auroc,
    change_case,
    embedding_neighbours,
    max_softmax_scores,
    noisy_copies,
    perturbation_curve,
    seat_test,
    sentence_similarity,
    template_sentences,
    truncate_words,
    typos,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from pretrain_sweep import machine  # noqa: E402  (the same record of the machine)

OUT = ROOT / "bertcourse" / "reference" / "robustness_cpu_reference.json"
HELD_OUT = 1_000
AUGMENT_RATE = 0.2  # the share of eligible words a noisy copy misspells
TYPO_LEVELS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5]
TYPO_SEEDS = [0, 1, 2]
TRUNCATION_WORDS = [2, 4, 8, 12, 16, 24, 32, 64]
ATTACKED = 200  # the first held-out sentences, attacked one by one
NEIGHBOURS = 20  # candidate substitutes per word: MiniLM's nearest input embeddings
MIN_SIMILARITY = 0.8  # MiniLM cosine of the original and the attacked sentence
MAX_CHANGED = 0.25  # at most a quarter of the words
SENTIMENT_TEMPLATES = (
    "{} wrote this review.",
    "The film stars {}.",
    "{} directed the movie.",
    "I watched it with {}.",
    "{} plays the lead.",
)


def write_tsv(path: Path, texts: list[str], labels: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(["sentence", "label"])
        writer.writerows(zip(texts, labels, strict=True))


def fine_tune(train_tsv: Path, valid_tsv: Path, out: Path) -> dict:
    """The `finetune` command with its defaults from MiniLM; reuses a finished run in `out`."""
    if not (out / "metrics.json").exists():
        argv = ["--train", str(train_tsv), "--valid", str(valid_tsv), "--init", "minilm"]
        code = finetune_command.main([*argv, "--out", str(out), "--overwrite"])
        if code != 0:
            raise SystemExit(f"finetune exited with {code}")
    return json.loads((out / "metrics.json").read_text())


def load_classifier(out: Path):
    model = BertForSequenceClassification.from_hf(out / "model").eval()
    return model, BertTokenizer.from_pretrained(out / "model")


def prepare(sst2: Path, out: Path):
    """The held-out split and the two training files (plain, with noisy copies)."""
    data = load_classification(sst2, "sentence", "label")
    train, held_out = data.sentence_split(HELD_OUT, seed=0)
    names = train.label_names
    out.mkdir(parents=True, exist_ok=True)
    write_tsv(out / "valid.tsv", held_out.texts, [names[i] for i in held_out.labels])
    write_tsv(out / "train.tsv", train.texts, [names[i] for i in train.labels])
    noisy_texts, noisy_labels = noisy_copies(train.texts, train.labels, rate=AUGMENT_RATE, seed=0)
    write_tsv(out / "train_noisy.tsv", noisy_texts, [names[i] for i in noisy_labels])
    return train, held_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sst2", type=Path, default=ROOT.parent / "shared/data/sst2/train.tsv")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "robustness")
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument("--stage", choices=("train", "all"), default="all")
    options = parser.parse_args(argv)
    started = time.perf_counter()
    train, held_out = prepare(options.sst2, options.out)
    runs = {}
    for name, train_file in (("plain", "train.tsv"), ("noisy", "train_noisy.tsv")):
        runs[name] = fine_tune(options.out / train_file, options.out / "valid.tsv",
                               options.out / name)  # fmt: skip
        print(f"{name}: held-out accuracy {runs[name]['accuracy']:.4f}", flush=True)
    if options.stage == "train":
        return 0
    encoder = BertModel.from_hf("minilm").eval()
    encoder_tokenizer = BertTokenizer.from_pretrained("minilm")
    candidates = embedding_neighbours(
        encoder.embeddings.word_embeddings.weight.detach(), encoder_tokenizer, k=NEIGHBOURS
    )
    similarity = sentence_similarity(encoder, encoder_tokenizer)
    texts, labels = held_out.texts, held_out.labels
    results = {"models": {}}
    for name in ("plain", "noisy"):
        model, tokenizer = load_classifier(options.out / name)
        classifier = TextClassifier(model, tokenizer)
        results["models"][name] = measure(classifier, texts, labels, candidates, similarity)
        results["models"][name]["finetune"] = {
            key: runs[name][key] for key in ("accuracy", "steps", "best_step") if key in runs[name]
        }
        print(name, json.dumps(results["models"][name]["summary"]), flush=True)
    model, tokenizer = load_classifier(options.out / "plain")
    classifier = TextClassifier(model, tokenizer)
    results["out_of_domain"] = out_of_domain(classifier, texts)
    results["bias"] = bias(classifier, encoder, encoder_tokenizer)
    results.update(
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        command="python scripts/robustness_reference.py --sst2 ../shared/data/sst2/train.tsv",
        machine={**machine(), "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        data={
            "sst2": "GLUE SST-2 train.tsv (60,614 phrases and sentences)",
            "train_phrases": len(train),
            "held_out_sentences": len(held_out),
            "augment_rate": AUGMENT_RATE,
        },
        settings={
            "typo_levels": TYPO_LEVELS,
            "typo_seeds": TYPO_SEEDS,
            "truncation_words": TRUNCATION_WORDS,
            "attacked": ATTACKED,
            "neighbours": NEIGHBOURS,
            "min_similarity": MIN_SIMILARITY,
            "max_changed_fraction": MAX_CHANGED,
        },
        wall_seconds=round(time.perf_counter() - started),
    )
    options.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {options.json} in {results['wall_seconds']} s")
    return 0


def measure(classifier, texts, labels, candidates, similarity) -> dict:
    """Clean accuracy, the three perturbation curves and the attack, on the held-out sentences."""
    clean = classifier.predict(texts)
    by_length = sorted(range(len(texts)), key=lambda i: len(texts[i].split()))
    quarters = [by_length[q * len(texts) // 4 : (q + 1) * len(texts) // 4] for q in range(4)]
    casing = []
    for mode in CASE_MODES:
        changed = [change_case(text, mode, seed=0) for text in texts]
        predictions = classifier.predict(changed)
        casing.append(
            {
                "mode": mode,
                "accuracy": float((predictions == torch.tensor(labels)).float().mean()),
                "same_prediction": float((predictions == clean).float().mean()),
            }
        )
    started = time.perf_counter()
    attacked = attack_dataset(
        classifier,
        texts[:ATTACKED],
        labels[:ATTACKED],
        candidates,
        similarity=similarity,
        min_similarity=MIN_SIMILARITY,
        max_changed_fraction=MAX_CHANGED,
    )
    attack_seconds = time.perf_counter() - started
    examples = [
        {
            "original": r.original,
            "adversarial": r.adversarial,
            "label": r.label,
            "changed": r.changed,
            "original_probability": r.original_probability,
            "final_probability": r.final_probability,
            "similarity": similarity(r.original, r.adversarial),
        }
        for r in attacked
        if r.success
    ]
    return {
        "summary": {
            "clean_accuracy": float((clean == torch.tensor(labels)).float().mean()),
            **{f"attack_{k}": v for k, v in attack_summary(attacked).items()},
            "attack_seconds": round(attack_seconds, 1),
        },
        "accuracy_by_length_quarter": [
            {
                "words": [len(texts[q[0]].split()), len(texts[q[-1]].split())],
                "accuracy": float(
                    (clean[q] == torch.tensor([labels[i] for i in q])).float().mean()
                ),
            }
            for q in quarters
        ],
        "typos": perturbation_curve(
            classifier, texts, labels, typos, TYPO_LEVELS, seeds=TYPO_SEEDS
        ),  # fmt: skip
        "casing": casing,
        "truncation": perturbation_curve(
            classifier, texts, labels, truncate_words, TRUNCATION_WORDS
        ),  # fmt: skip
        "attack_examples": examples,
    }


def out_of_domain(classifier, texts) -> dict:
    """Confidence on SST-2's held-out sentences against documentation sentences (no sentiment)."""
    documentation = offline_classification("validation").texts
    inside = max_softmax_scores(classifier, texts)
    outside = max_softmax_scores(classifier, documentation)
    predicted = classifier.predict(documentation)
    return {
        "out_of_domain_texts": "offline_classification('validation'): 300 sentences of Python's "
        "standard-library documentation",
        "auroc_max_softmax": auroc(inside, outside),
        "mean_confidence_in_domain": float(inside.mean()),
        "mean_confidence_out_of_domain": float(outside.mean()),
        "share_out_of_domain_above_0.9": float((outside > 0.9).float().mean()),
        "share_in_domain_above_0.9": float((inside > 0.9).float().mean()),
        "out_of_domain_predicted_positive": float((predicted == 1).float().mean()),
        "examples": [
            {"text": t, "confidence": float(c)}
            for t, c in zip(documentation[:5], outside[:5].tolist(), strict=True)
        ],
    }


def bias(classifier, encoder, tokenizer) -> dict:
    """SEAT on MiniLM, and the classifier's positive probability on name templates."""
    seat = seat_test(encoder, tokenizer, permutations=100_000, seed=0)
    groups = {}
    for group, names in (("male_names", MALE_NAMES), ("female_names", FEMALE_NAMES)):
        sentences = template_sentences(names, SENTIMENT_TEMPLATES)
        groups[group] = classifier.predict_proba(sentences)[:, 1]
    gap = float(groups["male_names"].mean() - groups["female_names"].mean())
    return {
        "seat_minilm_names_career_family": seat,
        "sentiment_templates": list(SENTIMENT_TEMPLATES),
        "mean_positive_probability": {k: float(v.mean()) for k, v in groups.items()},
        "gap_male_minus_female": gap,
        "gap_permutation_p": permutation_p(groups["male_names"], groups["female_names"]),
    }


def permutation_p(x: torch.Tensor, y: torch.Tensor, permutations: int = 100_000) -> float:
    """Two-sided permutation p-value of the difference of means (random relabellings)."""
    generator = torch.Generator().manual_seed(0)
    pooled = torch.cat([x, y]).double()
    observed = abs(float(x.double().mean() - y.double().mean()))
    hits = 0
    for _ in range(permutations // 1000):
        order = torch.stack([torch.randperm(len(pooled), generator=generator) for _ in range(1000)])
        shuffled = pooled[order]  # (1000, n)
        gaps = (shuffled[:, : len(x)].mean(1) - shuffled[:, len(x) :].mean(1)).abs()
        hits += int((gaps >= observed - 1e-12).sum())
    return (hits + 1) / (permutations + 1)


if __name__ == "__main__":
    sys.exit(main())
