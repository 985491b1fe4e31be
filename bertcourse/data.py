"""Corpora and labelled data: the offline default corpus, hub datasets, readers' own files.

BERT learns from running prose, so the course needs real English text that is
there on every machine, without a download. Every CPython installation ships
two such texts: the Language Reference as plain text (`pydoc_data.topics`, the
pages `help("assert")` shows) and the docstrings of the standard library. This
module turns them into a corpus of documents and sentences, builds two labelled
tasks from it, and loads the same shapes from the Hugging Face hub (WikiText,
SST-2, IMDB) or from a reader's .txt/.csv/.tsv files.

Nothing here hangs offline: before `datasets` is asked for anything, the hub is
checked (the HF_HUB_OFFLINE / HF_DATASETS_OFFLINE switches, then a socket
connect of at most 3 s), and an unavailable corpus raises
`CorpusUnavailableError` at once, with the offline alternative in the message.
"""

from __future__ import annotations

import ast
import csv
import inspect
import json
import os
import random
import re
import socket
import sys
import sysconfig
import threading
import tokenize
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from .files import atomic_save_file

if TYPE_CHECKING:  # `datasets` takes a second to import: only the functions that need it do
    import datasets

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
MIN_SENTENCE_WORDS = 4
MIN_SENTENCE_LETTER_FRACTION = 0.6  # of the non-space characters
MAX_SENTENCE_CHARACTERS = 600  # longer "sentences" are run-together lists or tables
CACHE_FORMAT_VERSION = 1  # bump when the cleaning rules change: old caches are then rebuilt

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
OFFLINE_LABELLED_HINT = (
    "Offline, use offline_classification() or offline_pair_classification() (labelled tasks "
    "built from the Python documentation), or your own file with load_classification(path, "
    "text_column, label_column)."
)


class CorpusUnavailableError(FileNotFoundError):
    """A hub dataset cannot be reached (offline, or the hub does not answer); says what to use."""


# ----------------------------------------------------------------------------
# Sentences
# ----------------------------------------------------------------------------

