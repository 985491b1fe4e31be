"""Corpora: the offline default corpus, hub datasets, readers' own files, and a cache.

BERT learns from running prose, so the course needs real English text that is
there on every machine, without a download. Every CPython installation ships
two such texts: the Language Reference as plain text (`pydoc_data.topics`, the
pages `help("assert")` shows) and the docstrings of the standard library. This
module turns them into a corpus of documents and sentences, and loads the same
shape from the Hugging Face hub (WikiText) or from a reader's .txt/.csv/.tsv files.

Nothing here hangs offline: before `datasets` is asked for anything, the hub is
checked (the HF_HUB_OFFLINE / HF_DATASETS_OFFLINE switches, then a socket
connect of at most 3 s), and an unavailable corpus raises
`CorpusUnavailableError` at once, with the offline alternative in the message.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import socket
import sys
import sysconfig
import threading
import tokenize
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..files import atomic_save_file

__all__ = [
    "SPLITS",
    "VALIDATION_BUCKETS",
    "OFFLINE_CORPUS_LICENSE",
    "OFFLINE_CORPUS_PROVENANCE",
    "SKIPPED_STDLIB_DIRECTORIES",
    "MIN_DOCSTRING_CHARACTERS",
    "CACHE_FORMAT_VERSION",
    "LOCAL_SUFFIXES",
    "WIKITEXT_ALIASES",
    "HUB_ADDRESS",
    "HUB_PROBE_TIMEOUT_S",
    "OFFLINE_CORPUS_HINT",
    "CorpusUnavailableError",
    "Document",
    "Corpus",
    "is_validation_document",
    "select_split",
    "check_split",
    "offline_corpus",
    "build_offline_documents",
    "stdlib_module_files",
    "module_docstrings",
    "cache_directory",
    "offline_cache_path",
    "load_hub_dataset",
    "load_corpus",
    "WIKITEXT_TITLE",
    "WIKITEXT_HEADING",
    "WIKITEXT_SPLIT_MARK",
    "wikitext_documents",
    "read_table",
    "require_columns",
]

if TYPE_CHECKING:  # `datasets` takes a second to import: only the functions that need it do
    import datasets


from .text import prose_sentences, split_sentences

SPLITS = ("train", "validation", "all")
# One document in ten goes to validation, chosen by a hash of its id: the split
# is the same on every machine and in every run, and adding a document never
# moves another one between splits (unlike a seeded shuffle).
VALIDATION_BUCKETS = 10

OFFLINE_CORPUS_LICENSE = (
    "PSF License (Python Software Foundation License Version 2). Both sources are part of "
    "CPython: the standard library's source code and the Python documentation (from which "
    "pydoc_data.topics is generated) are distributed under the PSF License Version 2."
)
OFFLINE_CORPUS_PROVENANCE = (
    f"Python {sys.version.split()[0]}: the Language Reference sections shipped as plain text in "
    "pydoc_data.topics (what help('assert') shows), and the module, class and function "
    "docstrings of the standard library's .py files under sysconfig.get_paths()['stdlib']. "
    "Human-written English; cleaned to prose sentences by bertcourse.data (code, doctests, "
    "grammar rules and reST markup removed, exact duplicate sentences dropped)."
)
# Parts of the standard library that are tests, tools, vendored packages or
# absent on some installs (tkinter, distutils), so the corpus is the same
# everywhere for a given Python version.
SKIPPED_STDLIB_DIRECTORIES = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "site-packages",
        "__pycache__",
        "tkinter",
        "distutils",
        "encodings",  # generated codecs: "Python Character Mapping Codec cp1026 generated from ..."
    }
)
# Short docstrings are mostly one-liners ("Return self."), which add little prose.
MIN_DOCSTRING_CHARACTERS = 40
CACHE_FORMAT_VERSION = 1  # bump when the cleaning rules change: old caches are then rebuilt

LOCAL_SUFFIXES = (".txt", ".csv", ".tsv")
WIKITEXT_ALIASES = {
    "wikitext-103": ("wikitext", "wikitext-103-raw-v1"),
    "wikitext-2": ("wikitext", "wikitext-2-raw-v1"),
}
HUB_ADDRESS = ("huggingface.co", 443)
HUB_PROBE_TIMEOUT_S = 3.0
OFFLINE_CORPUS_HINT = (
    'Offline, use load_corpus("offline") (the Python documentation that ships with every '
    "Python, over 1 MB of English prose) or a local file path: a .txt file, a .csv/.tsv file "
    "with a text column, or a directory of .txt files."
)


class CorpusUnavailableError(FileNotFoundError):
    """A hub dataset cannot be reached (offline, or the hub does not answer); says what to use."""


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


# ----------------------------------------------------------------------------
# The offline corpus: the Python documentation that ships with Python
# ----------------------------------------------------------------------------


def offline_corpus(split: str = "train") -> Corpus:
    """Real English prose from this Python installation: reference pages and docstrings.

    Built once (a few seconds) and cached as JSON under `$BERTCOURSE_CACHE`
    (default ~/.cache/bertcourse); later calls read the cache. Documents are
    split into train and validation by `is_validation_document`.
    """
    check_split(split)
    path = offline_cache_path()
    documents = _read_cache(path)
    if documents is None:
        print(
            f"bertcourse: building the offline corpus from Python {sys.version.split()[0]}'s "
            f"documentation, once (a few seconds) -> {path}",
            file=sys.stderr,
        )
        documents = build_offline_documents()
        _write_cache(path, documents)
    return Corpus(
        name=f"offline/{split}",
        documents=select_split(documents, split),
        provenance=OFFLINE_CORPUS_PROVENANCE,
        license=OFFLINE_CORPUS_LICENSE,
    )


def build_offline_documents() -> list[Document]:
    """One document per reference page, then one per standard-library module, deduplicated.

    Exact duplicate sentences (boilerplate such as the codec modules'
    docstrings) are kept once, at their first occurrence: repeats would let a
    model memorise them and would leak between train and validation.
    """
    seen: set[str] = set()
    documents = []
    for document_id, text_parts in _offline_sources():
        sentences = []
        for part in text_parts:
            for sentence in prose_sentences(part):
                if sentence not in seen:
                    seen.add(sentence)
                    sentences.append(sentence)
        if sentences:
            documents.append(Document(document_id, sentences))
    return documents


def _offline_sources() -> Iterator[tuple[str, list[str]]]:
    from pydoc_data.topics import topics  # deferred: a megabyte of text, read only here

    for name in sorted(topics):
        yield f"topic:{name}", [topics[name]]
    for module_name, path in stdlib_module_files():
        docstrings = module_docstrings(path)
        if docstrings:
            yield f"module:{module_name}", docstrings


def stdlib_module_files() -> list[tuple[str, Path]]:
    """(dotted module name, path) of the standard library's .py files, in sorted order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    modules = []
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_STDLIB_DIRECTORIES)
        for filename in sorted(f for f in filenames if f.endswith(".py")):
            parts = (Path(directory) / filename).relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts and all(part.isidentifier() for part in parts):
                modules.append((".".join(parts), Path(directory) / filename))
    return modules


