"""Write the corpus card: what the offline corpora hold, measured on this installation.

    python scripts/corpus_card.py      # -> bertcourse/reference/corpus_card.json and book/corpus_card.md

Counts documents, sentences, words and tokens per source (the Python documentation, then each
package of the large corpus), with versions and licenses, the train/validation split, the most
frequent words and seeded example sentences. Tokens are counted with the course checkpoint's
vocabulary (course-tiny, 8,000 WordPiece tokens trained on the large corpus) by the `tokenizers`
library's WordPiece, which chapter 1 shows splits exactly as the course's tokenizer does. The
numbers hold for the Python and package versions recorded in the card: another installation has
other docstrings, so other counts.
"""

from __future__ import annotations

import json
import platform
import random
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

from bertcourse.data import OFFLINE_CLASSIFICATION_PACKAGES, TOPIC_PACKAGES, offline_corpus
from bertcourse.data.offline import installed_packages
from bertcourse.hf import course_checkpoint_path

ROOT = Path(__file__).resolve().parent.parent
WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
EXAMPLES_PER_SOURCE = 2
# Common words of movie reviews (SST-2's domain), to count how rare they are here.
REVIEW_WORDS = ("good", "bad", "great", "funny", "boring", "love", "beautiful", "awful", "movie",
                "film")  # fmt: skip
# Function words, left out of the list of frequent words so that the list shows the subject matter.
STOPWORDS = frozenset(
    "the a an of to is and in for if be this that with are or as by not it on from can will "
    "which when should must may at all any its has have been than then there these those was "
    "were but also other only such into each used use default whether given one more".split()
)


def source_of(document_id: str) -> str:
    """'Python documentation' for the reference pages and the standard library, else the package."""
    kind, _, name = document_id.partition(":")
    return name.split(".")[0] if kind == "package" else "Python documentation"


def fast_tokenizer() -> Tokenizer:
    vocab_file = course_checkpoint_path() / "vocab.txt"
    vocab = {token: i for i, token in enumerate(vocab_file.read_text().splitlines())}
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = BertPreTokenizer()
    return tokenizer


def measure() -> dict:
    tokenizer = fast_tokenizer()
    packages = {p.name: p for p in installed_packages()}
    corpus = {split: offline_corpus(split, "large") for split in ("train", "validation")}
    small = {split: offline_corpus(split, "small") for split in ("train", "validation")}
    stats: dict[str, Counter] = defaultdict(Counter)
    sentences_by_source: dict[str, list[str]] = defaultdict(list)
    words = Counter()
    for split, part in corpus.items():
        for document in part.documents:
            source = source_of(document.id)
            found = [w.lower() for s in document.sentences for w in WORD.findall(s)]
            words.update(found)
            encodings = tokenizer.encode_batch(document.sentences, add_special_tokens=False)
            stats[source].update({
                "documents": 1, f"{split}_documents": 1, "sentences": len(document.sentences),
                "characters": sum(len(s) for s in document.sentences), "words": len(found),
                "tokens": sum(len(e.ids) for e in encodings),
                "unknown_tokens": sum(e.tokens.count("[UNK]") for e in encodings),
            })  # fmt: skip
            sentences_by_source[source].extend(document.sentences)
    rng = random.Random(0)
    sources = []
    for source, counts in stats.items():
        package = packages.get(source)
        sources.append({
            "source": source,
            "version": package.version if package else platform.python_version(),
            "distribution": package.distribution if package else "CPython",
            "license": package.license if package else "PSF-2.0",
            **counts,
            "examples": rng.sample(sentences_by_source[source], EXAMPLES_PER_SOURCE),
        })  # fmt: skip
    total = sum((Counter({k: v for k, v in s.items() if isinstance(v, int)}) for s in sources),
                Counter())  # fmt: skip
    all_sentences = [s for part in corpus.values() for d in part.documents for s in d.sentences]
    first_words = Counter(s.split()[0] for s in all_sentences if s.split())
    return {
        "sources": sources,
        "total": dict(total),
        "small_corpus": {
            split: {
                "documents": len(c),
                "sentences": c.num_sentences,
                "characters": c.num_characters,
            }
            for split, c in small.items()
        },
        "top_words": [(w, n) for w, n in words.most_common(200) if w not in STOPWORDS][:30],
        "top_first_words": first_words.most_common(10),
        "review_words_per_million": {
            w: round(words[w] / sum(words.values()) * 1e6, 1) for w in REVIEW_WORDS
        },
        "sentences_starting_with_return": sum(
            s.startswith(("Return", "Returns")) for s in all_sentences
        )
        / len(all_sentences),
        "held_out_for_tasks": {
            "offline_classification (stdlib packages, in the corpus)": list(
                OFFLINE_CLASSIFICATION_PACKAGES
            ),
            "offline_topic_classification (packages left out of the corpus)": TOPIC_PACKAGES,
        },
        "tokenizer": "course-tiny's 8,000 WordPiece tokens, with the tokenizers library's WordPiece",
        "python": platform.python_version(),
        "command": "python scripts/corpus_card.py",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True, capture_output=True
        ).stdout.strip(),  # fmt: skip
        "machine": f"{platform.machine()}, {sys.platform}, Python {platform.python_version()}",
    }


