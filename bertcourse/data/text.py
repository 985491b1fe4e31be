"""Sentences from documentation text: splitting, and keeping only the prose.

Docstrings and reference pages mix prose with code, doctests, tables and reST
markup. `prose_sentences` keeps the English sentences and drops the rest;
`split_sentences` splits a paragraph without breaking at abbreviations.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "MIN_SENTENCE_WORDS",
    "MIN_SENTENCE_LETTER_FRACTION",
    "MAX_SENTENCE_CHARACTERS",
    "ABBREVIATIONS",
    "SENTENCE_BOUNDARY",
    "split_sentences",
    "CODE_SENTENCE",
    "is_prose_sentence",
    "UNDERLINE",
    "FIELD_LINE",
    "TABLE_LINE",
    "BULLET",
    "DEFINITION_LINE",
    "STATEMENT_LINE",
    "prose_sentences",
]

MIN_SENTENCE_WORDS = 4
MIN_SENTENCE_LETTER_FRACTION = 0.6  # of the non-space characters
MAX_SENTENCE_CHARACTERS = 600  # longer "sentences" are run-together lists or tables


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
# Lines that name a parameter, a field or a section instead of saying something: Google style
# "eps (float, optional): Value added ...", numpydoc "x : int" and its "See Also" entries
# ("cut : Bin values ..."), and labels such as "Args:", "Default: 0.5", "training: ...".
FIELD_LINE = re.compile(
    r"""^(
        \*{0,2}[\w.]+\s*\((?:[^()]|\([^()]*\))*\)\s*:(\s|$)
      | [`'"*]*[\w.]+[`'"*]*\s+:(\s|$)
      | [A-Z][A-Za-z ]{0,25}:(\s|$)
      | [a-z_][\w.]*:(\s|$)
      | [`\w.]+\[[^\]]*\]`?:(\s|$)
    )""",
    re.VERBOSE,
)
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


def _is_field_line(line: str) -> bool:
    return bool(FIELD_LINE.match(line))


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
        skipped = _is_doctest_line(line) or _is_markup_line(line) or _is_field_line(line)
        if not line or in_doctest or skipped:
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
