"""Query → passage pairs for semantic search: offline, from a reader's file, or from the hub.

The offline task is built from the documentation every installation of the course already
has. A documented function or class gives one pair: the first paragraph of its docstring
(the one-line summary: "Return the number of bytes in the buffer.") is the query, and the
prose of the rest of the docstring is the passage that answers it. A search engine must find
the passage of a summary among all the passages of the split.

The split is by module, from a hash of the module's name: every function of a module is on
the same side, so a model is never tested on a module it was trained on. Queries or passages
that occur more than once (a docstring copied from a parent class, "Return self.") are left
out: a duplicate would be a second right answer that the qrels do not know about.
"""

from __future__ import annotations

import ast
import json
import sys
import tokenize
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..files import atomic_save_file
from .corpus import CorpusUnavailableError, _hub_unavailable_reason, read_table, require_columns
from .offline import (
    OFFLINE_VARIANTS,
    PackageSource,
    cache_directory,
    installed_packages,
    module_files,
    packages_fingerprint,
    python_version_tag,
    stdlib_module_files,
)
from .text import is_prose_sentence, prose_sentences

__all__ = [
    "RETRIEVAL_TEST_BUCKETS",
    "RETRIEVAL_SMALL_PACKAGES",
    "RETRIEVAL_LARGE_PACKAGES",
    "RETRIEVAL_CACHE_VERSION",
    "PASSAGE_SENTENCES",
    "RetrievalPair",
    "RetrievalData",
    "docstring_pairs",
    "offline_retrieval",
    "load_retrieval_pairs",
    "hub_retrieval",
    "is_test_module",
]

# One module in five goes to the test split (a hash of its name, as for the corpus).
RETRIEVAL_TEST_BUCKETS = 5
# The small task reads the standard library and these packages (about 10 s to build); the large
# one adds the three biggest (about a minute more). All are dependencies of the course.
RETRIEVAL_SMALL_PACKAGES = (
    "numpy",
    "pandas",
    "matplotlib",
    "networkx",
    "datasets",
    "huggingface_hub",
    "accelerate",
    "fsspec",
    "jinja2",
    "requests",
    "pyarrow",
    "tqdm",
)
RETRIEVAL_LARGE_PACKAGES = (*RETRIEVAL_SMALL_PACKAGES, "transformers", "torch", "sympy")
PASSAGE_SENTENCES = 4  # a passage is the first four prose sentences after the summary
MIN_QUERY_WORDS, MAX_QUERY_WORDS = 4, 40
MIN_PASSAGE_WORDS = 20
RETRIEVAL_CACHE_VERSION = 1


@dataclass(frozen=True)
class RetrievalPair:
    """A query and the passage that answers it; `source` is where they come from."""

    query: str
    passage: str
    source: str = ""  # e.g. "numpy.linalg:norm" for the offline task, "line 12" for a file


@dataclass
class RetrievalData:
    """Pairs, each query's one relevant passage being its own; `name` says which task and split.

    `queries`, `passages` and `relevant` are what retrieval metrics need: query i's relevant
    passages are `relevant[i]` (indices into `passages`).
    """

    pairs: list[RetrievalPair]
    name: str = ""
    provenance: str = ""
    extra_passages: list[str] = field(default_factory=list)  # passages no query points to

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def queries(self) -> list[str]:
        return [pair.query for pair in self.pairs]

    @property
    def passages(self) -> list[str]:
        """The collection to search: every pair's passage, then the extra passages."""
        return [pair.passage for pair in self.pairs] + list(self.extra_passages)

    @property
    def relevant(self) -> list[set[int]]:
        return [{i} for i in range(len(self.pairs))]

    def head(self, n: int) -> RetrievalData:
        """The first `n` queries, searching the whole collection (their passages come first)."""
        kept = self.pairs[:n]
        rest = [pair.passage for pair in self.pairs[n:]] + list(self.extra_passages)
        return RetrievalData(kept, self.name, self.provenance, rest)


# ----------------------------------------------------------------------------
# The offline task: docstring summaries → the rest of the docstring
# ----------------------------------------------------------------------------


def is_test_module(module: str) -> bool:
    """Whether a module's pairs are in the test split: a hash of its dotted name."""
    return zlib.crc32(module.encode("utf-8")) % RETRIEVAL_TEST_BUCKETS == 0


