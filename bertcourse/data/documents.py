"""Documents and corpora: a document is a list of sentences; a corpus, documents with a source.

The train/validation split is by document, chosen by a hash of the document's id, so it is the
same on every machine, whatever order the files were found in.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `datasets` takes a second to import: only the functions that need it do
    import datasets


__all__ = [
    "SPLITS",
    "VALIDATION_BUCKETS",
    "Document",
    "Corpus",
    "is_validation_document",
    "select_split",
    "check_split",
]

SPLITS = ("train", "validation", "all")
# One document in ten goes to validation, chosen by a hash of its id: the split
# is the same on every machine and in every run, and adding a document never
# moves another one between splits (unlike a seeded shuffle).
VALIDATION_BUCKETS = 10


# ----------------------------------------------------------------------------
# Documents and corpora
# ----------------------------------------------------------------------------


@dataclass
class Document:
    """One document (a reference page, a module, an article) as a list of sentences."""

    id: str
    sentences: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


@dataclass
class Corpus:
    """Documents with where they come from and under which license."""

    name: str
    documents: list[Document]
    provenance: str = ""
    license: str = ""

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def num_sentences(self) -> int:
        return sum(len(document.sentences) for document in self.documents)

    @property
    def num_characters(self) -> int:
        return sum(len(sentence) for document in self.documents for sentence in document.sentences)

    def sentences(self) -> list[str]:
        return [sentence for document in self.documents for sentence in document.sentences]

    def texts(self) -> list[str]:
        return [document.text for document in self.documents]

    def to_dataset(self) -> datasets.Dataset:
        """A `datasets.Dataset` with one row per sentence: text, document_id, sentence_index."""
        import datasets  # deferred, as above

        rows = [
            (sentence, document.id, index)
            for document in self.documents
            for index, sentence in enumerate(document.sentences)
        ]
        return datasets.Dataset.from_dict(
            {
                "text": [text for text, _, _ in rows],
                "document_id": [document_id for _, document_id, _ in rows],
                "sentence_index": [index for _, _, index in rows],
            }
        )

    def summary(self) -> str:
        return (
            f"{self.name}: {len(self):,} documents, {self.num_sentences:,} sentences, "
            f"{self.num_characters:,} characters"
        )


def is_validation_document(document_id: str) -> bool:
    """The deterministic split: about one document in ten, by a CRC-32 of its id."""
    return zlib.crc32(document_id.encode()) % VALIDATION_BUCKETS == 0


def select_split(documents: Sequence[Document], split: str) -> list[Document]:
    check_split(split)
    if split == "all":
        return list(documents)
    want_validation = split == "validation"
    return [d for d in documents if is_validation_document(d.id) == want_validation]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
