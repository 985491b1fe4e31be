"""The offline token-classification and question-answering tasks: their rules, splits and answers."""

from __future__ import annotations

import pytest

from bertcourse.data import (
    GENERIC_ABBREVIATIONS,
    NER_LABEL_NAMES,
    QA_BLANK,
    TaggedData,
    entity_spans,
    offline_ner,
    offline_qa,
    split_words,
    tag_words,
    word_entity_type,
)


def tag_names(sentence):
    words = split_words(sentence)
    return words, [None if t == -100 else NER_LABEL_NAMES[t] for t in tag_words(words)]


def test_split_words_keeps_case_and_code_whole():
    words = split_words("Call os.path.join() with Python's notify_all, not x.y.")
    assert words == [
        "Call",
        "os.path.join()",
        "with",
        "Python",
        "'",
        "s",
        "notify_all",
        ",",
        "not",
        "x.y",
        ".",
    ]


@pytest.mark.parametrize(
    ("word", "kind"),
    [
        ("notify_all", "CODE"),
        ("rename()", "CODE"),
        ("os.path", "CODE"),
        ("TypeError", "CODE"),
        ("MagicMock", "CODE"),
        ("None", "CODE"),
        ("True", "CODE"),
        ("_private", "CODE"),
        ("IOBase", "CODE"),  # an abbreviation glued to a word
        ("OSError", "CODE"),
        ("Union", "CODE"),  # a name of typing
        ("Callable", "CODE"),
        ("CPython", "NAME"),  # two capitals only: a name
        ("IPv4", "NAME"),
        ("IO", None),  # an abbreviation used as an ordinary noun
        ("EOF", None),
        ("URL", None),
        ("e.g", None),  # not a dotted name
        ("i.e", None),
        ("Python", "NAME"),
        ("EHLO", "NAME"),
        ("X", None),  # a single letter is a variable, not a name
        ("python", None),
        ("3.14", None),
        (",", None),
    ],
)
def test_word_entity_type(word, kind):
    assert word_entity_type(word) == kind


def test_tags_on_hand_written_sentences():
    words, tags = tag_names("Raise TypeError if the Python Software Foundation says so.")
    assert dict(zip(words, tags, strict=True)) == {
        "Raise": None,
        "TypeError": "B-CODE",
        "if": "O",
        "the": "O",
        "Python": "B-NAME",
        "Software": "I-NAME",
        "Foundation": "I-NAME",
        "says": "O",
        "so": "O",
        ".": "O",
    }
    # Consecutive CODE words are separate entities; a NAME run is broken by any other word.
    _, tags = tag_names("Use os.path os.sep with Guido and Tim")
    assert tags == [None, "B-CODE", "B-CODE", "O", "B-NAME", "O", "B-NAME"]
    # The first word is unknown whatever it is; so is leading punctuation before it.
    _, tags = tag_names('"Python is fun", said Guido.')
    assert tags == [None, None, "O", "O", "O", "O", "O", "B-NAME", "O"]
    _, tags = tag_names("MagicMock objects")
    assert tags == [None, "O"]


def test_a_capitalised_word_that_starts_a_clause_is_unknown():
    words, tags = tag_names("Else: The object must be an iterable, e.g. Python lists.")
    # "e.g" is not code; the "." after it ends a clause for the rules, so Python is unknown.
    assert dict(zip(words, tags, strict=True)) == {
        "Else": None,
        ":": "O",
        "The": None,
        "object": "O",
        "must": "O",
        "be": "O",
        "an": "O",
        "iterable": "O",
        ",": "O",
        "e.g": "O",
        ".": "O",
        "Python": None,
        "lists": "O",
    }
    # Opening marks between the colon and the word do not hide the clause start; code is
    # code wherever it is; the next capitalised word starts a new NAME.
    _, tags = tag_names('Note: "Python Software" and: TypeError')
    assert tags == [None, "O", "O", None, "B-NAME", "O", "O", "O", "B-CODE"]