def module_docstrings(path: Path) -> list[str]:
    """The module docstring, then class and function docstrings in source order."""
    try:
        with tokenize.open(path) as file:  # honours a "# -*- coding: ... -*-" line
            source = file.read()
        with warnings.catch_warnings():  # invalid escape sequences in old sources
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    return [text for text in _docstrings_in_order(tree) if len(text) >= MIN_DOCSTRING_CHARACTERS]


def _docstrings_in_order(node: ast.AST) -> Iterator[str]:
    docstring = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
    if docstring:
        yield docstring
    for child in getattr(node, "body", []):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _docstrings_in_order(child)


def cache_directory() -> Path:
    return Path(os.environ.get("BERTCOURSE_CACHE") or "~/.cache/bertcourse").expanduser()


def offline_cache_path() -> Path:
    """The cache file: one per Python version (its docs differ) and cache format."""
    version = f"{sys.implementation.name}{'.'.join(map(str, sys.version_info[:3]))}"
    return cache_directory() / f"offline-corpus-{version}-v{CACHE_FORMAT_VERSION}.json"


def _read_cache(path: Path) -> list[Document] | None:
    """The cached documents, or None if the file is missing or unreadable (then rebuild)."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload["format_version"] != CACHE_FORMAT_VERSION:
            return None
        documents = [Document(item["id"], list(item["sentences"])) for item in payload["documents"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return documents if documents else None


def _write_cache(path: Path, documents: list[Document]) -> None:
    """Write atomically (temporary file + rename): a reader never sees half a file."""
    payload = {
        "format_version": CACHE_FORMAT_VERSION,
        "python_version": sys.version,
        "provenance": OFFLINE_CORPUS_PROVENANCE,
        "license": OFFLINE_CORPUS_LICENSE,
        "documents": [{"id": d.id, "sentences": d.sentences} for d in documents],
    }
    text = json.dumps(payload, ensure_ascii=False)
    try:
        atomic_save_file(lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), path)
    except OSError as error:  # a read-only home: the corpus still works, only slower next time
        print(f"bertcourse: could not cache the offline corpus at {path}: {error}", file=sys.stderr)


# ----------------------------------------------------------------------------
# The hub, without hanging offline
# ----------------------------------------------------------------------------


def _is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _hub_probe_address() -> tuple[str, int]:
    """What a download would connect to first: the HTTPS proxy, HF_ENDPOINT or the hub."""
    for variable in ("HTTPS_PROXY", "https_proxy", "HF_ENDPOINT"):
        url = urlparse(os.environ.get(variable, ""))
        if url.hostname:
            return url.hostname, url.port or (80 if url.scheme == "http" else 443)
    return HUB_ADDRESS


def _hub_unavailable_reason(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be used now, or None if it can.

    The connect runs in a thread so that a slow DNS lookup, which a socket
    timeout does not cover, cannot make us wait longer than `timeout`.
    """
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _is_truthy(os.environ.get(variable)):
            return f"{variable}={os.environ[variable]} is set"
    host, port = _hub_probe_address()
    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["connected"] = True
        except OSError as error:
            outcome["error"] = error

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if outcome.get("connected"):
        return None
    error = outcome.get("error", f"no answer within {timeout:.0f} s")
    return f"{host}:{port} cannot be reached ({error})"