# Words that end with a period without ending the sentence.
ABBREVIATIONS = frozenset(
    "e.g. i.e. etc. vs. cf. viz. approx. resp. al. mr. mrs. ms. dr. prof. st. jr. sr. no. "
    "fig. eq. sec. ch. vol. ed. ref. incl. esp. ca. min. max. dept. inc. ltd. co.".split()
)
# A candidate boundary: ., ! or ? (maybe closing a quote or bracket), white space,
# then what starts a sentence: an upper-case letter, a quote or an opening bracket.
# "3.14" and "os.path.join" have no space after the period, so they never match.
SENTENCE_BOUNDARY = re.compile(r"[.!?][\"'”’)\]]*(\s+)(?=[A-Z\"'“‘`(\[])")


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences with a readable rule, not a trained model.

    A sentence ends at ".", "!" or "?" followed by a space and an upper-case
    letter, a quote or a bracket, except after an abbreviation ("e.g.",
    "etc.", "Mr.") or an initial ("J. Smith"). White space is collapsed.
    """
    text = " ".join(text.split())
    sentences = []
    start = 0
    for boundary in SENTENCE_BOUNDARY.finditer(text):
        candidate = text[start : boundary.start(1)]
        if _ends_with_abbreviation(candidate):
            continue
        sentences.append(candidate)
        start = boundary.end(1)
    if text[start:]:
        sentences.append(text[start:])
    return sentences


def _ends_with_abbreviation(candidate: str) -> bool:
    last_word = candidate.rsplit(" ", 1)[-1].lstrip("\"'“‘([")
    if last_word.lower() in ABBREVIATIONS:
        return True
    return len(last_word) == 2 and last_word[0].isupper()  # an initial: "J."


# Sentences that are code after all: "with open(name) as file:", "x = f(y)".
CODE_SENTENCE = re.compile(
    r"^((async|await|def|class|import|from|return|if|elif|else|for|while|with|try|except"
    r"|lambda|del|raise|yield|print)\b.*:|([\w.]+(,\s*[\w.]+)*|\(.*?\)|\[.*?\])\s*=\s.*)$"
)


def is_prose_sentence(sentence: str) -> bool:
    """A sentence worth keeping: enough words, mostly letters, ends like a sentence.

    Unbalanced brackets mark a fragment of a sentence that a line break or
    an example cut in two.
    """
    if len(sentence.split()) < MIN_SENTENCE_WORDS or len(sentence) > MAX_SENTENCE_CHARACTERS:
        return False
    if not re.search(r"[.!?:][\"'”’)\]]*$", sentence) or CODE_SENTENCE.match(sentence):
        return False
    if sentence.count("(") != sentence.count(")") or sentence.count("[") != sentence.count("]"):
        return False
    visible = [c for c in sentence if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    return letters >= MIN_SENTENCE_LETTER_FRACTION * len(visible)


# ----------------------------------------------------------------------------
# Cleaning documentation text down to prose
# ----------------------------------------------------------------------------

# Lines that are markup or code, never prose.
UNDERLINE = re.compile(r"^([=\-*~^#\"+`'.])\1{2,}$")  # reST headings and rules: ****, ====, ----
TABLE_LINE = re.compile(r"^[|+]")  # +-----+-----+ and | cell | cell |
# A bullet, a numbered item or a footnote: "* ", "- ", "1. ", "(2) ", "a) ", "[3] ".
BULLET = re.compile(r"^([*\-•]|\d+[.)]|\(\d+\)|[a-z][.)]|\[\d+\])\s+")
# Lines that only code looks like. Anywhere: definitions and imports.
DEFINITION_LINE = re.compile(
    r"^((async\s+)?def\s+\w+\s*\(.*:|class\s+\w+(\(.*\))?:|import\s+[\w.]+|from\s+[\w.]+\s+import\b.*)$"
)
# In an indented block (an example under a paragraph), also statements,
# assignments, lone calls and comments; wrapped prose lines are never indented.
STATEMENT_LINE = re.compile(
    r"""^(
        (if|elif|else|for|while|try|except|finally|with|async|await|def|class|del|pass|import
         |from|global|nonlocal|lambda|return|raise|yield|assert|print)\b.*
      | [@#].*
      | [\w.\[\]'"]+\s*[-+*/%|&]?=\s*\S.*
      | [\w.]+\([^()]*\)[,;]?
      | .*[({\[\\]
      | [)}\]].*
    )$""",
    re.VERBOSE,
)


def _is_markup_line(line: str) -> bool:
    visible = [c for c in line if not c.isspace()]
    mostly_symbols = sum(c.isalpha() for c in visible) < 0.5 * len(visible)
    return bool(UNDERLINE.match(line) or TABLE_LINE.match(line) or "::=" in line or mostly_symbols)


def _is_doctest_line(line: str) -> bool:
    return line.startswith(">>>") or line.startswith("...")


@dataclass
class _Block:
    """Consecutive lines at one indentation, to be joined into one paragraph."""

    indent: int
    lines: list[str] = field(default_factory=list)
    is_bullet: bool = False

    def is_code(self) -> bool:
        if any(DEFINITION_LINE.match(line) for line in self.lines):
            return True
        indented_example = self.indent > 0 and not self.is_bullet
        return indented_example and any(STATEMENT_LINE.match(line) for line in self.lines)


def _blocks(text: str) -> Iterator[_Block]:
    """Paragraphs of a docstring or a reference page, with code and markup lines removed.

    A paragraph ends at a blank line, at a line indented differently from it
    (an example or a definition under a term) and at a bullet. Doctest
    lines end the paragraph together with the output printed after them.
    """
    block: _Block | None = None
    in_doctest = False
    for raw_line in inspect.cleandoc(text).splitlines():
        line = raw_line.strip()
        indent = len(raw_line) - len(raw_line.lstrip())
        if not line:
            in_doctest = False
        if not line or in_doctest or _is_doctest_line(line) or _is_markup_line(line):
            in_doctest = in_doctest or _is_doctest_line(line)
            if block:
                yield block
            block = None
            continue
        bullet = BULLET.match(line)
        if bullet:
            if block:
                yield block
            block = _Block(indent + bullet.end(), [line[bullet.end() :]], is_bullet=True)
        elif block and indent == block.indent:
            block.lines.append(line)
        else:
            if block:
                yield block
            block = _Block(indent, [line])
    if block:
        yield block


def prose_sentences(text: str) -> list[str]:
    """The prose sentences of a docstring or a Language Reference page."""
    sentences = []
    for block in _blocks(text):
        if block.is_code():
            continue
        paragraph = _join_lines(block.lines)
        sentences.extend(s for s in split_sentences(paragraph) if is_prose_sentence(s))
    return sentences


def _join_lines(lines: list[str]) -> str:
    """One paragraph from its lines, re-joining a word hyphenated at a line break ("non-numeric")."""
    paragraph = lines[0]
    for line in lines[1:]:
        hyphenated = paragraph[-2:-1].isalpha() and paragraph.endswith("-") and line[0].islower()
        paragraph += line if hyphenated else " " + line
    return paragraph


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
        import datasets

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
    _check_split(split)
    if split == "all":
        return list(documents)
    want_validation = split == "validation"
    return [d for d in documents if is_validation_document(d.id) == want_validation]


def _check_split(split: str) -> None:
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
    _check_split(split)
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
    from pydoc_data.topics import topics

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
    import datasets

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
        _require_columns(path, columns, [text_column])
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
    _require_columns(name, dataset.column_names, [text_column])
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


def _require_columns(source: object, columns: Sequence[str], wanted: Iterable[str]) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(
            f"{source} has no column {', '.join(map(repr, missing))}; the available columns are "
            f"{', '.join(map(repr, columns))}."
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
        import datasets

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
    _require_columns(path, columns, wanted)
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
        return ids, [str(i) for i in range(max(ids) + 1)]
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
    _check_split(split)
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
    _require_columns("The dataset", dataset.column_names, wanted)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch[text_pair_column] if text_pair_column else None
        encoded = tokenizer(batch[text_column], pairs, truncation=True, max_length=max_length)
        return {key: list(encoded[key]) for key in TOKENIZER_OUTPUTS if key in encoded}

    dropped = [c for c in dataset.column_names if c not in LABEL_COLUMNS] if remove_columns else []
    return dataset.map(
        encode, batched=True, batch_size=batch_size, num_proc=num_proc, remove_columns=dropped
    )


# ----------------------------------------------------------------------------
# Pretraining data: masked tokens (MLM) and sentence pairs (NSP)
# ----------------------------------------------------------------------------

MASK_FRACTION = 0.8  # of the chosen tokens, replaced by [MASK]
RANDOM_FRACTION = 0.1  # replaced by a random token; the remaining 10% are kept as they are


def mask_tokens(
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    vocab_size: int,
    mask_token_id: int,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
    word_starts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: choose ~15% of the ordinary tokens; of those, 80% -> [MASK], 10% -> a
    random token, 10% unchanged. Returns (inputs, labels) with labels -100 where nothing is
    predicted.

    special_tokens_mask (B, T) is True at [CLS], [SEP] and padding: they are never chosen.
    Keeping 10% unchanged and corrupting 10% means the model cannot tell from the input which
    tokens it will be asked about, so it must keep a good representation of every token, not
    only of [MASK] (Devlin et al. 2019, section 3.1 and appendix C.2).

    word_starts (B, T), optional, True where a token begins a word (not a "##" piece):
    whole-word masking, where a chosen word has all its pieces chosen, so the model cannot
    read "##ing" to guess the masked stem.
    """
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability is a probability in (0, 1), got {mlm_probability}.")
    if special_tokens_mask.shape != input_ids.shape:
        raise ValueError(
            f"special_tokens_mask {tuple(special_tokens_mask.shape)} must have the shape of "
            f"input_ids {tuple(input_ids.shape)}."
        )
    candidates = ~special_tokens_mask.bool()
    draws = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)
    if word_starts is None:
        chosen = (draws < mlm_probability) & candidates
    else:
        # Every piece takes the draw made at its word's first piece: the position of the
        # latest word start at or before it is a running maximum over start positions.
        starts = word_starts.bool() | special_tokens_mask.bool()  # (B, T)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        word_start = torch.where(starts, positions, 0).cummax(dim=-1).values  # (B, T)
        chosen = (draws.gather(1, word_start) < mlm_probability) & candidates
    labels = input_ids.masked_fill(~chosen, -100)

    action = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)
    to_mask = chosen & (action < MASK_FRACTION)
    to_random = chosen & (action >= MASK_FRACTION) & (action < MASK_FRACTION + RANDOM_FRACTION)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator).to(
        input_ids.device
    )
    inputs = input_ids.masked_fill(to_mask, mask_token_id)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