def test_generic_abbreviations_are_ordinary_words():
    assert {"IO", "EOF", "API", "URL"} <= GENERIC_ABBREVIATIONS
    _, tags = tag_names("Flush and close the IO object until EOF over HTTP.")
    assert tags == [None, "O", "O", "O", "O", "O", "O", "O", "O", "B-NAME", "O"]


def test_entity_spans_are_character_spans_of_the_sentence():
    sentence = "Ask the Python Software Foundation about os.path.join() today."
    spans = entity_spans(sentence)
    assert [(kind, sentence[a:b]) for kind, a, b, _ in spans] == [
        ("NAME", "Python Software Foundation"),
        ("CODE", "os.path.join()"),
    ]


def test_tagged_data_validates_and_counts():
    data = TaggedData([["a", "Bob"]], [[-100, 1]], list(NER_LABEL_NAMES))
    assert data.entity_counts() == {"NAME": 1, "CODE": 0}
    assert data.tag_names(0) == [None, "B-NAME"]
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        TaggedData([["a", "b"]], [[0]], list(NER_LABEL_NAMES))
    with pytest.raises(ValueError, match="tag 7"):
        TaggedData([["a"]], [[7]], list(NER_LABEL_NAMES))


@pytest.fixture(scope="module")
def ner():
    return {split: offline_ner(split) for split in ("train", "validation")}


def test_offline_ner_sizes_and_shares(ner):
    train, validation = ner["train"], ner["validation"]
    assert len(train) > 3_000 and len(validation) > 400
    for data in (train, validation):
        counts = data.entity_counts()
        assert counts["NAME"] > 300 and counts["CODE"] > 300, counts
        without = sum(all(t in (-100, 0) for t in tags) for tags in data.tags) / len(data)
        assert 0.1 < without < 0.3, without
        assert all(tags[0] == -100 for tags in data.tags)
        assert data.tags == [tag_words(words) for words in data.sentences]


def test_offline_ner_is_split_by_document_and_deterministic(ner):
    train = {" ".join(words) for words in ner["train"].sentences}
    validation = [" ".join(words) for words in ner["validation"].sentences]
    # A few one-liners repeat across modules ("Return self."); whole documents never do.
    shared = sum(sentence in train for sentence in validation)
    assert shared < 0.02 * len(validation), shared
    again = offline_ner("validation")
    assert again.sentences == ner["validation"].sentences and again.tags == ner["validation"].tags


@pytest.fixture(scope="module")
def qa():
    return {split: offline_qa(split) for split in ("train", "validation")}


def test_offline_qa_answers_are_at_their_offsets(qa):
    for split, examples in qa.items():
        assert len(examples) > (1_000 if split == "train" else 200)
        for example in examples:
            assert example.answers
            for text, start in example.answers:
                assert example.context[start : start + len(text)] == text
            assert len({text for text, _ in example.answers}) == 1


def test_offline_qa_is_not_solved_by_string_matching(qa):
    for examples in qa.values():
        for example in examples:
            assert split_words(example.question).count(QA_BLANK) == 1
            original = example.question.replace(QA_BLANK, example.answers[0][0], 1)
            assert original not in example.context  # the question sentence is not in the context
            # The answer's words do not appear in the question (it occurs once in the sentence).
            answer_words = split_words(example.answers[0][0])
            question_words = split_words(example.question)
            n = len(answer_words)
            assert all(
                question_words[i : i + n] != answer_words
                for i in range(len(question_words) - n + 1)
            )


def test_offline_qa_is_split_by_document_and_deterministic(qa):
    train_documents = {example.id.split("#")[0] for example in qa["train"]}
    validation_documents = {example.id.split("#")[0] for example in qa["validation"]}
    assert not train_documents & validation_documents
    assert offline_qa("validation") == qa["validation"]
    assert offline_qa("validation", seed=1) != qa["validation"]
