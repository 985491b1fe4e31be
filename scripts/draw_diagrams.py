"""Draw the course's architecture diagrams as SVG files in book/figures/.

    python scripts/draw_diagrams.py            # write the four figures
    python scripts/draw_diagrams.py --check    # exit 1 if a figure on disk differs from the drawing
    python scripts/draw_diagrams.py --out DIR  # write (or --check) them in DIR instead

The figures:

- input_representation.svg: token + segment + position embeddings, summed, LayerNorm, dropout.
- encoder_block.svg: one post-LN encoder layer, with the module names of bertcourse.model.
- pretraining_heads.svg: the masked-LM head (tied to the word embeddings) and the NSP head.
- finetuning_heads.svg: the heads for sequence classification, sentence pairs, token
  classification and question answering.

Each figure is plain SVG written by this script: boxes, arrows and real text (no font outlines),
700 px wide, one palette for all four. The output is deterministic, so regenerating the figures
gives identical files and `--check` can guard them. The example inputs are what the uncased
WordPiece tokenizer of the offline MiniLM checkpoint gives for the sentences below;
tests/test_diagrams.py checks that.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

ROOT = Path(__file__).resolve().parent.parent
FIGURES_DIR = ROOT / "book" / "figures"
WIDTH = 700

# The example inputs: (sentence, second sentence or None) -> WordPiece tokens and segment ids.
INPUT_PAIR = ("my dog is cute", "he likes napping")
INPUT_TOKENS = ("[CLS]", "my", "dog", "is", "cute", "[SEP]", "he", "likes", "nap", "##ping", "[SEP]")  # fmt: skip
INPUT_SEGMENTS = (0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1)
MASKED_POSITIONS = (4, 7)  # the pretraining example hides "cute" and "likes"
CLASSIFICATION_SENTENCE = ("my dog is cute", None)
CLASSIFICATION_TOKENS = ("[CLS]", "my", "dog", "is", "cute", "[SEP]")
PAIR_SENTENCES = ("a dog runs", "it moves")
PAIR_TOKENS = ("[CLS]", "a", "dog", "runs", "[SEP]", "it", "moves", "[SEP]")
PAIR_SEGMENTS = (0, 0, 0, 0, 0, 1, 1, 1)
NER_SENTENCE = ("alice lives in paris", None)
NER_TOKENS = ("[CLS]", "alice", "lives", "in", "paris", "[SEP]")
NER_TAGS = (None, "B-PER", "O", "O", "B-LOC", None)  # None: label -100, not in the loss
QA_PAIR = ("who ran", "my dog ran")
QA_TOKENS = ("[CLS]", "who", "ran", "[SEP]", "my", "dog", "ran", "[SEP]")
QA_SEGMENTS = (0, 0, 0, 0, 1, 1, 1, 1)
QA_ANSWER = (4, 5)  # start and end token of the answer, "my dog"

# One palette for the four figures: the same colour means the same kind of thing in each.
STYLE = """
text{font-family:Helvetica,Arial,sans-serif;font-size:12px;fill:#1f2d3d}
.mono{font-family:Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:10px;fill:#34495e}
.b{font-weight:700}
.h{font-size:13px;font-weight:700}
.note{font-size:11px;fill:#4a5563}
.tok{font-size:11px}
.sm{font-size:10px}
.sub{font-size:8.5px}
.off-text{fill:#9aa3ad}
.box{stroke:#3a4a5a;stroke-width:1.1}
.token{fill:#ffffff}
.emb{fill:#fde3bc}
.seg-a{fill:#ece2f8}
.seg-b{fill:#cfbdec}
.pos{fill:#e3e8ee}
.enc{fill:#b9d3ee}
.hid{fill:#dbe8f5}
.attn{fill:#cfe0f3}
.ffn{fill:#d3ede8}
.ln{fill:#fff0b0}
.act{fill:#ffffff}
.drop{fill:#ffffff;stroke-dasharray:4 3}
.head{fill:#dcefd0}
.pred{fill:#f9d9d4}
.pred-on{fill:#ec9d92}
.off{fill:#f3f4f6;stroke:#b4bac2;stroke-dasharray:3 2}
.panel{fill:#f7f9fc;stroke:#d5dde6;stroke-width:1}
.group{fill:none;stroke:#8a96a3;stroke-width:1.2}
.flow{fill:none;stroke:#555555;stroke-width:1.4}
.res{fill:none;stroke:#3f7fbf;stroke-width:1.5}
.tie{fill:none;stroke:#c0504d;stroke-width:1.3;stroke-dasharray:5 3}
.add{fill:#ffffff;stroke:#3a4a5a;stroke-width:1.2}
"""

MARKERS = (
    '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
    'markerHeight="7" markerUnits="userSpaceOnUse" orient="auto">'
    '<path d="M0,0 L10,5 L0,10 z" fill="#555555"/></marker>\n'
    '<marker id="arrow-res" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
    'markerHeight="8" markerUnits="userSpaceOnUse" orient="auto">'
    '<path d="M0,0 L10,5 L0,10 z" fill="#3f7fbf"/></marker>'
)


def fmt(value: float) -> str:
    """A coordinate as short, stable text: 12, 12.5, 12.33."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


class Drawing:
    """An SVG document built element by element, in drawing order."""

    def __init__(self, title: str, description: str, width: int = WIDTH):
        self.title = title
        self.description = description
        self.width = width
        self.height = 0.0
        self.elements: list[str] = []

    def _extend(self, y: float) -> None:
        self.height = max(self.height, y)

    def rect(
        self, x: float, y: float, w: float, h: float, cls: str, rx: float = 5, at: int | None = None
    ) -> None:
        """A rounded rectangle; at: its place in the drawing order (default: on top)."""
        element = (
            f'<rect x="{fmt(x)}" y="{fmt(y)}" width="{fmt(w)}" height="{fmt(h)}" '
            f'rx="{fmt(rx)}" class="{cls}"/>'
        )
        self.elements.insert(len(self.elements) if at is None else at, element)
        self._extend(y + h)

    def text(
        self,
        x: float,
        y: float,
        content: str | Sequence[tuple[str, str]],
        cls: str = "",
        anchor: str = "middle",
    ) -> None:
        """Text at baseline y. content: a string, or (text, kind) runs where kind is "" for
        plain text, "sub" for a subscript and any other word for a CSS class of that run."""
        runs = [(content, "")] if isinstance(content, str) else list(content)
        parts, lowered = [], False
        for run, kind in runs:
            if kind == "sub":
                parts.append(f'<tspan class="sub" dy="3">{escape(run)}</tspan>')
                lowered = True
                continue
            shift = ' dy="-3"' if lowered else ""
            lowered = False
            parts.append(
                f'<tspan class="{kind}"{shift}>{escape(run)}</tspan>'
                if kind or shift
                else escape(run)
            )
        cls_attr = f' class="{cls}"' if cls else ""
        anchor_attr = f' text-anchor="{anchor}"' if anchor != "start" else ""
        self.elements.append(
            f'<text x="{fmt(x)}" y="{fmt(y)}"{cls_attr}{anchor_attr}>{"".join(parts)}</text>'
        )
        self._extend(y + 4)

    def box(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        cls: str,
        label: str | Sequence[tuple[str, str]],
        module: str | None = None,
        label_cls: str = "",
    ) -> None:
        """A rounded box with a centred label and, below it, an optional module name."""
        self.rect(x, y, w, h, f"box {cls}")
        cy = y + h / 2
        if module is None:
            self.text(x + w / 2, cy + 4, label, label_cls)
        else:
            self.text(x + w / 2, cy - 2.5, label, label_cls)
            self.text(x + w / 2, cy + 10.5, module, "mono")

    def line(self, points: Sequence[tuple[float, float]], cls: str = "flow", marker: str = "arrow"):
        """A polyline through points, with an arrowhead at the end unless marker is empty."""
        d = " ".join(
            f"{'M' if i == 0 else 'L'}{fmt(x)},{fmt(y)}" for i, (x, y) in enumerate(points)
        )
        end = f' marker-end="url(#{marker})"' if marker else ""
        self.elements.append(f'<path d="{d}" class="{cls}"{end}/>')
        self._extend(max(y for _, y in points))

    def arrow(self, x: float, y1: float, y2: float) -> None:
        """A vertical arrow from y1 down to y2."""
        self.line([(x, y1), (x, y2)])

    def add_node(self, x: float, y: float, r: float = 9) -> None:
        """The circled plus of a residual connection, centred on (x, y)."""
        self.elements.append(f'<circle cx="{fmt(x)}" cy="{fmt(y)}" r="{fmt(r)}" class="add"/>')
        self.line([(x - r + 4, y), (x + r - 4, y)], "flow", "")
        self.line([(x, y - r + 4), (x, y + r - 4)], "flow", "")

    def bracket(self, x: float, y1: float, y2: float, width: float = 6) -> None:
        """A square bracket opening to the right, from y1 to y2."""
        self.line([(x + width, y1), (x, y1), (x, y2), (x + width, y2)], "group", "")

    def svg(self, bottom_margin: float = 8) -> str:
        height = int(round(self.height + bottom_margin))
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{height}" '
            f'viewBox="0 0 {self.width} {height}" role="img" aria-label={quoteattr(self.description)}>'
        )
        body = "\n".join(self.elements)
        return (
            f"{head}\n<title>{escape(self.title)}</title>\n<defs>\n{MARKERS}\n</defs>\n"
            f"<style>{STYLE}</style>\n{body}\n</svg>\n"
        )


def subscripted(base: str, index: str) -> list[tuple[str, str]]:
    return [(base, ""), (index, "sub")]


def columns(x0: float, x1: float, count: int, gap: float) -> tuple[list[float], float]:
    """Left edges and width of count equal boxes filling x0..x1 with gap between them."""
    width = (x1 - x0 - gap * (count - 1)) / count
    return [x0 + i * (width + gap) for i in range(count)], width


# ---------------------------------------------------------------------------------------------
# 1. The input representation
# ---------------------------------------------------------------------------------------------


def input_representation() -> str:
    tokens, segments = INPUT_TOKENS, INPUT_SEGMENTS
    d = Drawing(
        "BERT's input representation",
        "The input [CLS] my dog is cute [SEP] he likes nap ##ping [SEP]. Under every token "
        "three embeddings are added: its token embedding, the segment embedding E_A or E_B, and "
        "the position embedding E_0 to E_10. The sums go through LayerNorm and dropout and become "
        "the encoder's input, one H-dimensional vector per token.",
    )
    lefts, w = columns(160, 692, len(tokens), 5)
    centres = [x + w / 2 for x in lefts]
    right = lefts[-1] + w
    row_h = 28

    def row_label(y: float, label: str, detail: str, detail_cls: str = "mono") -> None:
        d.text(8, y + row_h / 2 - 2.5, label, "b", "start")
        d.text(8, y + row_h / 2 + 10.5, detail, detail_cls, "start")

    # The two segments, bracketed above the tokens.
    first_b = segments.index(1)
    for start, stop, name in ((0, first_b, "A"), (first_b, len(tokens), "B")):
        x1, x2 = lefts[start] + 2, lefts[stop - 1] + w - 2
        d.line([(x1, 30), (x1, 25), (x2, 25), (x2, 30)], "group", "")
        d.text(
            (x1 + x2) / 2, 19, f"segment {name}: token_type_id {0 if name == 'A' else 1}", "note"
        )

    d.text(8, 19, [("module names under ", ""), ("embeddings.", "mono")], "note", "start")
    y_tok = 34
    row_label(y_tok, "Input", "WordPiece tokens", "note")
    for x, token in zip(lefts, tokens, strict=True):
        d.box(x, y_tok, w, row_h, "token", token, label_cls="tok")

    rows = [
        (
            80,
            "Token embeddings",
            "word_embeddings",
            [("emb", subscripted("E", t)) for t in tokens],
        ),
        (
            132,
            "Segment embeddings",
            "token_type_embeddings",
            [
                ("seg-a" if s == 0 else "seg-b", subscripted("E", "A" if s == 0 else "B"))
                for s in segments
            ],
        ),
        (
            184,
            "Position embeddings",
            "position_embeddings",
            [("pos", subscripted("E", str(i))) for i in range(len(tokens))],
        ),
    ]
    for c in centres:
        d.arrow(c, y_tok + row_h + 1, rows[0][0] - 1)
    for n, (y, label, module, cells) in enumerate(rows):
        row_label(y, label, module)
        for x, (cls, content) in zip(lefts, cells, strict=True):
            d.box(x, y, w, row_h, cls, content)
        if n < len(rows) - 1:
            for c in centres:
                d.text(c, y + row_h + 17, "+", "h")

    y_ln = 246
    for c in centres:
        d.arrow(c, rows[-1][0] + row_h + 1, y_ln - 1)
    d.text(8, 234, "sum, one vector per token", "note", "start")
    bar_x, bar_w = lefts[0], right - lefts[0]
    row_label(y_ln, "Normalise", "(B, T, H)")
    d.box(bar_x, y_ln, bar_w, 30, "ln", "LayerNorm over the H features of each token", "LayerNorm")
    y_drop = y_ln + 30 + 18
    d.arrow(bar_x + bar_w / 2, y_ln + 31, y_drop - 1)
    row_label(y_drop, "Dropout", "p = hidden_dropout_prob", "note")
    d.box(bar_x, y_drop, bar_w, 30, "drop", "dropout (training only)", "dropout")
    y_out = y_drop + 30 + 20
    d.arrow(bar_x + bar_w / 2, y_drop + 31, y_out)
    d.text(
        bar_x + bar_w / 2,
        y_out + 16,
        [("e", ""), ("0", "sub"), (" … e", ""), ("10", "sub"),
         (": the input of encoder layer 0, shape (B, T, H)", "")],
        "note",
    )  # fmt: skip
    return d.svg()


# ---------------------------------------------------------------------------------------------
# 2. One encoder layer
# ---------------------------------------------------------------------------------------------


def encoder_block() -> str:
    d = Drawing(
        "One BERT encoder layer (post-LN)",
        "One encoder layer, top to bottom: multi-head self-attention (attention.self), the output "
        "projection attention.output.dense, dropout, the residual addition and "
        "attention.output.LayerNorm; then the feed-forward block intermediate.dense from H to 4H, "
        "GELU, output.dense from 4H back to H, dropout, the second residual addition and "
        "output.LayerNorm. The tensors have shape (B, T, H), except (B, T, 4H) inside the "
        "feed-forward block.",
    )
    x, w = 150, 230  # the main column
    cx = x + w / 2
    res_x = 124  # where the residual paths run
    shape_x = x + w + 12
    gap = 14
    d.text(
        8, 18, "encoder.layer.i (BertLayer): one of the L = num_hidden_layers layers", "b", "start"
    )

    y = 34
    d.box(x, y, w, 26, "hid", "hidden states h from the layer below")
    d.text(shape_x, y + 17, "(B, T, H)", "mono", "start")
    y += 26
    branch1 = y + 18
    d.arrow(cx, y, y + 2 * gap + 4)
    y += 2 * gap + 4

    boxes: dict[str, tuple[float, float]] = {}

    def block(name: str, h: float, cls: str, label, module=None, shape=None) -> None:
        nonlocal y
        d.box(x, y, w, h, cls, label, module)
        if shape:
            d.text(shape_x, y + h / 2 + 3.5, shape, "mono", "start")
        boxes[name] = (y, y + h)
        y += h

    def link() -> None:
        nonlocal y
        d.arrow(cx, y, y + gap)
        y += gap

    def residual(branch_y: float, name: str) -> None:
        """The add node at y, fed from branch_y by a path on the left; then the LayerNorm."""
        nonlocal y
        r = 9
        add_y = y + r
        d.line([(cx, branch_y), (res_x, branch_y), (res_x, add_y), (cx - r - 1, add_y)], "res",
               "arrow-res")  # fmt: skip
        d.add_node(cx, add_y, r)
        boxes[name] = (y, y + 2 * r)
        y += 2 * r
        link()

    block("self", 40, "attn", "Multi-head self-attention", "attention.self")
    link()
    block("o.dense", 30, "attn", "Linear H → H", "attention.output.dense", "(B, T, H)")
    link()
    block("o.drop", 22, "drop", [("dropout  ", ""), ("attention.output.dropout", "mono")])
    link()
    residual(branch1, "add1")
    block("o.ln", 30, "ln", "LayerNorm", "attention.output.LayerNorm", "(B, T, H)")
    d.text(shape_x + 62, boxes["o.ln"][0] + 18.5, "= h′", "note", "start")
    branch2 = y + 18
    d.arrow(cx, y, y + 2 * gap + 4)
    y += 2 * gap + 4
    block("i.dense", 30, "ffn", "Linear H → I (I = 4H)", "intermediate.dense", "(B, T, 4H)")
    link()
    block("gelu", 22, "act", "GELU (exact, with erf)", shape="(B, T, 4H)")
    link()
    block("out.dense", 30, "ffn", "Linear I → H", "output.dense", "(B, T, H)")
    link()
    block("out.drop", 22, "drop", [("dropout  ", ""), ("output.dropout", "mono")])
    link()
    residual(branch2, "add2")
    block("out.ln", 30, "ln", "LayerNorm", "output.LayerNorm", "(B, T, H)")
    d.text(shape_x + 62, boxes["out.ln"][0] + 18.5, "= h″", "note", "start")
    link()
    d.box(x, y, w, 26, "hid", "to the next layer (or the heads)")
    d.text(shape_x, y + 17, "(B, T, H)", "mono", "start")
    y += 26

    # Residual labels, above the paths.
    d.text(res_x + 6, branch1 - 4, "residual: h", "note", "start")
    d.text(res_x + 6, branch2 - 4, "residual: h′", "note", "start")

    # The three submodules of BertLayer, bracketed on the left.
    groups = [
        ("self", "o.ln", "attention", "BertAttention"),
        ("i.dense", "gelu", "intermediate", "BertIntermediate"),
        ("out.dense", "out.ln", "output", "BertOutput"),
    ]
    gx = 92
    for first, last, name, cls_name in groups:
        top, bottom = boxes[first][0], boxes[last][1]
        d.bracket(gx, top, bottom)
        mid = (top + bottom) / 2
        d.text(gx - 6, mid - 1, name, "mono b", "end")
        d.text(gx - 6, mid + 12, cls_name, "sm", "end")

    # What happens inside attention.self.
    ix, iw = 490, 204
    top = boxes["self"][0] - 10
    n_h, d_k = [("n", ""), ("h", "sub")], [("d", ""), ("k", "sub")]
    lines = [
        ([("inside attention.self", "b")], "sm"),
        ([("query, key, value: Linear H → H", "")], "sm"),
        ([("split into ", ""), *n_h, (" heads of ", ""), *d_k, (" = H / ", ""), *n_h], "sm"),
        ([("shape (B, ", ""), *n_h, (", T, ", ""), *d_k, (")", "")], "sm"),
        ([("softmax(QKᵀ / √", ""), *d_k, (" + mask) V", "")], "sm"),
        ([("dropout on the weights, p =", "")], "sm"),
        ([("attention_probs_dropout_prob", "")], "mono"),
        ([("heads merged back: (B, T, H)", "")], "sm"),
    ]
    ih = 12 + 16 * len(lines)
    d.rect(ix, top, iw, ih, "box attn", 6)
    for n, (runs, cls) in enumerate(lines):
        d.text(ix + 9, top + 18 + 16 * n, runs, cls, "start")
    self_mid = (boxes["self"][0] + boxes["self"][1]) / 2
    d.line([(x + w, self_mid), (ix, self_mid)], "group", "")
    return d.svg()


# ---------------------------------------------------------------------------------------------
# 3. The pretraining heads
# ---------------------------------------------------------------------------------------------


def pretraining_heads() -> str:
    tokens = list(INPUT_TOKENS)
    for i in MASKED_POSITIONS:
        tokens[i] = "[MASK]"
    d = Drawing(
        "BERT's pretraining heads: masked LM and next sentence prediction",
        "A masked sentence pair goes through the BERT encoder. The vectors of the masked "
        "positions go through the MLM head: cls.predictions.transform.dense, GELU, LayerNorm, "
        "then the decoder, whose weight is the word-embedding matrix, plus a bias, giving logits "
        "over the vocabulary. The [CLS] vector goes through the pooler (dense and tanh) and "
        "cls.seq_relationship, giving two logits: IsNext and NotNext.",
    )
    lefts, w = columns(10, 690, len(tokens), 6)
    centres = [x + w / 2 for x in lefts]
    d.text(
        10, 16, "A masked sentence pair (the second sentence follows the first)", "note", "start"
    )
    y_tok = 24
    for n, (x, token) in enumerate(zip(lefts, tokens, strict=True)):
        d.box(x, y_tok, w, 26, "pred" if n in MASKED_POSITIONS else "token", token,
              label_cls="tok")  # fmt: skip
    y_enc = y_tok + 26 + 16
    for c in centres:
        d.arrow(c, y_tok + 27, y_enc - 1)
    d.box(10, y_enc, 680, 34, "enc", "BERT encoder: embeddings and L encoder layers",
          "bert.embeddings, bert.encoder")  # fmt: skip
    y_hid = y_enc + 34 + 16
    for c in centres:
        d.arrow(c, y_enc + 35, y_hid - 1)
    used = {0, *MASKED_POSITIONS}
    for n, x in enumerate(lefts):
        label = subscripted("h", "[CLS]" if n == 0 else str(n))
        d.box(x, y_hid, w, 26, "hid" if n in used else "off", label)
    y_hid_end = y_hid + 26

    # NSP: [CLS] -> pooler -> seq_relationship -> (IsNext, NotNext).
    nx, nw = 24, 178
    ncx = nx + nw / 2
    y0 = y_hid_end + 40
    d.line([(centres[0], y_hid_end + 1), (centres[0], y_hid_end + 14), (ncx, y_hid_end + 14),
            (ncx, y0 - 1)])  # fmt: skip
    d.text(ncx + 6, y0 - 8, "(B, H)", "mono", "start")
    d.text(nx, y0 - 8, "NSP head", "h", "start")
    d.box(nx, y0, nw, 32, "head", "Linear H → H", "bert.pooler.dense")
    d.arrow(ncx, y0 + 33, y0 + 45)
    d.box(nx, y0 + 46, nw, 22, "act", "tanh")
    d.arrow(ncx, y0 + 69, y0 + 83)
    d.text(ncx + 6, y0 + 79.5, "pooled p (B, H)", "mono", "start")
    d.box(nx, y0 + 84, nw, 32, "head", "Linear H → 2", "cls.seq_relationship")
    d.arrow(ncx, y0 + 117, y0 + 131)
    d.text(ncx + 6, y0 + 127.5, "(B, 2)", "mono", "start")
    half = nw / 2
    d.box(nx, y0 + 132, half, 26, "pred-on", "IsNext", label_cls="b")
    d.box(nx + half, y0 + 132, half, 26, "pred", "NotNext")
    d.text(ncx, y0 + 172, "label 0 = IsNext, 1 = NotNext", "note")
    d.text(ncx, y0 + 186, "NSP loss: cross-entropy", "note")

    # MLM: masked positions -> transform -> decoder (tied) -> vocabulary logits.
    mx, mw = 262, 240
    mcx = mx + mw / 2
    join_y = y_hid_end + 14
    for i in MASKED_POSITIONS:
        d.line([(centres[i], y_hid_end + 1), (centres[i], join_y), (mcx, join_y)], "flow", "")
    d.arrow(mcx, join_y, y0 - 1)
    d.text(mcx + 6, y0 - 8, "masked positions (N, H)", "mono", "start")
    d.text(mx, y0 - 8, "MLM head", "h", "start")
    d.box(mx, y0, mw, 32, "head", "Linear H → H", "cls.predictions.transform.dense")
    d.arrow(mcx, y0 + 33, y0 + 45)
    d.box(mx, y0 + 46, mw, 22, "act", "GELU")
    d.arrow(mcx, y0 + 69, y0 + 83)
    d.box(mx, y0 + 84, mw, 32, "ln", "LayerNorm", "cls.predictions.transform.LayerNorm")
    d.arrow(mcx, y0 + 117, y0 + 131)
    y_dec = y0 + 132
    d.rect(mx, y_dec, mw, 46, "box head")
    d.text(mcx, y_dec + 15, "Linear H → |V| (weight tied)", "")
    d.text(mcx, y_dec + 28, "cls.predictions.decoder", "mono")
    d.text(mcx, y_dec + 40, "+ cls.predictions.bias (|V|)", "mono")
    d.arrow(mcx, y_dec + 47, y_dec + 61)
    d.text(mcx + 6, y_dec + 57.5, "logits (N, |V|)", "mono", "start")
    y_pred = y_dec + 62
    half_w = mw / 2
    d.box(mx, y_pred, half_w, 26, "pred-on",
          [("position 4: ", ""), (INPUT_TOKENS[MASKED_POSITIONS[0]], "b")])  # fmt: skip
    d.box(mx + half_w, y_pred, half_w, 26, "pred-on",
          [("position 7: ", ""), (INPUT_TOKENS[MASKED_POSITIONS[1]], "b")])  # fmt: skip
    d.text(mcx, y_pred + 40, "MLM loss: cross-entropy against the hidden tokens", "note")
    d.text(mcx, y_pred + 54, "(label −100 at the other positions)", "note")

    # The tied decoder weight.
    tx, tw = 522, 170
    ty = y_dec - 40
    d.rect(tx, ty, tw, 100, "box emb", 6)
    tie_lines = [
        ("tied weights", "sm b"),
        ("the decoder's weight is", "sm"),
        ("bert.embeddings.", "mono"),
        ("word_embeddings.weight", "mono"),
        ("(|V| × H): the same matrix;", "sm"),
        ("only the bias is the head's own", "sm"),
    ]
    for n, (text, cls) in enumerate(tie_lines):
        d.text(tx + 8, ty + 17 + 15 * n, text, cls, "start")
    d.line([(mx + mw, y_dec + 16), (tx, y_dec + 16)], "tie", "")

    d.text(WIDTH / 2, y_pred + 80, "pretraining loss = mlm_loss + nsp_loss", "b")
    return d.svg()


# ---------------------------------------------------------------------------------------------
# 4. The fine-tuning heads
# ---------------------------------------------------------------------------------------------

PANEL_W, PANEL_GAP = 341, 10


class Panel:
    """One task of the fine-tuning figure: title, tokens, encoder and the vectors it gives."""

    def __init__(self, d: Drawing, px: float, py: float, title: str, model: str, task: str):
        self.d, self.px, self.py = d, px, py
        self.inner = (px + 12, px + PANEL_W - 12)
        d.text(px + 12, py + 20, title, "h", "start")
        d.text(px + 12, py + 35, model, "mono", "start")
        d.text(px + PANEL_W - 12, py + 35, task, "note", "end")

    def encode(
        self,
        tokens: Sequence[str],
        segments: Sequence[int] | None,
        used: Callable[[int], bool],
        label_w: float = 0,
    ) -> float:
        """Tokens, the encoder and the output vectors; returns the bottom of the vectors."""
        d = self.d
        x0, x1 = self.inner
        self.lefts, self.w = columns(x0 + label_w, x1, len(tokens), 3)
        self.centres = [x + self.w / 2 for x in self.lefts]
        y = self.py + 46
        for x, token in zip(self.lefts, tokens, strict=True):
            d.box(x, y, self.w, 22, "token", token, label_cls="sm")
        y += 22
        if segments is not None:
            for x, s in zip(self.lefts, segments, strict=True):
                d.rect(x, y + 3, self.w, 11, "box " + ("seg-a" if s == 0 else "seg-b"), 2)
                d.text(x + self.w / 2, y + 11.5, "A" if s == 0 else "B", "sub")
        y += 16
        d.box(x0, y, x1 - x0, 24, "enc", "BERT encoder")
        y += 24 + 10
        for c in self.centres:
            d.arrow(c, y - 10, y - 1)
        for n, x in enumerate(self.lefts):
            label = subscripted("h", "[CLS]" if n == 0 else str(n))
            d.box(x, y, self.w, 22, "hid" if used(n) else "off", label)
        return y + 22

    def chain(self, y: float, blocks, shapes) -> float:
        """Boxes under h_[CLS], each with the shape of its output on its right."""
        d = self.d
        x0 = self.inner[0]
        bx, bw = x0 + 40, 170
        bcx = bx + bw / 2
        d.line([(self.centres[0], y + 1), (self.centres[0], y + 8), (bcx, y + 8), (bcx, y + 17)])
        y += 18
        for n, ((h, cls, label, module), shape) in enumerate(zip(blocks, shapes, strict=True)):
            d.box(bx, y, bw, h, cls, label, module, "b" if cls == "pred-on" else "")
            if shape:
                d.text(bx + bw + 8, y + h / 2 + 3.5, shape, "mono", "start")
            y += h
            if n < len(blocks) - 1:
                d.arrow(bcx, y + 1, y + 11)
                y += 12
        return y


def finetuning_heads() -> str:
    d = Drawing(
        "BERT's fine-tuning heads",
        "Four tasks. Sequence classification: the [CLS] vector goes through the pooler, dropout "
        "and the classifier to a label. Sentence pairs: the same head on the input [CLS] A [SEP] "
        "B [SEP]. Token classification: every token vector goes through dropout and the "
        "classifier to a tag such as B-PER. Question answering: every token vector goes through "
        "qa_outputs to a start and an end logit; the best span is the answer.",
    )
    left, right = 4, 4 + PANEL_W + PANEL_GAP

    def pooled_head(panel: Panel, bottom: float, label: str) -> float:
        return panel.chain(
            bottom,
            [
                (30, "head", "Linear H → H, tanh", "bert.pooler.dense"),
                (22, "drop", [("dropout", "mono")], None),
                (30, "head", "Linear H → C", "classifier"),
                (24, "pred-on", label, None),
            ],
            ["pooled p (B, H)", "(B, H)", "logits (B, C)", "argmax"],
        )

    # The heads on the pooled [CLS] vector, in the top row.
    py = 4
    start, bottoms = len(d.elements), []
    for px, title, model, task, tokens, segments, label in (
        (left, "Sequence classification", "BertForSequenceClassification", "e.g. SST-2",
         CLASSIFICATION_TOKENS, None, "positive"),
        (right, "Sentence pairs", "BertForSequenceClassification", "e.g. MNLI",
         PAIR_TOKENS, PAIR_SEGMENTS, "entailment"),
    ):  # fmt: skip
        panel = Panel(d, px, py, title, model, task)
        bottom = panel.encode(tokens, segments, lambda n: n == 0)
        bottoms.append(pooled_head(panel, bottom, label))
    for px in (left, right):
        d.rect(px, py, PANEL_W, max(bottoms) + 12 - py, "panel", 8, at=start)

    # Token classification: the same classifier on every token.
    py = max(bottoms) + 12 + PANEL_GAP
    start, bottoms = len(d.elements), []
    panel = Panel(d, left, py, "Token classification", "BertForTokenClassification", "e.g. NER")
    y = panel.encode(NER_TOKENS, None, lambda n: True)
    x0, x1 = panel.inner
    for c in panel.centres:
        d.arrow(c, y + 1, y + 11)
    y += 12
    d.box(x0, y, x1 - x0, 22, "drop", [("dropout", "mono")])
    y += 22
    for c in panel.centres:
        d.arrow(c, y + 1, y + 11)
    y += 12
    d.box(x0, y, x1 - x0, 30, "head", "Linear H → C, the same at every token", "classifier")
    y += 30
    for c in panel.centres:
        d.arrow(c, y + 1, y + 11)
    y += 12
    for x, tag in zip(panel.lefts, NER_TAGS, strict=True):
        if tag is None:
            d.box(x, y, panel.w, 22, "off", "−100", label_cls="sm off-text")
        else:
            d.box(x, y, panel.w, 22, "pred" if tag == "O" else "pred-on", tag, label_cls="sm b")
    d.text(x0, y + 38, "logits (B, T, C): a tag per token; special tokens", "note", "start")
    d.text(x0, y + 52, "and padding get label −100, left out of the loss", "note", "start")
    bottoms.append(y + 56)

    # Question answering: a start and an end logit for every token.
    panel = Panel(d, right, py, "Question answering", "BertForQuestionAnswering", "e.g. SQuAD")
    label_w = 34
    y = panel.encode(QA_TOKENS, QA_SEGMENTS, lambda n: True, label_w)
    x0, x1 = panel.inner
    for c in panel.centres:
        d.arrow(c, y + 1, y + 11)
    y += 12
    qa_x = panel.lefts[0]
    d.box(qa_x, y, x1 - qa_x, 30, "head", "Linear H → 2 at every token", "qa_outputs")
    y += 30
    for c in panel.centres:
        d.arrow(c, y + 1, y + 11)
    y += 12
    context = [s == 1 and t != "[SEP]" for t, s in zip(QA_TOKENS, QA_SEGMENTS, strict=True)]
    for row, best in (("start", QA_ANSWER[0]), ("end", QA_ANSWER[1])):
        d.text(x0, y + 15, row, "sm b", "start")
        for n, x in enumerate(panel.lefts):
            cls = "pred-on" if n == best else "pred" if context[n] else "off"
            d.rect(x, y, panel.w, 20, "box " + cls, 3)
        y += 24
    d.text(x0, y + 12, "start_logits, end_logits (B, T) →", "note", "start")
    ans_x = x0 + 178
    answer = " ".join(QA_TOKENS[QA_ANSWER[0] : QA_ANSWER[1] + 1])
    d.box(ans_x, y, x1 - ans_x, 20, "pred-on", f"span: “{answer}”", label_cls="b")
    d.text(x0, y + 34, "best start ≤ end, both in the context", "note", "start")
    bottoms.append(y + 38)
    for px in (left, right):
        d.rect(px, py, PANEL_W, max(bottoms) + 12 - py, "panel", 8, at=start)
    return d.svg()


DIAGRAMS: dict[str, Callable[[], str]] = {
    "input_representation.svg": input_representation,
    "encoder_block.svg": encoder_block,
    "pretraining_heads.svg": pretraining_heads,
    "finetuning_heads.svg": finetuning_heads,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a figure on disk differs from the drawing"
    )
    parser.add_argument("--out", type=Path, default=FIGURES_DIR, help="folder of the figures")
    args = parser.parse_args(argv)
    stale = []
    for name, draw in DIAGRAMS.items():
        path = args.out / name
        svg = draw()
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != svg:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(svg, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(
            f"out of date in {args.out}: {', '.join(stale)}; run python scripts/draw_diagrams.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