def load_hub_dataset(
    name: str, config: str | None = None, split: str = "train", hint: str = OFFLINE_CORPUS_HINT
) -> datasets.Dataset:
    """`datasets.load_dataset(name, config, split=...)`, or `CorpusUnavailableError` at once.

    split="all" concatenates every split of the dataset.
    """
    what = f"the Hugging Face dataset {name!r}" + (f" ({config})" if config else "")
    reason = _hub_unavailable_reason()
    if reason:
        raise CorpusUnavailableError(f"Cannot load {what}: {reason}. {hint}")
    import datasets  # deferred, as above

    try:
        if split == "all":
            return datasets.concatenate_datasets(list(datasets.load_dataset(name, config).values()))
        return datasets.load_dataset(name, config, split=split)
    except Exception as error:  # datasets raises many kinds; all mean "not available"
        raise CorpusUnavailableError(
            f"Cannot load {what} (split {split!r}): {error}. {hint}"
        ) from error


# ----------------------------------------------------------------------------
# Corpora by name or path
# ----------------------------------------------------------------------------


def load_corpus(
    name_or_path: str | os.PathLike, split: str = "train", text_column: str = "text"
) -> Corpus:
    """A corpus by name or path: "offline", a local file or directory, or a hub dataset.

    - "offline": `offline_corpus(split)`.
    - a .txt file (documents separated by blank lines), a .csv/.tsv file (one
      document per row of `text_column`) or a directory of .txt files (one
      document per file). A file is one split of the reader's making, so it
      is returned whole for split "train" or "all".
    - "wikitext-103", "wikitext-2", or any `datasets` name (`text_column` of
      each row is a document; WikiText rows are joined into articles).
    """
    text = os.fspath(name_or_path)
    if text == "offline":
        return offline_corpus(split)
    path = Path(text).expanduser()
    if path.exists():
        if split not in ("train", "all"):
            raise ValueError(
                f"{path} is one local file, returned whole; split {split!r} does not apply. "
                "Keep validation text in a file of its own and load that path."
            )
        return _local_corpus(path, text_column)
    if path.suffix.lower() in LOCAL_SUFFIXES or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"No such file or directory: {path} (from {os.getcwd()}).")
    return _hub_corpus(text, split, text_column)