def special_tokens_mask(input_ids: torch.Tensor, special_ids: Iterable[int]) -> torch.Tensor:
    """True where input_ids holds one of the special ids ([CLS], [SEP], [PAD], ...)."""
    special = torch.tensor(sorted(set(special_ids)), device=input_ids.device)
    return torch.isin(input_ids, special)


def continuation_table(tokenizer: Any) -> torch.Tensor:
    """(V,) bool: True for the vocabulary's "##" pieces, which continue a word."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return torch.tensor([token.startswith("##") for token in tokens])


def _document_sentences(documents: Any) -> list[list[str]]:
    """Corpus, list of Documents, or list of lists of sentences -> list of lists of sentences."""
    if isinstance(documents, Corpus):
        documents = documents.documents
    return [d.sentences if isinstance(d, Document) else list(d) for d in documents]


def _tokenized_documents(documents: Any, tokenizer: Any) -> list[list[list[int]]]:
    """Every sentence as token ids (no special tokens); empty sentences and documents dropped."""
    tokenized = []
    for sentences in _document_sentences(documents):
        ids = [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(s)) for s in sentences]
        ids = [sentence for sentence in ids if sentence]
        if ids:
            tokenized.append(ids)
    return tokenized


def _pair_example(
    tokenizer: Any, tokens_a: list[int], tokens_b: list[int] | None, **extra: Any
) -> dict[str, Any]:
    input_ids = [tokenizer.cls_token_id, *tokens_a, tokenizer.sep_token_id]
    token_type_ids = [0] * len(input_ids)
    if tokens_b is not None:
        input_ids += [*tokens_b, tokenizer.sep_token_id]
        token_type_ids += [1] * (len(tokens_b) + 1)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, **extra}


def truncate_pair(
    tokens_a: list[int], tokens_b: list[int], max_tokens: int, rng: random.Random
) -> None:
    """The original recipe's rule: shorten the longer segment, one token at a time, from the
    front or the back at random (so the model does not learn that segments always end whole)."""
    while len(tokens_a) + len(tokens_b) > max_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def create_nsp_examples(
    documents: Any,
    tokenizer: Any,
    max_seq_length: int = 128,
    short_seq_prob: float = 0.1,
    seed: int = 0,
    dupe_factor: int = 1,
    next_sentence_probability: float = 0.5,
) -> list[dict[str, Any]]:
    """Sentence-pair examples for MLM + NSP, following the original BERT data recipe.

    Sentences of a document are gathered into a chunk until it reaches the target length
    (max_seq_length - 3, or with probability short_seq_prob a random shorter length, so the
    model also sees short inputs). The chunk is cut at a random sentence boundary into A and B.
    Half of the time (IsNext, label 0) B is the rest of the chunk; otherwise (NotNext, label 1)
    B is text from a random position in a *different* document, and the unused sentences of
    the chunk are put back for the next example. The pair is then truncated to fit.
    One change from the original: there, a chunk of a single sentence always became NotNext,
    which on the offline corpus (long sentences, short documents) lowers the IsNext rate to
    45%. Here such a sentence is cut at a random token when IsNext is drawn (BERT's
    "sentences" are arbitrary spans of contiguous text anyway), which keeps the rate at 50%.

    documents: a Corpus, a list of Documents, or lists of sentences. Each example is a dict
    with input_ids ([CLS] A [SEP] B [SEP]), token_type_ids, next_sentence_label, and where
    the text came from: document, b_document, a_sentences, b_sentences (sentence indices).
    dupe_factor passes over the data with different random choices give more examples.
    """
    if max_seq_length < 8:
        raise ValueError(f"max_seq_length={max_seq_length} is too short for a sentence pair.")
    tokenized = _tokenized_documents(documents, tokenizer)
    if len(tokenized) < 2:
        raise ValueError(
            "NSP needs at least two non-empty documents (NotNext draws from another one)."
        )
    rng = random.Random(seed)
    examples: list[dict[str, Any]] = []
    for _ in range(dupe_factor):
        for document_index in range(len(tokenized)):
            examples.extend(
                _nsp_examples_from_document(
                    tokenized,
                    document_index,
                    tokenizer,
                    max_seq_length,
                    short_seq_prob,
                    next_sentence_probability,
                    rng,
                )
            )
    rng.shuffle(examples)
    return examples


def _nsp_examples_from_document(
    tokenized: list[list[list[int]]],
    document_index: int,
    tokenizer: Any,
    max_seq_length: int,
    short_seq_prob: float,
    next_sentence_probability: float,
    rng: random.Random,
) -> list[dict[str, Any]]:
    document = tokenized[document_index]
    max_tokens = max_seq_length - 3  # [CLS] A [SEP] B [SEP]
    target_length = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
    examples = []
    chunk: list[int] = []  # sentence indices
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(i)
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_length:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a_sentences = chunk[:a_end]
            tokens_a = [t for s in a_sentences for t in document[s]]
            is_next = rng.random() < next_sentence_probability
            if is_next and len(chunk) == 1 and len(tokens_a) >= 2:
                # One sentence cannot be cut at a sentence boundary: cut it at a token.
                cut = rng.randint(1, len(tokens_a) - 1)
                label, b_document, b_sentences = 0, document_index, list(chunk)
                tokens_a, tokens_b = tokens_a[:cut], tokens_a[cut:]
            elif not is_next or len(chunk) == 1:
                label = 1  # NotNext: B from a random place in another document
                b_document = rng.randrange(len(tokenized) - 1)
                b_document += b_document >= document_index
                other = tokenized[b_document]
                start = rng.randrange(len(other))
                b_sentences, tokens_b = [], []
                for s in range(start, len(other)):
                    b_sentences.append(s)
                    tokens_b.extend(other[s])
                    if len(tokens_b) >= target_length - len(tokens_a):
                        break
                i -= len(chunk) - a_end  # the unused sentences start the next chunk
            else:
                label = 0  # IsNext: B is the rest of the chunk
                b_document = document_index
                b_sentences = chunk[a_end:]
                tokens_b = [t for s in b_sentences for t in document[s]]
            truncate_pair(tokens_a, tokens_b, max_tokens, rng)
            examples.append(
                _pair_example(
                    tokenizer,
                    tokens_a,
                    tokens_b,
                    next_sentence_label=label,
                    document=document_index,
                    b_document=b_document,
                    a_sentences=a_sentences,
                    b_sentences=b_sentences,
                )
            )
            chunk, chunk_length = [], 0
        i += 1
    return examples


def create_mlm_examples(
    documents: Any, tokenizer: Any, max_seq_length: int = 128, seed: int = 0
) -> list[dict[str, Any]]:
    """Examples for MLM without NSP: each document's text packed into [CLS] ... [SEP] windows.

    Whole sentences are added while they fit (a sentence longer than a window is split), so
    every example is one contiguous stretch of one document, and the model trains on long
    inputs without the sentence-pair task (as RoBERTa found works at least as well).
    """
    budget = max_seq_length - 2
    if budget < 1:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for text.")
    examples = []
    for document_index, document in enumerate(_tokenized_documents(documents, tokenizer)):
        window: list[int] = []
        for sentence in document:
            if window and len(window) + len(sentence) > budget:
                examples.append(_pair_example(tokenizer, window, None, document=document_index))
                window = []
            while len(sentence) > budget:
                examples.append(
                    _pair_example(tokenizer, sentence[:budget], None, document=document_index)
                )
                sentence = sentence[budget:]
            window = window + sentence
        if window:
            examples.append(_pair_example(tokenizer, window, None, document=document_index))
    random.Random(seed).shuffle(examples)
    return examples


class PretrainingCollator:
    """Pads a list of examples to the batch's longest and masks it for MLM (dynamic padding).

    Returns LongTensors input_ids, token_type_ids, attention_mask, labels (-100 where nothing
    is predicted) and, when the examples carry it, next_sentence_label. Masking is random each
    time a batch is built (the "dynamic masking" RoBERTa introduced; BERT masked once, offline):
    pass a seeded `generator` to make it reproducible.
    """

    def __init__(
        self,
        tokenizer: Any,
        mlm_probability: float = 0.15,
        whole_word_mask: bool = False,
        seed: int | None = None,
    ):
        self.pad_token_id = tokenizer.pad_token_id
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special_ids = list(tokenizer.all_special_ids)
        self.mlm_probability = mlm_probability
        self.continuation = continuation_table(tokenizer) if whole_word_mask else None
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def pad(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("Cannot collate an empty list of examples.")
        length = max(len(example["input_ids"]) for example in examples)
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(examples), length), dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = torch.tensor(example["input_ids"])
            token_type_ids[row, :n] = torch.tensor(example.get("token_type_ids", [0] * n))
            attention_mask[row, :n] = 1
        return {
            "input_ids": input_ids,
            "token_type_ids": token_type_ids,
            "attention_mask": attention_mask,
        }

    def __call__(
        self, examples: Sequence[dict[str, Any]], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        batch = self.pad(examples)
        special = special_tokens_mask(batch["input_ids"], self.special_ids)
        special |= batch["attention_mask"] == 0
        word_starts = None
        if self.continuation is not None:
            word_starts = ~self.continuation[batch["input_ids"]]
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"],
            special,
            self.vocab_size,
            self.mask_token_id,
            self.mlm_probability,
            generator or self.generator,
            word_starts,
        )
        if "next_sentence_label" in examples[0]:
            batch["next_sentence_label"] = torch.tensor(
                [example["next_sentence_label"] for example in examples]
            )
        return batch


# ----------------------------------------------------------------------------
# Token classification and question answering: offline tasks
# ----------------------------------------------------------------------------

# The offline tagging task: which words of a documentation sentence are names, and which are
# code? The tags come from the text itself, by three rules (see `word_entity_type`):
#   CODE  a word that can only be code: it contains "_" (os_path, notify_all), ends in "()"
#         (rename()), is a dotted name (os.path, S.index), is CamelCase (TypeError, MagicMock),
#         or is a capitalised name of Python's builtins (None, True, Exception);
#   NAME  a maximal run of other capitalised words of two or more letters, not at the start of
#         the sentence (Python, Unicode, EHLO, "Naming" in "section Naming and binding");
#   O     every other word.
# The words up to the sentence's first word with a letter get the tag -100 (unknown): a
# sentence starts with a capital letter whatever its first word is, so the rule cannot tell.
# The reader's model is uncased, so it never sees the capital letters the labels come from:
# it must find names from their context, and CamelCase code from its pieces.
NER_LABEL_NAMES = ["O", "B-NAME", "I-NAME", "B-CODE", "I-CODE"]
NER_ENTITY_TYPES = ("NAME", "CODE")
# A word: a (dotted) identifier with an optional "()", a number, or one punctuation character.
_NER_WORD = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*(?:\(\))?|\d+(?:\.\d+)*|[^\w\s]")
_CAMEL_CASE = re.compile(r"[a-z][A-Z]")
# Python's capitalised built-in names that are not CamelCase (those are caught by the rule).
PYTHON_CONSTANTS = frozenset({"None", "True", "False", "Ellipsis", "Exception", "Warning"})
NER_MAX_WORDS = 64  # longer sentences are left out: a few run-ons of lists and signatures
NER_SHARE_WITHOUT_ENTITIES = 0.2  # of the sentences kept, about this share has no entity
QA_CONTEXT_SENTENCES = 3  # sentences before and after the question sentence in its context
QA_BLANK = "what"  # the word that replaces the answer in the question sentence


@dataclass
class TaggedData:
    """Sentences as lists of words with a tag id per word (-100: unknown, ignored)."""

    sentences: list[list[str]]
    tags: list[list[int]]
    label_names: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.sentences) != len(self.tags):
            raise ValueError(f"{len(self.sentences)} sentences but {len(self.tags)} tag lists.")
        for index, (words, tags) in enumerate(zip(self.sentences, self.tags, strict=True)):
            if len(words) != len(tags):
                raise ValueError(f"Sentence {index} has {len(words)} words but {len(tags)} tags.")
            bad = [t for t in tags if t != -100 and not 0 <= t < len(self.label_names)]
            if bad:
                raise ValueError(
                    f"Sentence {index} has tag {bad[0]}, not an id of {self.label_names} "
                    "(nor -100, unknown)."
                )

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}

    def tag_names(self, index: int) -> list[str | None]:
        """The tags of sentence `index` as names (None where unknown)."""
        return [None if t == -100 else self.label_names[t] for t in self.tags[index]]

    def entity_counts(self) -> dict[str, int]:
        """How many entities of each type (a B- tag starts each one)."""
        counts = Counter(
            self.label_names[t][2:]
            for tags in self.tags
            for t in tags
            if t != -100 and self.label_names[t].startswith("B-")
        )
        kinds = [n[2:] for n in self.label_names if n.startswith("B-")]
        return {kind: counts[kind] for kind in kinds}

    def subset(self, indices: Sequence[int], name: str | None = None) -> TaggedData:
        return TaggedData(
            [self.sentences[i] for i in indices],
            [self.tags[i] for i in indices],
            list(self.label_names),
            name=self.name if name is None else name,
        )


def split_words(sentence: str) -> list[str]:
    """A sentence's words, punctuation split off, case kept; dotted names and "f()" stay whole."""
    return _NER_WORD.findall(sentence)