def docstring_pairs(source: str, module: str = "") -> Iterator[RetrievalPair]:
    """(summary → rest) pairs of the documented classes and functions of one module's source."""
    try:
        with warnings.catch_warnings():  # invalid escape sequences in old sources
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        docstring = ast.get_docstring(node, clean=True)
        if not docstring or "\n\n" not in docstring:
            continue
        summary, rest = docstring.split("\n\n", 1)
        query = " ".join(summary.split())
        if not MIN_QUERY_WORDS <= len(query.split()) <= MAX_QUERY_WORDS:
            continue
        if not is_prose_sentence(query):
            continue
        passage = " ".join(prose_sentences(rest)[:PASSAGE_SENTENCES])
        if len(passage.split()) >= MIN_PASSAGE_WORDS:
            yield RetrievalPair(query, passage, f"{module}:{node.name}")


def offline_retrieval(split: str = "train", variant: str = "small") -> RetrievalData:
    """The offline search task: docstring summaries (queries) and the rest of the docstrings.

    split "train", "test" or "all"; variant "small" (the standard library and the packages of
    RETRIEVAL_SMALL_PACKAGES, about 10 s to build) or "large" (also transformers, torch and
    sympy). Built once and cached as JSON beside the offline corpus; the pairs depend on the
    Python and package versions, which the provenance lists.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"Unknown split {split!r}; choose 'train', 'test' or 'all'.")
    if variant not in OFFLINE_VARIANTS:
        raise ValueError(
            f"Unknown offline task {variant!r}; choose one of {', '.join(OFFLINE_VARIANTS)}."
        )
    names = RETRIEVAL_SMALL_PACKAGES if variant == "small" else RETRIEVAL_LARGE_PACKAGES
    packages = installed_packages(names)
    provenance = _provenance(packages)
    path = _cache_path(variant, packages)
    pairs = _read_cache(path)
    if pairs is None:
        print(
            f"bertcourse: building the {variant} offline search task once -> {path}",
            file=sys.stderr,
        )
        pairs = _build_pairs(packages)
        _write_cache(path, pairs, provenance)
    if split != "all":
        wanted = split == "test"
        pairs = [p for p in pairs if is_test_module(p.source.split(":")[0]) == wanted]
    return RetrievalData(pairs, f"docstrings-{variant}/{split}", provenance)


def _module_sources(packages: Sequence[PackageSource]) -> Iterator[tuple[str, Path]]:
    yield from stdlib_module_files()
    for package in packages:
        yield from module_files(package.root, package.name)


def _build_pairs(packages: Sequence[PackageSource]) -> list[RetrievalPair]:
    pairs = []
    files = list(_module_sources(packages))
    for module, path in tqdm(files, desc="docstrings", unit="module", leave=False, mininterval=1):
        try:
            with tokenize.open(path) as file:  # honours a "# -*- coding: ... -*-" line
                source = file.read()
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        pairs.extend(docstring_pairs(source, module))
    # A query or passage seen twice has two right answers (or is boilerplate): drop all copies.
    queries, passages = _counts(p.query.lower() for p in pairs), _counts(p.passage for p in pairs)
    return [p for p in pairs if queries[p.query.lower()] == 1 and passages[p.passage] == 1]


def _counts(items: Iterator[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _provenance(packages: Sequence[PackageSource]) -> str:
    listed = ", ".join(f"{p.distribution} {p.version}" for p in packages)
    return (
        f"Docstrings of Python {sys.version.split()[0]}'s standard library and of {listed}: "
        "for each documented class or function, the docstring's first paragraph is the query "
        f"and the first {PASSAGE_SENTENCES} prose sentences of the rest are the passage."
    )


def _cache_path(variant: str, packages: Sequence[PackageSource]) -> Path:
    return cache_directory() / (
        f"retrieval-{variant}-{python_version_tag()}-{packages_fingerprint(packages)}"
        f"-v{RETRIEVAL_CACHE_VERSION}.json"
    )


def _read_cache(path: Path) -> list[RetrievalPair] | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload["format_version"] != RETRIEVAL_CACHE_VERSION:
            return None
        pairs = [RetrievalPair(q, p, s) for q, p, s in payload["pairs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pairs or None


def _write_cache(path: Path, pairs: list[RetrievalPair], provenance: str) -> None:
    payload = {
        "format_version": RETRIEVAL_CACHE_VERSION,
        "provenance": provenance,
        "pairs": [[p.query, p.passage, p.source] for p in pairs],
    }
    text = json.dumps(payload, ensure_ascii=False)
    try:
        atomic_save_file(lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), path)
    except OSError as error:  # a read-only home: the task still works, only slower next time
        print(f"bertcourse: could not cache the search task at {path}: {error}", file=sys.stderr)


# ----------------------------------------------------------------------------
# A reader's file of pairs
# ----------------------------------------------------------------------------


def load_retrieval_pairs(
    path: str | Path, query_column: str = "query", passage_column: str = "passage"
) -> RetrievalData:
    """Query → passage pairs from a .csv or .tsv file with a header line.

    Every row needs both a query and a passage; an empty file, a missing column or a row
    with an empty cell raises ValueError naming the line and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass a .csv or .tsv file of pairs.")
    columns, rows = read_table(path)
    require_columns(path, columns, [query_column, passage_column])
    if not rows:
        raise ValueError(
            f"{path} has a header but no rows: add one line per pair, with its "
            f"{query_column!r} and {passage_column!r}."
        )
    pairs = []
    for line, row in rows:
        query = (row.get(query_column) or "").strip()
        passage = (row.get(passage_column) or "").strip()
        for name, value in ((query_column, query), (passage_column, passage)):
            if not value:
                raise ValueError(
                    f"{path}, line {line}: the {name!r} cell is empty; every row needs a query "
                    "and the passage that answers it (remove the row or fill it in)."
                )
        pairs.append(RetrievalPair(query, passage, f"line {line}"))
    return RetrievalData(pairs, path.name, f"{path} ({query_column!r} → {passage_column!r})")


