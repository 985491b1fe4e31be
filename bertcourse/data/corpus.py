"""Corpora by name or path: the offline corpora, hub datasets, readers' own files.

`load_corpus` gives every source the same shape, a `Corpus` of documents and
sentences: the offline corpora (`offline.py`), WikiText or any dataset of the
Hugging Face hub, and a reader's .txt/.csv/.tsv files.

Nothing here hangs offline: before `datasets` is asked for anything, the hub is
checked (the HF_HUB_OFFLINE / HF_DATASETS_OFFLINE switches, then a socket
connect of at most 3 s), and an unavailable corpus raises
`CorpusUnavailableError` at once, with the offline alternative in the message.
"""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:  # `datasets` takes a second to import: only the functions that need it do
    import datasets


from ..files import read_utf8
from .documents import Corpus, Document
from .offline import offline_corpus
from .text import split_sentences

__all__ = [
    "LOCAL_SUFFIXES",
    "WIKITEXT_ALIASES",
    "HUB_ADDRESS",
    "HUB_PROBE_TIMEOUT_S",
    "OFFLINE_CORPORA",
    "OFFLINE_CORPUS_HINT",
    "CorpusUnavailableError",
    "load_hub_dataset",
    "load_corpus",
    "WIKITEXT_TITLE",
    "WIKITEXT_HEADING",
    "WIKITEXT_SPLIT_MARK",
    "wikitext_documents",
    "read_table",
    "require_columns",
]

LOCAL_SUFFIXES = (".txt", ".csv", ".tsv")
WIKITEXT_ALIASES = {
    "wikitext-103": ("wikitext", "wikitext-103-raw-v1"),
    "wikitext-2": ("wikitext", "wikitext-2-raw-v1"),
}
HUB_ADDRESS = ("huggingface.co", 443)
HUB_PROBE_TIMEOUT_S = 3.0
OFFLINE_CORPORA = {"offline": "small", "offline-large": "large"}
OFFLINE_CORPUS_HINT = (
    'Offline, use load_corpus("offline") (the Python documentation that ships with every '
    'Python, over 1 MB of English prose), load_corpus("offline-large") (that and the '
    "docstrings of the installed packages, about ten times more) or a local file path: a .txt "
    "file, a .csv/.tsv file with a text column, or a directory of .txt files."
)


class CorpusUnavailableError(FileNotFoundError):
    """A hub dataset cannot be reached (offline, or the hub does not answer); says what to use."""


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

    - "offline" and "offline-large": `offline_corpus(split, "small" or "large")`.
    - a .txt file (documents separated by blank lines), a .csv/.tsv file (one
      document per row of `text_column`) or a directory of .txt files (one
      document per file). A file is one split of the reader's making, so it
      is returned whole for split "train" or "all".
    - "wikitext-103", "wikitext-2", or any `datasets` name (`text_column` of
      each row is a document; WikiText rows are joined into articles).
    """
    text = os.fspath(name_or_path)
    if text in OFFLINE_CORPORA:
        return offline_corpus(split, OFFLINE_CORPORA[text])
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
        documents = [Document(file.name, split_sentences(read_utf8(file))) for file in files]
    elif path.suffix.lower() == ".txt":
        paragraphs = re.split(r"\n\s*\n", read_utf8(path))
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
    text = read_utf8(path, encoding="utf-8-sig")  # -sig: Excel's byte-order mark
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    columns = list(reader.fieldnames or [])
    if not columns:
        raise ValueError(f"{path} is empty: expected a header line with column names.")
    other = "," if delimiter == "\t" else "\t"
    if len(columns) == 1 and other in columns[0]:
        names = {",": "commas (CSV: name it .csv)", "\t": "tabs (TSV: name it .tsv)"}
        raise ValueError(
            f"{path}'s header {columns[0]!r} is one column: its columns are separated by "
            f"{names[other]}, not by {names[delimiter].split(' (')[0]}; rename the file or pass "
            f"delimiter={other!r}."
        )
    rows = [(reader.line_num, row) for row in reader]
    return columns, rows


def require_columns(source: object, columns: Sequence[str], wanted: Iterable[str]) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(
            f"{source} has no column {', '.join(map(repr, missing))}; the available columns are "
            f"{', '.join(map(repr, columns))}."
        )
