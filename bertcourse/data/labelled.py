"""Labelled classification data: offline tasks from the corpus, SST-2, IMDB, readers' files.

A `LabelledData` holds texts (and optional second texts) with integer labels and
their names; `tokenize_dataset` turns any of them, as a `datasets.Dataset`, into
model inputs.
"""

from __future__ import annotations

import functools
import os
import random
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .corpus import load_hub_dataset, read_table, require_columns
from .documents import check_split, is_validation_document
from .offline import installed_packages, module_docstrings, module_files, offline_corpus
from .text import prose_sentences

__all__ = [
    "OFFLINE_CLASSIFICATION_PACKAGES",
    "OFFLINE_CLASSIFICATION_VALIDATION_PER_CLASS",
    "OFFLINE_CLASSIFICATION_TASK",
    "PAIR_LABEL_NAMES",
    "OFFLINE_LABELLED_HINT",
    "LabelledData",
    "load_classification",
    "load_sst2",
    "load_imdb",
    "offline_classification",
    "offline_pair_classification",
    "TOPIC_PACKAGES",
    "TOPIC_SENTENCES_PER_CLASS",
    "offline_topic_classification",
    "TOKENIZER_OUTPUTS",
    "LABEL_COLUMNS",
    "tokenize_dataset",
]

if TYPE_CHECKING:  # `datasets` takes a second to import: only the functions that need it do
    import datasets


# The offline classification task: which part of the standard library does a
# documentation sentence describe? The label is the top-level package of the
# module the sentence comes from. These five packages exist in CPython
# 3.10-3.13 and give over 300 distinct sentences each. The split is by
# sentence, not by module: split by module, the validation set held a few
# whole modules (logging/__init__ alone was half of it), so it measured the
# luck of the split more than the model (MiniLM scored below the majority rate).
OFFLINE_CLASSIFICATION_PACKAGES = ("asyncio", "email", "http", "importlib", "logging")
OFFLINE_CLASSIFICATION_VALIDATION_PER_CLASS = 60  # a balanced validation set: chance is 1/5
OFFLINE_CLASSIFICATION_TASK = (
    "Which part of the Python standard library does this documentation sentence describe? "
    "Each label is a top-level package of the standard library ("
    + ", ".join(OFFLINE_CLASSIFICATION_PACKAGES)
    + "); a sentence's label is the package whose source file holds the docstring it comes from."
)
PAIR_LABEL_NAMES = ["different_document", "same_document"]

# A topic task on text the course's pretraining never read: documentation sentences of installed
# packages that the large offline corpus leaves out, labelled with the subject of the package.
TOPIC_PACKAGES = {
    "machine learning": ("sklearn",),
    "scientific computing": ("scipy",),
    "databases": ("sqlalchemy",),
    "documents and markup": ("docutils", "sphinx"),
    "software testing": ("hypothesis", "_pytest"),
}
TOPIC_SENTENCES_PER_CLASS = {"train": 1_000, "validation": 180}  # balanced: chance is 1/5

OFFLINE_LABELLED_HINT = (
    "Offline, use offline_classification() or offline_pair_classification() (labelled tasks "
    "built from the Python documentation), or your own file with load_classification(path, "
    "text_column, label_column)."
)


# ----------------------------------------------------------------------------
# Labelled classification data
# ----------------------------------------------------------------------------


