"""The offline corpus: English prose that every installation of the course already has.

Every CPython installation ships two such texts: the Language Reference as plain text
(`pydoc_data.topics`, the pages `help("assert")` shows) and the docstrings of the standard
library. They make the small offline corpus. The large one adds the docstrings of the
packages the course itself installs (transformers, torch, numpy, ...). Both are cleaned to
prose sentences (`text.prose_sentences`), deduplicated, built once and cached as JSON.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import sysconfig
import tokenize
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path

from tqdm.auto import tqdm

from ..files import atomic_save_file
from .documents import Corpus, Document, check_split, select_split
from .text import prose_sentences

__all__ = [
    "packages_fingerprint",
    "python_version_tag",
    "OFFLINE_VARIANTS",
    "OFFLINE_CORPUS_LICENSE",
    "OFFLINE_CORPUS_PROVENANCE",
    "PACKAGE_SOURCES",
    "SKIPPED_STDLIB_DIRECTORIES",
    "MIN_DOCSTRING_CHARACTERS",
    "CACHE_FORMAT_VERSION",
    "PackageSource",
    "offline_corpus",
    "build_offline_documents",
    "stdlib_module_files",
    "module_files",
    "module_docstrings",
    "installed_packages",
    "offline_provenance",
    "offline_license",
    "cache_directory",
    "offline_cache_path",
]

OFFLINE_VARIANTS = ("small", "large")
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
    "parameter lists, grammar rules and reST markup removed, exact duplicate sentences dropped)."
)
# The large corpus adds the docstrings of these packages: the course's own dependencies and
# theirs, so that every installation of the course has them (a missing one is left out, and
# the corpus's provenance says which were used, at which versions).
PACKAGE_SOURCES = (
    "transformers",
    "torch",
    "numpy",
    "matplotlib",
    "datasets",
    "accelerate",
    "pandas",
    "huggingface_hub",
    "sympy",
    "networkx",
    "fsspec",
    "jinja2",
    "requests",
    "pyarrow",
    "tqdm",
)
# Parts of the standard library that are tests, tools, vendored packages or
# absent on some installs (tkinter, distutils), so the corpus is the same
# everywhere for a given Python version. Tests are skipped in the packages too.
SKIPPED_STDLIB_DIRECTORIES = frozenset(
    {
        "test",
        "tests",
        "testing",
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
CACHE_FORMAT_VERSION = 2  # bump when the cleaning rules change: old caches are then rebuilt


@dataclass(frozen=True)
class PackageSource:
    """An installed package whose docstrings go into the large corpus."""

    name: str  # the import name, e.g. "sklearn"
    distribution: str  # the name pip knows, e.g. "scikit-learn"
    version: str
    license: str
    root: Path


# ----------------------------------------------------------------------------
# The offline corpora
# ----------------------------------------------------------------------------


def offline_corpus(split: str = "train", variant: str = "small") -> Corpus:
    """Real English prose from this installation: Python's documentation, and more.

    variant "small": the Language Reference pages and the standard library's
    docstrings (about 1 MB of prose, the same for a given Python version).
    "large": those, then the docstrings of the installed packages in
    PACKAGE_SOURCES (about ten times more; the text depends on their
    versions, which the provenance lists). Built once (seconds for the small
    corpus, about a minute for the large one) and cached as JSON under
    `$BERTCOURSE_CACHE` (default ~/.cache/bertcourse); later calls read the
    cache. Documents are split into train and validation by
    `is_validation_document`, a hash of their id: the same split on every
    machine, whatever order the files are found in.
    """
    check_split(split)
    _check_variant(variant)
    packages = installed_packages() if variant == "large" else []
    path = offline_cache_path(variant, packages)
    documents = _read_cache(path)
    if documents is None:
        print(f"bertcourse: building the {variant} offline corpus once -> {path}", file=sys.stderr)
        documents = build_offline_documents(variant)
        _write_cache(path, documents, offline_provenance(packages), offline_license(packages))
    return Corpus(
        name=f"offline/{split}" if variant == "small" else f"offline-large/{split}",
        documents=select_split(documents, split),
        provenance=offline_provenance(packages),
        license=offline_license(packages),
    )


def _check_variant(variant: str) -> None:
    if variant not in OFFLINE_VARIANTS:
        raise ValueError(
            f"Unknown offline corpus {variant!r}; choose one of {', '.join(OFFLINE_VARIANTS)}."
        )


def build_offline_documents(variant: str = "small") -> list[Document]:
    """One document per reference page, per standard-library module, then per package module.

    Exact duplicate sentences (boilerplate such as the codec modules'
    docstrings, or a docstring copied from a parent class) are kept once, at
    their first occurrence: repeats would let a model memorise them and would
    leak between train and validation.
    """
    _check_variant(variant)
    seen: set[str] = set()
    documents = []
    for document_id, text_parts in _offline_sources(variant):
        sentences = []
        for part in text_parts:
            for sentence in prose_sentences(part):
                if sentence not in seen:
                    seen.add(sentence)
                    sentences.append(sentence)
        if sentences:
            documents.append(Document(document_id, sentences))
    return documents


def _offline_sources(variant: str) -> Iterator[tuple[str, list[str]]]:
    from pydoc_data.topics import topics  # deferred: a megabyte of text, read only here

    for name in sorted(topics):
        yield f"topic:{name}", [topics[name]]
    for module_name, path in stdlib_module_files():
        docstrings = module_docstrings(path)
        if docstrings:
            yield f"module:{module_name}", docstrings
    if variant == "large":
        packages = installed_packages()
        for package in tqdm(packages, desc="package docstrings", unit="package", leave=False):
            for module_name, path in module_files(package.root, package.name):
                docstrings = module_docstrings(path)
                if docstrings:
                    yield f"package:{module_name}", docstrings


# ----------------------------------------------------------------------------
# Where the text comes from
# ----------------------------------------------------------------------------


def stdlib_module_files() -> list[tuple[str, Path]]:
    """(dotted module name, path) of the standard library's .py files, in sorted order."""
    return module_files(Path(sysconfig.get_paths()["stdlib"]))