def word_entity_type(word: str) -> str | None:
    """The entity type a word can be part of, "CODE" or "NAME", or None (by the rules above)."""
    if not word[:1].isalpha() and word[:1] != "_":
        return None
    if (
        "_" in word
        or word.endswith("()")
        or "." in word
        or _CAMEL_CASE.search(word)
        or word in PYTHON_CONSTANTS
    ):
        return "CODE"
    if word[:1].isupper() and len(word) >= 2:
        return "NAME"
    return None


def tag_words(words: Sequence[str]) -> list[int]:
    """IOB2 tag ids (NER_LABEL_NAMES) of a sentence's words; -100 up to its first word with a letter.

    Each CODE word is its own entity; consecutive NAME words form one entity.
    """
    label = {name: index for index, name in enumerate(NER_LABEL_NAMES)}
    first = next((i for i, word in enumerate(words) if any(c.isalpha() for c in word)), len(words))
    tags, previous = [-100] * min(first + 1, len(words)), None
    for word in words[first + 1 :]:
        kind = word_entity_type(word)
        if kind == "CODE":
            tags.append(label["B-CODE"])
        elif kind == "NAME":
            tags.append(label["I-NAME" if previous == "NAME" else "B-NAME"])
        else:
            tags.append(label["O"])
        previous = kind
    return tags