# ----------------------------------------------------------------------------
# A public task from the hub (BEIR)
# ----------------------------------------------------------------------------


def hub_retrieval(
    name: str = "BeIR/scifact", split: str = "test", max_queries: int | None = None
) -> RetrievalData:
    """A BEIR task from the Hugging Face hub: its queries, qrels and whole corpus.

    BEIR publishes each task as `name` (configs "corpus" and "queries") and `name`-qrels
    (the relevance judgements per split). Queries with several relevant passages keep only
    the first as their pair, and a passage answers one query at most (later queries that
    share it are left out); the other passages stay in the collection as distractors.
    Offline this raises CorpusUnavailableError at once, naming the offline task.
    """
    reason = _hub_unavailable_reason()
    if reason:
        raise CorpusUnavailableError(
            f"Cannot load {name} from the Hugging Face hub: {reason}. Offline, use "
            "offline_retrieval() (docstring summaries → the rest of the docstrings)."
        )
    import datasets  # deferred: a second to import

    corpus = datasets.load_dataset(name, "corpus", split="corpus")
    queries = datasets.load_dataset(name, "queries", split="queries")
    qrels = datasets.load_dataset(f"{name}-qrels", split=split)
    return beir_pairs(corpus, queries, qrels, name=f"{name}/{split}", max_queries=max_queries)


def beir_pairs(
    corpus: Any, queries: Any, qrels: Any, name: str = "", max_queries: int | None = None
) -> RetrievalData:
    """BEIR's three tables (rows with _id/title/text, _id/text, query-id/corpus-id/score)."""
    passages = {str(r["_id"]): " ".join(filter(None, (r["title"], r["text"]))) for r in corpus}
    texts = {str(r["_id"]): r["text"] for r in queries}
    first: dict[str, str] = {}
    for row in qrels:
        query_id, corpus_id = str(row["query-id"]), str(row["corpus-id"])
        if row["score"] > 0 and query_id in texts and corpus_id in passages:
            first.setdefault(query_id, corpus_id)
    chosen, used = [], set()
    for query_id, corpus_id in first.items():  # one query per passage: a pair has one answer
        if corpus_id not in used and len(chosen) != max_queries:
            chosen.append((query_id, corpus_id))
            used.add(corpus_id)
    pairs = [RetrievalPair(texts[q], passages[c], f"{q}->{c}") for q, c in chosen]
    extra = [text for corpus_id, text in passages.items() if corpus_id not in used]
    return RetrievalData(pairs, name, f"{name} from the Hugging Face hub (BEIR)", extra)
