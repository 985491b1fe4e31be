"""The architecture diagrams of book/figures: drawn by scripts/draw_diagrams.py, true to the code."""

import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "book" / "figures"
SVG = "{http://www.w3.org/2000/svg}"


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "draw_diagrams", ROOT / "scripts" / "draw_diagrams.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


draw_diagrams = _load_script()

# Labels each figure must show, as text (a label may be part of a longer line).
LABELS = {
    "input_representation.svg": [
        "[CLS]", "[SEP]", "nap", "##ping", "E[CLS]", "E##ping", "EA", "EB", "E0", "E10",
        "word_embeddings", "token_type_embeddings", "position_embeddings", "LayerNorm", "dropout",
        "segment A", "segment B", "(B, T, H)",
    ],
    "encoder_block.svg": [
        "attention.self", "attention.output.dense", "attention.output.dropout",
        "attention.output.LayerNorm", "intermediate.dense", "GELU", "output.dense",
        "output.dropout", "output.LayerNorm", "LayerNorm", "(B, T, H)", "(B, T, 4H)", "residual",
        "BertAttention", "BertIntermediate", "BertOutput",
    ],
    "pretraining_heads.svg": [
        "[CLS]", "[MASK]", "IsNext", "NotNext", "bert.pooler.dense", "tanh",
        "cls.seq_relationship", "cls.predictions.transform.dense", "GELU",
        "cls.predictions.transform.LayerNorm", "cls.predictions.decoder", "cls.predictions.bias",
        "word_embeddings.weight", "mlm_loss + nsp_loss",
    ],
    "finetuning_heads.svg": [
        "[CLS]", "[SEP]", "BertForSequenceClassification", "BertForTokenClassification",
        "BertForQuestionAnswering", "bert.pooler.dense", "dropout", "classifier", "qa_outputs",
        "B-PER", "B-LOC", "positive", "entailment", "start", "end", "my dog",
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    assert draw_diagrams.main(["--out", str(out)]) == 0
    return out


def _texts(root):
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def test_the_script_draws_the_four_figures(drawn):
    assert sorted(p.name for p in drawn.iterdir()) == sorted(LABELS)


@pytest.mark.parametrize("name", sorted(LABELS))
def test_figure_is_valid_svg_with_its_labels(drawn, name):
    root = ET.parse(drawn / name).getroot()
    assert root.tag == f"{SVG}svg"
    width = float(root.get("width"))
    viewbox = [float(v) for v in root.get("viewBox").split()]
    assert width <= 720 and viewbox[2] <= 720, "wider than the book's column"
    assert float(root.get("height")) == viewbox[3]
    assert root.find(f"{SVG}title").text and root.get("aria-label")
    texts = _texts(root)
    missing = [label for label in LABELS[name] if not any(label in text for text in texts)]
    assert not missing, f"{name} lacks {missing}"


@pytest.mark.parametrize("name", sorted(LABELS))
def test_committed_figure_is_what_the_script_draws(drawn, name):
    committed = FIGURES / name
    assert committed.exists(), f"run python scripts/draw_diagrams.py to write {committed}"
    assert committed.read_bytes() == (drawn / name).read_bytes(), (
        f"{name} is out of date: run python scripts/draw_diagrams.py"
    )


def test_drawing_is_deterministic(drawn, tmp_path):
    assert draw_diagrams.main(["--out", str(tmp_path)]) == 0
    for name in LABELS:
        assert (tmp_path / name).read_bytes() == (drawn / name).read_bytes(), name


def test_check_flags_a_changed_figure(drawn, tmp_path, capsys):
    for name in LABELS:
        (tmp_path / name).write_bytes((drawn / name).read_bytes())
    assert draw_diagrams.main(["--check", "--out", str(tmp_path)]) == 0
    stale = tmp_path / "encoder_block.svg"
    stale.write_text(stale.read_text().replace("GELU", "ReLU"))
    assert draw_diagrams.main(["--check", "--out", str(tmp_path)]) == 1
    assert "encoder_block.svg" in capsys.readouterr().err
    stale.unlink()
    assert draw_diagrams.main(["--check", "--out", str(tmp_path)]) == 1


def test_module_names_are_those_of_the_package():
    from bertcourse import BertConfig
    from bertcourse.model import (
        BertEmbeddings,
        BertForPreTraining,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertLayer,
    )

    config = BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    assert config.intermediate_size == 4 * config.hidden_size  # the figure's I = 4H
    figures = {name: _texts(ET.parse(FIGURES / name).getroot()) for name in LABELS}

    def modules(model):
        return {name for name, _ in model.named_modules()} | {
            name for name, _ in model.named_parameters(remove_duplicate=False)
        }

    expected = {
        "input_representation.svg": (
            BertEmbeddings(config),
            ["word_embeddings", "token_type_embeddings", "position_embeddings", "LayerNorm",
             "dropout"],
        ),
        "encoder_block.svg": (
            BertLayer(config),
            ["attention.self", "attention.output.dense", "attention.output.dropout",
             "attention.output.LayerNorm", "intermediate.dense", "output.dense",
             "output.dropout", "output.LayerNorm"],
        ),
        "pretraining_heads.svg": (
            BertForPreTraining(config),
            ["bert.embeddings", "bert.encoder", "bert.pooler.dense", "cls.seq_relationship",
             "cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
             "cls.predictions.decoder", "cls.predictions.bias"],
        ),
    }  # fmt: skip
    for name, (model, names) in expected.items():
        present = modules(model)
        for module in names:
            assert module in present, f"{module} is not a module of {type(model).__name__}"
            assert any(module in text for text in figures[name]), f"{module} not in {name}"

    pretraining = BertForPreTraining(config)
    decoder = pretraining.cls.predictions.decoder
    assert decoder.weight is pretraining.bert.embeddings.word_embeddings.weight  # "weight tied"
    assert "bert.embeddings.word_embeddings.weight" in modules(pretraining)  # on two lines
    assert decoder.bias is pretraining.cls.predictions.bias
    assert pretraining.cls.seq_relationship.out_features == 2  # IsNext, NotNext

    texts = figures["finetuning_heads.svg"]
    for model, names in (
        (BertForSequenceClassification(config), ["bert.pooler.dense", "dropout", "classifier"]),
        (BertForTokenClassification(config), ["dropout", "classifier"]),
        (BertForQuestionAnswering(config), ["qa_outputs"]),
    ):
        assert type(model).__name__ in " ".join(texts)
        for module in names:
            assert module in modules(model), f"{module} is not a module of {type(model).__name__}"
    assert BertForQuestionAnswering(config).qa_outputs.out_features == 2  # start, end


def test_example_inputs_are_what_the_tokenizer_gives():
    """MiniLM's tokenizer.json: what AutoTokenizer.from_pretrained(minilm_path()) loads, read here
    with the `tokenizers` library directly (importing transformers would take seconds)."""
    from tokenizers import Tokenizer

    from bertcourse.hf import minilm_path

    tokenizer = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    d = draw_diagrams
    for (first, second), tokens, segments in (
        (d.INPUT_PAIR, d.INPUT_TOKENS, d.INPUT_SEGMENTS),
        (d.CLASSIFICATION_SENTENCE, d.CLASSIFICATION_TOKENS, None),
        (d.PAIR_SENTENCES, d.PAIR_TOKENS, d.PAIR_SEGMENTS),
        (d.NER_SENTENCE, d.NER_TOKENS, None),
        (d.QA_PAIR, d.QA_TOKENS, d.QA_SEGMENTS),
    ):
        encoded = tokenizer.encode(first, second)
        assert tuple(encoded.tokens) == tokens
        if segments is not None:
            assert tuple(encoded.type_ids) == segments
    assert len(d.NER_TAGS) == len(d.NER_TOKENS)
    assert [d.INPUT_TOKENS[i] for i in d.MASKED_POSITIONS] == ["cute", "likes"]
    assert [d.QA_TOKENS[i] for i in d.QA_ANSWER] == ["my", "dog"]


def test_text_is_text_not_outlines():
    for name in LABELS:
        svg = (FIGURES / name).read_text(encoding="utf-8")
        assert len(re.findall(r"<text\b", svg)) >= 20, name
        assert "<font" not in svg and "glyph" not in svg, name