def offline_ner(split: str = "train") -> TaggedData:
    """Find the names and the code in a sentence of Python's documentation (tags NAME, CODE).

    Real text, tags from its spelling (the rules of `word_entity_type` and
    `tag_words`): every sentence of the offline corpus's `split` with at most
    NER_MAX_WORDS words and at least one entity, plus about
    NER_SHARE_WITHOUT_ENTITIES of sentences without any (chosen by a hash of
    the sentence, so the same on every machine), so the model also sees
    sentences where the answer is "nothing". Split by document, like the corpus.
    """
    tagged, with_entity = [], []
    for document in offline_corpus(split).documents:
        for sentence in document.sentences:
            words = split_words(sentence)
            if 2 <= len(words) <= NER_MAX_WORDS:
                tags = tag_words(words)
                tagged.append((sentence, words, tags))
                with_entity.append(any(t not in (-100, 0) for t in tags))
    # Keep each sentence without entities if a hash of it falls below the rate that gives them
    # NER_SHARE_WITHOUT_ENTITIES of the result.
    wanted = NER_SHARE_WITHOUT_ENTITIES / (1 - NER_SHARE_WITHOUT_ENTITIES) * sum(with_entity)
    rate = wanted / max(1, len(tagged) - sum(with_entity))
    sentences, tags = [], []
    for (sentence, words, sentence_tags), has_entity in zip(tagged, with_entity, strict=True):
        if has_entity or zlib.crc32(sentence.encode()) / 2**32 < rate:
            sentences.append(words)
            tags.append(sentence_tags)
    return TaggedData(sentences, tags, list(NER_LABEL_NAMES), name=f"stdlib-ner/{split}")