def module_files(root: Path, package: str = "") -> list[tuple[str, Path]]:
    """(dotted module name, path) of the .py files under `root`, sorted, tests left out.

    The walk is sorted, so the documents come in the same order on every
    machine; `package` is the dotted name of `root` itself ("" for the
    standard library's folder).
    """
    modules = []
    for directory, subdirectories, filenames in os.walk(root):
        subdirectories[:] = sorted(
            d for d in subdirectories if d not in SKIPPED_STDLIB_DIRECTORIES and d.isidentifier()
        )
        for filename in sorted(f for f in filenames if f.endswith(".py")):
            parts = (Path(directory) / filename).relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            parts = (package, *parts) if package else parts
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


def installed_packages(names: Sequence[str] | None = None) -> list[PackageSource]:
    """The packages of `names` (default PACKAGE_SOURCES) that are installed, in that order."""
    distributions = metadata.packages_distributions()
    packages = []
    for name in PACKAGE_SOURCES if names is None else names:
        spec = util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        distribution = distributions.get(name, [name])[0]
        try:
            info = metadata.metadata(distribution)
        except metadata.PackageNotFoundError:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        packages.append(PackageSource(name, distribution, info["Version"], _license(info), root))
    return packages


def _license(info: metadata.PackageMetadata) -> str:
    """The license a distribution declares: its SPDX expression, classifier, or License field."""
    if info.get("License-Expression"):
        return info["License-Expression"]
    classifiers = [c for c in info.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return "; ".join(c.split(" :: ")[-1] for c in classifiers)
    text = (info.get("License") or "").strip()
    return text.splitlines()[0] if text else "not declared"


def offline_provenance(packages: list[PackageSource]) -> str:
    """Where the text comes from: Python's documentation, then each package at its version."""
    if not packages:
        return OFFLINE_CORPUS_PROVENANCE
    listed = ", ".join(f"{p.distribution} {p.version}" for p in packages)
    return (
        f"{OFFLINE_CORPUS_PROVENANCE} Then the module, class and function docstrings of the "
        f"installed packages, cleaned the same way: {listed}. The text changes with their "
        "versions."
    )


def offline_license(packages: list[PackageSource]) -> str:
    """Each source's license, as its distribution declares it."""
    if not packages:
        return OFFLINE_CORPUS_LICENSE
    listed = "; ".join(f"{p.distribution}: {p.license}" for p in packages)
    return f"{OFFLINE_CORPUS_LICENSE} The packages' docstrings, under their own licenses: {listed}."


# ----------------------------------------------------------------------------
# The cache
# ----------------------------------------------------------------------------


def cache_directory() -> Path:
    return Path(os.environ.get("BERTCOURSE_CACHE") or "~/.cache/bertcourse").expanduser()


def python_version_tag() -> str:
    """e.g. "cpython3.11.7": the standard library's docstrings change with it."""
    return f"{sys.implementation.name}{'.'.join(map(str, sys.version_info[:3]))}"


def packages_fingerprint(packages: Sequence[PackageSource]) -> str:
    """Eight hex digits that change when any of these packages' installed versions changes."""
    installed = ";".join(f"{p.distribution}=={p.version}" for p in packages)
    return f"{zlib.crc32(installed.encode()):08x}"


def offline_cache_path(variant: str = "small", packages: Sequence[PackageSource] = ()) -> Path:
    """The cache file: one per Python version (its docs differ), package versions and format."""
    version = python_version_tag()
    if variant == "small":
        return cache_directory() / f"offline-corpus-{version}-v{CACHE_FORMAT_VERSION}.json"
    return cache_directory() / (
        f"offline-corpus-large-{version}-{packages_fingerprint(packages)}"
        f"-v{CACHE_FORMAT_VERSION}.json"
    )


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


def _write_cache(path: Path, documents: list[Document], provenance: str, license: str) -> None:
    """Write atomically (temporary file + rename): a reader never sees half a file."""
    payload = {
        "format_version": CACHE_FORMAT_VERSION,
        "python_version": sys.version,
        "provenance": provenance,
        "license": license,
        "documents": [{"id": d.id, "sentences": d.sentences} for d in documents],
    }
    text = json.dumps(payload, ensure_ascii=False)
    try:
        atomic_save_file(lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), path)
    except OSError as error:  # a read-only home: the corpus still works, only slower next time
        print(f"bertcourse: could not cache the offline corpus at {path}: {error}", file=sys.stderr)
