"""Offline token classification and question answering tasks built from the corpus.

`offline_ner` tags the names and code in documentation sentences; `offline_qa`
makes cloze questions answered by a span of a nearby passage (`QAExample`).
"""

from __future__ import annotations

import random
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .offline import offline_corpus

# ----------------------------------------------------------------------------
# Token classification and question answering: offline tasks
# ----------------------------------------------------------------------------

__all__ = [
    "NER_LABEL_NAMES",
    "NER_ENTITY_TYPES",
    "PYTHON_CONSTANTS",
    "GENERIC_ABBREVIATIONS",
    "NER_MAX_WORDS",
    "NER_SHARE_WITHOUT_ENTITIES",
    "QA_CONTEXT_SENTENCES",
    "QA_BLANK",
    "TaggedData",
    "split_words",
    "word_entity_type",
    "tag_words",
    "offline_ner",
    "entity_spans",
    "QAExample",
    "offline_qa",
]

# The offline tagging task: which words of a documentation sentence are names, and which are
# code? The tags come from the text itself, by three rules (see `word_entity_type`):
#   CODE  a word that can only be code: it contains "_" (os_path, notify_all), ends in "()"
#         (rename()), is a dotted name (os.path, S.index; not e.g), is CamelCase (TypeError,
#         MagicMock, IOBase), or is a capitalised name of Python's builtins or of `typing`
#         (None, True, Exception, Union, Callable);
#   NAME  a maximal run of other capitalised words of two or more letters (Python, Unicode,
#         EHLO, "Naming" in "section Naming and binding"), except a few abbreviations that are
#         ordinary nouns (IO, EOF, API, URL: GENERIC_ABBREVIATIONS);
#   O     every other word.
# A word at the start of a sentence or of a clause (after ".", ":", "?" or "!") is capitalised
# whatever it is, so the rule cannot tell whether it is a name: the words up to the sentence's
# first word with a letter, that word, and a capitalised word that starts a clause get the tag
# -100 (unknown). The reader's model is uncased, so it never sees the capital letters the labels
# come from: it must find names from their context, and CamelCase code from its pieces.
NER_LABEL_NAMES = ["O", "B-NAME", "I-NAME", "B-CODE", "I-CODE"]
NER_ENTITY_TYPES = ("NAME", "CODE")
# A word: a (dotted) identifier with an optional "()", a number, or one punctuation character.
_NER_WORD = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*(?:\(\))?|\d+(?:\.\d+)*|[^\w\s]")
# CamelCase: a lower-case letter then a capital (MagicMock), or an abbreviation of three
# capitals or more glued to a word (IOBase, OSError; not CPython or IPv4, which are names).
_CAMEL_CASE = re.compile(r"[a-z][A-Z]|[A-Z]{3,}[a-z]{2}")
# Python's capitalised built-in names that are not CamelCase (those are caught by the rule).
PYTHON_CONSTANTS = frozenset({"None", "True", "False", "Ellipsis", "Exception", "Warning"})
# Capitalised one-word names of `typing` that the CamelCase rule misses.
_TYPING_NAMES = frozenset(
    "Any Annotated Callable Concatenate Dict Final Generic Iterable Iterator List Literal Never "
    "NoReturn NotRequired Optional Protocol Required Self Tuple Union Unpack".split()
)
# Capitalised abbreviations that the documentation uses as ordinary nouns ("the IO object",
# "until EOF", "a URL"), not as names; each is an O word.
GENERIC_ABBREVIATIONS = frozenset(
    "API APIs CR CRLF EOF ID IDs IO LF NOT OK OR URL URLs XXX".split()
)
# Latin abbreviations that look like dotted names ("e.g." is split into "e.g" and ".").
_NOT_DOTTED_NAMES = frozenset({"e.g", "i.e", "E.g", "I.e"})
# A capitalised word after one of these (and any opening marks) starts a clause.
_CLAUSE_ENDS = frozenset(".:?!")
_OPENING_MARKS = frozenset({"*", "`", '"', "'", "“", "‘", "(", "[", "-", "–", "—"})
NER_MAX_WORDS = 64  # longer sentences are left out: a few run-ons of lists and signatures
NER_SHARE_WITHOUT_ENTITIES = 0.2  # of the sentences kept, about this share has no entity
QA_CONTEXT_SENTENCES = 3  # sentences before and after the question sentence in its context
QA_BLANK = "___"  # the blank that replaces the answer in the question sentence


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
    if word in _NOT_DOTTED_NAMES:
        return None
    if (
        "_" in word
        or word.endswith("()")
        or "." in word
        or _CAMEL_CASE.search(word)
        or word in PYTHON_CONSTANTS
        or word in _TYPING_NAMES
    ):
        return "CODE"
    if word[:1].isupper() and len(word) >= 2 and word not in GENERIC_ABBREVIATIONS:
        return "NAME"
    return None


def _starts_clause(words: Sequence[str], index: int) -> bool:
    """Whether words[index] follows ".", ":", "?" or "!" (with only opening marks between)."""
    before = index - 1
    while before >= 0 and words[before] in _OPENING_MARKS:
        before -= 1
    return before >= 0 and words[before] in _CLAUSE_ENDS


def tag_words(words: Sequence[str]) -> list[int]:
    """IOB2 tag ids (NER_LABEL_NAMES) of a sentence's words; -100 where the rules cannot tell.

    -100 up to the first word with a letter, and on a capitalised word that starts a clause
    (unless it is code). Each CODE word is its own entity; consecutive NAME words form one.
    """
    label = {name: index for index, name in enumerate(NER_LABEL_NAMES)}
    first = next((i for i, word in enumerate(words) if any(c.isalpha() for c in word)), len(words))
    tags, previous = [-100] * min(first + 1, len(words)), None
    for index in range(first + 1, len(words)):
        kind = word_entity_type(words[index])
        if kind == "NAME" and _starts_clause(words, index):
            kind = None  # unknown; a capitalised word after it starts an entity of its own
            tags.append(-100)
        elif kind == "CODE":
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


@dataclass
class QAExample:
    """A question about a context; answers are (text, character start) in the context."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for text, start in self.answers:
            if self.context[start : start + len(text)] != text:
                raise ValueError(
                    f"Example {self.id}: the answer {text!r} is not at character {start} of the "
                    f"context (found {self.context[start : start + len(text)]!r})."
                )


def offline_qa(split: str = "train", seed: int = 0) -> list[QAExample]:
    """Cloze questions about Python's documentation, answered by a span of a nearby passage.

    As in the cloze datasets of Hermann et al. (2015) and Lewis et al.
    (2019): for each sentence of a document that has an entity (NAME or
    CODE, by the rules of `offline_ner`) which also occurs in its
    neighbourhood, the *context* is the QA_CONTEXT_SENTENCES sentences
    before and after it, without the sentence itself; the *question* is the
    sentence with the entity replaced by the blank QA_BLANK ("___"); the *answers*
    are the entity's occurrences in the context, as the same words in the
    same case. One entity per question sentence (a seeded choice among those
    that qualify); an entity that occurs twice in its own sentence does not
    qualify (the question would still show it), nor one glued to a letter
    ("join()ed", "f().g()"). The question sentence never
    occurs in its context, so the answer cannot be found by looking the
    question up: the model must match what the question says around the
    blank with what the context says around the answer.
    """
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