def _word_spans(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) of each word of `split_words(text)`."""
    return [(m.group(), m.start(), m.end()) for m in _NER_WORD.finditer(text)]


def entity_spans(sentence: str) -> list[tuple[str, int, int, list[str]]]:
    """The entities of a sentence by the NER rules: (type, first char, end char, words)."""
    spans = _word_spans(sentence)
    tags = tag_words([word for word, _, _ in spans])
    entities: list[tuple[str, int, int, list[str]]] = []
    for (word, start, end), tag in zip(spans, tags, strict=True):
        if tag in (-100, 0):
            continue
        prefix, kind = NER_LABEL_NAMES[tag].split("-")
        if prefix == "I":  # the next word of the current NAME run
            kind, first, _, words = entities[-1]
            entities[-1] = (kind, first, end, [*words, word])
        else:
            entities.append((kind, start, end, [word]))
    return entities


def _word_sequence_starts(spans: Sequence[tuple[str, int, int]], words: Sequence[str]):
    """(start char, end char) of every place where `words` occur in a row in `spans`."""
    n = len(words)
    return [
        (spans[i][1], spans[i + n - 1][2])
        for i in range(len(spans) - n + 1)
        if [word for word, _, _ in spans[i : i + n]] == list(words)
    ]


def offline_qa(split: str = "train", seed: int = 0) -> list[Any]:
    """Cloze questions about Python's documentation, answered by a span of a nearby passage.

    As in the cloze datasets of Hermann et al. (2015) and Lewis et al.
    (2019): for each sentence of a document that has an entity (NAME or
    CODE, by the rules of `offline_ner`) which also occurs in its
    neighbourhood, the *context* is the QA_CONTEXT_SENTENCES sentences
    before and after it, without the sentence itself; the *question* is the
    sentence with the entity replaced by QA_BLANK ("what"); the *answers*
    are the entity's occurrences in the context, as the same words in the
    same case. One entity per question sentence (a seeded choice among those
    that qualify); an entity that occurs twice in its own sentence does not
    qualify (the question would still show it), nor one glued to a letter
    ("join()ed", "f().g()"). The question sentence never
    occurs in its context, so the answer cannot be found by looking the
    question up: the model must match what the question says around the
    blank with what the context says around the answer.
    """
    from .finetune import QAExample  # finetune builds on this module, not the other way round

    generator = random.Random(seed)
    examples = []
    for document in offline_corpus(split).documents:
        sentences = document.sentences
        for index, sentence in enumerate(sentences):
            before = sentences[max(0, index - QA_CONTEXT_SENTENCES) : index]
            after = sentences[index + 1 : index + 1 + QA_CONTEXT_SENTENCES]
            context = " ".join([*before, *after])
            if not context or sentence in context:
                continue
            question_spans, context_spans = _word_spans(sentence), _word_spans(context)
            candidates = []
            for _, start, end, words in entity_spans(sentence):
                in_context = _word_sequence_starts(context_spans, words)
                question = sentence[:start] + QA_BLANK + sentence[end:]
                # Not glued to its neighbours ("join()ed", "f().g()"): the blank is a word.
                blanked = split_words(question).count(QA_BLANK) > split_words(sentence).count(
                    QA_BLANK
                )
                if (
                    in_context
                    and blanked
                    and len(_word_sequence_starts(question_spans, words)) == 1
                ):
                    candidates.append((question, in_context))
            if not candidates:
                continue
            question, in_context = generator.choice(candidates)
            examples.append(
                QAExample(
                    id=f"{document.id}#{index}",
                    question=question,
                    context=context,
                    answers=[(context[a:b], a) for a, b in in_context],
                )
            )
    return examples