def _local_corpus(path: Path, text_column: str) -> Corpus:
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ValueError(f"The directory {path} holds no .txt files.")
        documents = [
            Document(file.name, split_sentences(file.read_text(encoding="utf-8"))) for file in files
        ]
    elif path.suffix.lower() == ".txt":
        paragraphs = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
        documents = [
            Document(f"{path.name}:{index}", split_sentences(paragraph))
            for index, paragraph in enumerate(p for p in paragraphs if p.strip())
        ]
    elif path.suffix.lower() in (".csv", ".tsv"):
        columns, rows = read_table(path)
        require_columns(path, columns, [text_column])
        documents = [
            Document(f"{path.name}:{line}", split_sentences(row[text_column] or ""))
            for line, row in rows
        ]
    else:
        raise ValueError(
            f"Cannot read {path}: unsupported file type {path.suffix!r}. Use a .txt file "
            "(documents separated by blank lines), a .csv/.tsv file with a text column, or a "
            "directory of .txt files."
        )
    documents = [d for d in documents if d.sentences]
    return Corpus(name=str(path), documents=documents, provenance=f"local file {path}")


def _hub_corpus(name: str, split: str, text_column: str) -> Corpus:
    dataset_name, config = WIKITEXT_ALIASES.get(name, (name, None))
    dataset = load_hub_dataset(dataset_name, config, split=split)
    require_columns(name, dataset.column_names, [text_column])
    texts = list(dataset[text_column])  # a datasets Column, read once
    if dataset_name == "wikitext":
        documents = wikitext_documents(texts)
    else:
        documents = [
            Document(f"{name}:{index}", split_sentences(text)) for index, text in enumerate(texts)
        ]
    return Corpus(
        name=f"{name}/{split}",
        documents=[d for d in documents if d.sentences],
        provenance=f"Hugging Face dataset {dataset_name}" + (f" ({config})" if config else ""),
        license="see the dataset card on huggingface.co",
    )


WIKITEXT_TITLE = re.compile(r"^ = ([^=].*?) = $")  # " = Title = ", not " = = Section = = "
WIKITEXT_HEADING = re.compile(r"^ (= )+.*( =)+ $")
# WikiText's tokenizer split "1,000" and "well-known" into "1 @,@ 000" and "well @-@ known".
WIKITEXT_SPLIT_MARK = re.compile(r" @([-,.])@ ")


def wikitext_documents(lines: Iterable[str]) -> list[Document]:
    """WikiText rows (one paragraph or heading per row) joined into one document per article.

    An article starts at a top-level heading " = Title = "; section headings
    (" = = Section = = ") are dropped, since they are not sentences.
    """
    documents: list[Document] = []
    for raw_line in lines:
        line = raw_line.rstrip("\n")
        title = WIKITEXT_TITLE.match(line)
        if title:
            documents.append(Document(f"wikitext:{title.group(1).strip()}", []))
        elif line.strip() and not WIKITEXT_HEADING.match(line):
            if not documents:
                documents.append(Document("wikitext:(untitled)", []))
            documents[-1].sentences.extend(split_sentences(WIKITEXT_SPLIT_MARK.sub(r"\1", line)))
    return documents


def read_table(
    path: Path, delimiter: str | None = None
) -> tuple[list[str], list[tuple[int, dict]]]:
    """(column names, [(line number, row)]) of a CSV or TSV file.

    A .tsv file is read GLUE-style: a tab separates fields and quotes are
    ordinary characters (SST-2's sentences contain unmatched '"').
    """
    if delimiter is None:
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".tsv"):
            raise ValueError(
                f"Cannot tell how {path} separates columns from its extension {suffix!r}: "
                "name it .csv or .tsv, or pass delimiter=',' or delimiter='\\t'."
            )
        delimiter = "\t" if suffix == ".tsv" else ","
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(path, encoding="utf-8-sig", newline="") as file:  # -sig: Excel's byte-order mark
        reader = csv.DictReader(file, delimiter=delimiter, quoting=quoting)
        columns = list(reader.fieldnames or [])
        if not columns:
            raise ValueError(f"{path} is empty: expected a header line with column names.")
        rows = []
        for row in reader:
            rows.append((reader.line_num, row))
    return columns, rows


def require_columns(source: object, columns: Sequence[str], wanted: Iterable[str]) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(
            f"{source} has no column {', '.join(map(repr, missing))}; the available columns are "
            f"{', '.join(map(repr, columns))}."
        )