def render(card: dict) -> str:
    """The book page: the card's numbers as tables, with where they come from."""
    total = card["total"]
    rows = sorted(card["sources"], key=lambda s: -s["words"])
    table = ["| source | version | license | documents | sentences | words | tokens | share of tokens |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for s in rows:
        table.append(
            f"| {s['distribution']} | {s['version']} | {s['license']} | {s['documents']:,} | "
            f"{s['sentences']:,} | {s['words']:,} | {s['tokens']:,} | "
            f"{s['tokens'] / total['tokens']:.1%} |"
        )
    table.append(
        f"| **all** | | | **{total['documents']:,}** | **{total['sentences']:,}** | "
        f"**{total['words']:,}** | **{total['tokens']:,}** | 100% |"
    )
    examples = "\n".join(f'- *{s["distribution"]}*: "{s["examples"][0]}"' for s in rows[:8])
    small = card["small_corpus"]
    small_sentences = sum(part["sentences"] for part in small.values())
    small_characters = sum(part["characters"] for part in small.values())
    top_words = ", ".join(word for word, _ in card["top_words"][:20])
    review_words = ", ".join(
        f"*{word}* {count:g}" for word, count in card["review_words_per_million"].items()
    )
    first_words = ", ".join(f"{word} ({count:,})" for word, count in card["top_first_words"][:6])
    tasks = card["held_out_for_tasks"]
    topic_packages = ", ".join(
        f"{subject} ({', '.join(names)})"
        for subject, names in tasks[
            "offline_topic_classification (packages left out of the corpus)"
        ].items()
    )
    return f"""# Corpus card: the offline corpora

Every pretraining run of the course reads text that a fresh installation already has, so the
course runs without a download: the documentation of Python and of the installed packages.
This card says what that text is. Its numbers were measured by `{card["command"]}` at commit
`{card["commit"]}` on {card["machine"]}, with the package versions in the table: another Python or
other package versions have other docstrings, so rerun the script to see yours. (Generated from
`bertcourse/reference/corpus_card.json`; do not edit by hand.)

## Two sizes

- **`offline`** (`load_corpus("offline")`, `offline_corpus(split)`): Python's own documentation,
  the Language Reference pages that `help()` shows and the docstrings of the standard library.
  {small_sentences:,} sentences, {small_characters / 1e6:.1f} million characters. The tests and the
  `ci` runs of chapters 6 to 8 use it: it is built in seconds.
- **`offline-large`** (`load_corpus("offline-large")`, `offline_corpus(split, "large")`): that,
  then the docstrings of the installed packages below. {total["sentences"]:,} sentences,
  {total["characters"] / 1e6:.1f} million characters, {total["words"]:,} words,
  {total["tokens"]:,} tokens. The course checkpoint `course-tiny` was pretrained on it. The first
  call builds it (about a minute) and caches it under `~/.cache/bertcourse`.

## Sources, sizes and licenses

Tokens are counted with {card["tokenizer"]}. Each license is
the one the package declares in its metadata; the Python documentation is under the PSF License.

{chr(10).join(table)}

## How it is made

Docstrings are read from the source files with Python's `ast` module (no code is imported or
run), in a sorted walk, so the corpus is the same on every machine with the same versions. Only
prose is kept: code examples, doctest lines (`>>>`), parameter tables (`Parameters`, `Args:`,
field lists), See-Also entries and lines that are mostly symbols are dropped; text is split into
sentences; a sentence that already occurred is kept once, at its first occurrence, so that
boilerplate cannot be memorised or leak from training into validation. Each module or reference
page is a document. About one document in ten goes to the validation split, chosen by a CRC-32 of
its name: the split does not depend on the order in which files are found. Train:
{total["train_documents"]:,} documents; validation: {total["validation_documents"]:,}.

## Examples

{examples}

## What it is biased towards

This is technical English written by programmers for programmers, and a model trained on it
learns that register and little else:

- **Definitions and conditions in the present tense.** The most common first words of a sentence
  are {first_words}; {card["sentences_starting_with_return"]:.0%} of all sentences start with
  "Return" or "Returns".
- **A narrow vocabulary.** Leaving out function words (*the*, *of*, *is*, ...), the twenty most
  frequent words are {top_words}. Words of feelings and opinions are rare: per million words,
  {review_words}. A model pretrained here has read almost no reviews, news or dialogue, so it
  knows little of the words a sentiment task turns on (chapter 9 measures what that costs on
  SST-2).
- **Heavy repetition of names.** Class, function and parameter names recur across thousands of
  sentences; the trained vocabulary spends many of its tokens on them.
- **English only, from a few large projects.** The largest packages dominate (see the share of
  tokens); their house style is the corpus's style.

## Held out for the downstream tasks

- `offline_classification` (chapter 9): which standard-library package
  ({", ".join(tasks["offline_classification (stdlib packages, in the corpus)"])}) a documentation
  sentence comes from. These sentences are part of the corpus: pretraining read them without
  labels, as BERT's pretraining read Wikipedia before its tasks.
- `offline_topic_classification`: the subject of a documentation sentence of packages the corpus
  leaves out ({topic_packages}). Any sentence that also occurs in the corpus is dropped, so no
  pretraining run of the course has read these.
"""


def main() -> None:
    card = measure()
    path = ROOT / "bertcourse" / "reference" / "corpus_card.json"
    path.write_text(json.dumps(card, indent=1) + "\n")
    page = ROOT / "book" / "corpus_card.md"
    page.write_text(render(card))
    print(f"wrote {path} and {page}")
    total = card["total"]
    print(f"{total['documents']:,} documents, {total['sentences']:,} sentences, "
          f"{total['words']:,} words, {total['tokens']:,} tokens")  # fmt: skip


if __name__ == "__main__":
    main()