@dataclass
class LabelledData:
    """Texts (and optional second texts) with integer labels and the names of the labels."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    pairs: list[str] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels.")
        if self.pairs is not None and len(self.pairs) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.pairs)} pairs.")
        bad = [label for label in self.labels if not 0 <= label < len(self.label_names)]
        if bad:
            raise ValueError(
                f"Label {bad[0]} is not an id of the {len(self.label_names)} label names "
                f"{self.label_names}: labels must be in 0..{len(self.label_names) - 1}."
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    def class_counts(self) -> dict[str, int]:
        counts = Counter(self.labels)
        return {name: counts[index] for index, name in enumerate(self.label_names)}

    def to_dataset(self) -> datasets.Dataset:
        """A `datasets.Dataset` with columns text, (text_pair,) label."""
        import datasets  # deferred, as above

        columns: dict[str, list] = {"text": self.texts}
        if self.pairs is not None:
            columns["text_pair"] = self.pairs
        columns["label"] = self.labels
        return datasets.Dataset.from_dict(columns)

    def subset(self, indices: Sequence[int], name: str) -> LabelledData:
        return LabelledData(
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            label_names=list(self.label_names),
            pairs=None if self.pairs is None else [self.pairs[i] for i in indices],
            name=name,
        )

    def split(
        self, validation_fraction: float = 0.1, seed: int = 0
    ) -> tuple[LabelledData, LabelledData]:
        """(train, validation), stratified: each class keeps its share in both parts."""
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}.")
        generator = random.Random(seed)
        validation: list[int] = []
        for label in range(len(self.label_names)):
            members = [i for i, value in enumerate(self.labels) if value == label]
            generator.shuffle(members)
            validation.extend(members[: round(validation_fraction * len(members))])
        chosen = set(validation)
        train = [i for i in range(len(self)) if i not in chosen]
        return (
            self.subset(train, f"{self.name}/train"),
            self.subset(sorted(validation), f"{self.name}/validation"),
        )

    def sentence_split(
        self, validation_size: int, min_words: int = 15, seed: int = 0
    ) -> tuple[LabelledData, LabelledData]:
        """(train, validation) for phrase-level data such as SST-2's training file, with no leak.

        SST-2's training file labels each parsed review sentence *and* its sub-phrases, so a
        random split scores a model on phrases it trained on as parts of longer ones. Here the
        validation part is `validation_size` whole sentences, drawn at random among the phrases
        of at least `min_words` words that are part of no longer phrase; the training part is
        every phrase that is not one of them and not part of one. (Phrases are compared as
        whole words, whitespace normalised.)
        """
        if self.pairs is not None:
            raise ValueError("sentence_split splits single texts; this data has sentence pairs.")
        words = [" ".join(text.split()) for text in self.texts]
        long_ones = [text for text in set(words) if len(text.split()) > min_words]
        inside_longer = {  # every phrase of >= min_words words inside a longer phrase
            " ".join(tokens[start:end])
            for tokens in (text.split() for text in long_ones)
            for start in range(len(tokens))
            for end in range(start + min_words, len(tokens) + 1)
            if end - start < len(tokens)
        }
        candidates = sorted(
            {text for text in words if len(text.split()) >= min_words} - inside_longer
        )
        if len(candidates) < validation_size:
            raise ValueError(
                f"{self.name or 'The data'} has {len(candidates)} whole sentences of at least "
                f"{min_words} words, fewer than validation_size={validation_size}: ask for fewer "
                "or lower min_words."
            )
        held_out = set(random.Random(seed).sample(candidates, validation_size))
        parts_of_held_out = {
            " ".join(tokens[start:end])
            for tokens in (text.split() for text in held_out)
            for start in range(len(tokens))
            for end in range(start + 1, len(tokens) + 1)
        }
        validation, seen = [], set()
        for index, text in enumerate(words):
            if text in held_out and text not in seen:  # a duplicated sentence is scored once
                validation.append(index)
                seen.add(text)
        train = [i for i, text in enumerate(words) if text not in parts_of_held_out]
        return (
            self.subset(train, f"{self.name}/train"),
            self.subset(validation, f"{self.name}/validation"),
        )


def load_classification(
    path: str | os.PathLike,
    text_column: str,
    label_column: str,
    text_pair_column: str | None = None,
    delimiter: str | None = None,
) -> LabelledData:
    """Labelled texts from a CSV or TSV file (GLUE-style TSV: quotes are plain characters).

    Labels that are all non-negative integers are used as ids, with names
    "0".."K-1"; any other labels are named by their sorted unique values.
    """
    path = Path(path).expanduser()
    columns, rows = read_table(path, delimiter)
    wanted = [text_column, label_column] + ([text_pair_column] if text_pair_column else [])
    require_columns(path, columns, wanted)
    if not rows:
        raise ValueError(f"{path} has a header but no rows.")
    for number, (line, row) in enumerate(rows, start=1):
        for column in wanted:
            if not (row.get(column) or "").strip():
                raise ValueError(
                    f"Row {number} of {path} (line {line}) has no {column!r}: fill it in or "
                    "remove the row."
                )
    raw_labels = [row[label_column].strip() for _, row in rows]
    labels, label_names = _label_ids(raw_labels)
    return LabelledData(
        texts=[row[text_column] for _, row in rows],
        labels=labels,
        label_names=label_names,
        pairs=[row[text_pair_column] for _, row in rows] if text_pair_column else None,
        name=path.name,
    )


def _label_ids(raw_labels: list[str]) -> tuple[list[int], list[str]]:
    if all(re.fullmatch(r"\d+", label) for label in raw_labels):
        ids = [int(label) for label in raw_labels]
        values = sorted(set(ids))
        if values == list(range(len(values))):  # 0..K-1: the ids themselves
            return ids, [str(i) for i in values]
        names = [str(value) for value in values]
        warnings.warn(
            f"The labels are the integers {', '.join(names)}, not 0..{len(values) - 1}: the model "
            f"gets {len(values)} classes, ids {', '.join(f'{i} = {n!r}' for i, n in enumerate(names))}"
            " (label_names gives the mapping back).",
            stacklevel=3,
        )
        index = {value: i for i, value in enumerate(values)}
        return [index[i] for i in ids], names
    label_names = sorted(set(raw_labels))
    index = {name: i for i, name in enumerate(label_names)}
    return [index[label] for label in raw_labels], label_names


def load_sst2(split: str = "train") -> LabelledData:
    """SST-2 (GLUE) from the hub: movie-review phrases, negative/positive.

    The test split's labels are hidden (-1) in GLUE; use "validation" to score.
    """
    dataset = load_hub_dataset("glue", "sst2", split=split, hint=OFFLINE_LABELLED_HINT)
    return LabelledData(
        list(dataset["sentence"]),
        list(dataset["label"]),
        ["negative", "positive"],
        name=f"sst2/{split}",
    )


def load_imdb(split: str = "train") -> LabelledData:
    """IMDB movie reviews from the hub, negative/positive."""
    dataset = load_hub_dataset("imdb", split=split, hint=OFFLINE_LABELLED_HINT)
    return LabelledData(
        list(dataset["text"]),
        list(dataset["label"]),
        ["negative", "positive"],
        name=f"imdb/{split}",
    )


def offline_classification(split: str = "train") -> LabelledData:
    """Which part of the standard library does this documentation sentence describe?

    Real text, real labels, no download: every sentence of a module of one of
    `OFFLINE_CLASSIFICATION_PACKAGES` is labelled with that package (a
    sentence that occurs more than once, e.g. "Return True if ...", is left
    out: its label could be ambiguous, and it could land in both splits).
    The split is a stratified split of *sentences*: per package, the
    `OFFLINE_CLASSIFICATION_VALIDATION_PER_CLASS` sentences with the lowest
    CRC-32 go to validation (balanced: the majority rate is 1/5), all others
    to train (not balanced: see `class_counts()`). So a module contributes to
    both splits, and the validation sentences are mostly from documents of the
    offline corpus's *train* split, which the course's pretraining read
    without labels (as BERT's pretraining read Wikipedia before its tasks).
    split: "train", "validation" or "all".
    """
    check_split(split)
    label_names = list(OFFLINE_CLASSIFICATION_PACKAGES)
    by_label: list[list[str]] = [[] for _ in label_names]
    for document in offline_corpus("all").documents:
        package = _top_level_package(document.id)
        if package in label_names:
            by_label[label_names.index(package)].extend(document.sentences)
    occurrences = Counter(sentence for sentences in by_label for sentence in sentences)
    texts, labels = [], []
    for label, sentences in enumerate(by_label):
        unique = [sentence for sentence in sentences if occurrences[sentence] == 1]
        by_hash = sorted(unique, key=lambda sentence: (zlib.crc32(sentence.encode()), sentence))
        validation = set(by_hash[:OFFLINE_CLASSIFICATION_VALIDATION_PER_CLASS])
        for sentence in unique:  # corpus order
            if split == "all" or (sentence in validation) == (split == "validation"):
                texts.append(sentence)
                labels.append(label)
    return LabelledData(texts, labels, label_names, name=f"stdlib-package/{split}")


def offline_topic_classification(split: str = "train") -> LabelledData:
    """What is this documentation sentence about? Five subjects, from text no course run read.

    Each label of `TOPIC_PACKAGES` is a subject and an installed package that
    the large offline corpus leaves out (scikit-learn for machine learning,
    SQLAlchemy for databases, docutils and Sphinx for documents and markup, ...); its examples are sentences of that
    package's docstrings, cleaned like the corpus. Sentences that also occur in
    the large offline corpus are dropped, so a model pretrained on it has never
    read any of them. Modules are split by `is_validation_document`, and a
    sentence found in both splits or under two subjects is left out; each
    split is balanced, with the `TOPIC_SENTENCES_PER_CLASS` sentences of
    lowest CRC-32 per subject.
    split: "train" or "validation".
    """
    if split not in TOPIC_SENTENCES_PER_CLASS:
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}.")
    wanted = [name for names in TOPIC_PACKAGES.values() for name in names]
    packages = {p.name: p for p in installed_packages(wanted)}
    missing = [name for name in wanted if name not in packages]
    if missing:
        raise FileNotFoundError(
            f"The topic task reads the docstrings of {', '.join(missing)}, not installed here: "
            f"pip install {' '.join(missing)} (scikit-learn for sklearn, pytest for _pytest)."
        )
    texts, labels = [], []
    for label, sentences in enumerate(_topic_sentences(tuple(packages.values()))[split]):
        ranked = sorted(sentences, key=lambda t: (zlib.crc32(t.encode()), t))
        chosen = ranked[: TOPIC_SENTENCES_PER_CLASS[split]]
        texts.extend(chosen)
        labels.extend([label] * len(chosen))
    return LabelledData(texts, labels, list(TOPIC_PACKAGES), name=f"topics/{split}")


@functools.lru_cache(maxsize=1)
def _topic_sentences(packages: tuple) -> dict[str, list[list[str]]]:
    """split -> one list of kept sentences per subject; both splits at once, parsed once."""
    by_name = {p.name: p for p in packages}
    seen = {s for d in offline_corpus("all", "large").documents for s in d.sentences}
    by_split = {name: [set() for _ in TOPIC_PACKAGES] for name in TOPIC_SENTENCES_PER_CLASS}
    for label, names in enumerate(TOPIC_PACKAGES.values()):
        for package in names:
            for module, path in module_files(by_name[package].root, package):
                name = "validation" if is_validation_document(f"module:{module}") else "train"
                for docstring in module_docstrings(path):
                    by_split[name][label].update(prose_sentences(docstring))
    # A sentence in both splits, or under two subjects ("If None, ... is used."), is left out.
    counts = Counter(s for sets in by_split.values() for sentences in sets for s in sentences)
    return {
        name: [[t for t in sentences if counts[t] == 1 and t not in seen] for sentences in sets]
        for name, sets in by_split.items()
    }


def _top_level_package(document_id: str) -> str | None:
    kind, _, name = document_id.partition(":")
    return name.split(".")[0] if kind == "module" else None


def offline_pair_classification(split: str = "train", seed: int = 0) -> LabelledData:
    """Do two sentences come from the same document? (the idea of BERT's next-sentence task)

    For every pair of consecutive sentences of a document, half of the pairs
    (chosen by a seeded shuffle) keep the true next sentence (label 1,
    "same_document") and the other half get a random sentence of another
    document of the same split (label 0, "different_document").
    """
    documents = offline_corpus(split).documents
    generator = random.Random(seed)
    consecutive = [
        (d, i) for d, document in enumerate(documents) for i in range(len(document.sentences) - 1)
    ]
    labels = [1] * ((len(consecutive) + 1) // 2) + [0] * (len(consecutive) // 2)
    generator.shuffle(labels)
    texts, pairs = [], []
    for (d, i), label in zip(consecutive, labels, strict=True):
        texts.append(documents[d].sentences[i])
        if label == 1:
            pairs.append(documents[d].sentences[i + 1])
        else:
            other = generator.randrange(len(documents) - 1)
            other += other >= d  # any document but this one
            pairs.append(generator.choice(documents[other].sentences))
    return LabelledData(texts, labels, list(PAIR_LABEL_NAMES), pairs, name=f"same-document/{split}")


# ----------------------------------------------------------------------------
# Tokenizing a dataset
# ----------------------------------------------------------------------------

TOKENIZER_OUTPUTS = ("input_ids", "token_type_ids", "attention_mask")
LABEL_COLUMNS = ("label", "labels")


def tokenize_dataset(
    dataset: datasets.Dataset,
    tokenizer: Callable[..., Any],
    text_column: str = "text",
    text_pair_column: str | None = None,
    max_length: int = 128,
    batch_size: int = 1000,
    num_proc: int | None = None,
    remove_columns: bool = True,
) -> datasets.Dataset:
    """input_ids, token_type_ids and attention_mask for every row, in batches.

    `tokenizer` is any callable with the Hugging Face signature
    `tokenizer(texts, text_pairs_or_None, truncation=True, max_length=...)`:
    a `transformers` tokenizer or the course's `BertTokenizer`. With
    `remove_columns`, the original columns are dropped except a label
    column, which training still needs. No padding here: a collator pads
    each batch to its own longest row.
    """
    wanted = [text_column] + ([text_pair_column] if text_pair_column else [])
    require_columns("The dataset", dataset.column_names, wanted)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch[text_pair_column] if text_pair_column else None
        encoded = tokenizer(batch[text_column], pairs, truncation=True, max_length=max_length)
        return {key: list(encoded[key]) for key in TOKENIZER_OUTPUTS if key in encoded}

    dropped = [c for c in dataset.column_names if c not in LABEL_COLUMNS] if remove_columns else []
    return dataset.map(
        encode, batched=True, batch_size=batch_size, num_proc=num_proc, remove_columns=dropped
    )
