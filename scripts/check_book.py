"""Check the built book as a reader would see it: every chapter page exists and shows its figures,
and no live result is at or below chance.

    python scripts/check_book.py [_build/html]

A chapter whose plots silently failed to render (a non-inline matplotlib backend,
say) still builds without warnings; this catches it. So is a live training run that
sits at chance: the chapters that train (LIVE_RUN_CHAPTERS) state each live score with
`bertcourse.metrics.live_result` ("accuracy: 85.3% (chance 20.0%)"); every such score
on any page must be above its chance or baseline, and each of those chapters must show
at least one. Exit 1 with the list of problems.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from bertcourse.metrics import LIVE_RESULT_PATTERN

ROOT = Path(__file__).resolve().parent.parent
# Chapter pages must show at least this many rendered figures (PNG outputs of the notebook).
MIN_FIGURES = 2
# A figure wider than the ~700 px column is shrunk to fit, and its text with it: at most
# bertcourse.viz.COLUMN_WIDTH inches at 100 dpi, plus what a tight bounding box adds.
MAX_FIGURE_PX = 800
ERROR_MARKERS = ("Traceback (most recent call last)",)
# The chapters whose live training runs state their results beside chance (or, for masked LM,
# beside the unigram baseline): each must show at least one.
LIVE_RUN_CHAPTERS = ("06", "07", "08", "09", "10", "11", "13", "14", "15", "16", "18")


def live_result_problems(page_name: str, html: str) -> list[str]:
    """Every live result on the page above its chance; a training chapter shows at least one."""
    results = re.findall(LIVE_RESULT_PATTERN, html)
    problems = [
        f"{page_name} shows a live result at or below {kind}: {value}% ({kind} {baseline}%)"
        for value, kind, baseline in results
        if float(value) <= float(baseline)
    ]
    if page_name.startswith(LIVE_RUN_CHAPTERS) and not results:
        problems.append(
            f"{page_name} trains live but states no live result beside its chance: print one "
            "with bertcourse.metrics.live_result"
        )
    return problems


def figure_width_problems(page_name: str, html_dir: Path, sources: set[str]) -> list[str]:
    """Figures wider than the column, which the browser shrinks until their labels are tiny."""
    from PIL import Image

    wide = []
    for source in sorted(sources):
        path = html_dir / source.removeprefix('src="../').removesuffix('"')
        with Image.open(path) as image:
            if image.width > MAX_FIGURE_PX:
                wide.append(f"{path.name} ({image.width} px)")
    if not wide:
        return []
    return [
        f"{page_name} has {len(wide)} figure(s) wider than the {MAX_FIGURE_PX} px column: "
        f"{', '.join(wide)}; size them with bertcourse.viz.column_figure or use_book_style()"
    ]


def offline_and_launch_problems(page_name: str, html_dir: Path, html: str) -> list[str]:
    """Math rendered by the book's own MathJax (offline too); Colab opens the student edition."""
    problems = []
    if "cdn.jsdelivr.net/npm/mathjax" in html or "_static/mathjax/tex-mml-chtml.js" not in html:
        problems.append(
            f"{page_name} does not load the book's own MathJax (_static/mathjax): offline, its "
            "math shows as raw LaTeX; is book/_ext/offline_mathjax.py in _config.yml?"
        )
    elif not (html_dir / "_static" / "mathjax" / "tex-mml-chtml.js").is_file():
        problems.append(f"{page_name} loads _static/mathjax/tex-mml-chtml.js, which is missing")
    colab = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', html)
    if colab and not any("/student/notebooks/" in link for link in colab):
        problems.append(
            f"{page_name}: the Colab button opens the solutions, not student/notebooks: is "
            "book/_ext/student_launch.py in _config.yml?"
        )
    return problems


def check(html_dir: Path) -> list[str]:
    problems = []
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if not notebooks:
        problems.append("no notebooks in notebooks/")
    for notebook in notebooks:
        page = html_dir / "notebooks" / f"{notebook.stem}.html"
        if not page.is_file():
            problems.append(
                f"{page} is missing: is {notebook.name} in _toc.yml, and was the book built?"
            )
            continue
        html = page.read_text()
        figures = set(re.findall(r'src="\.\./_images/[0-9a-f]+\.png"', html))
        if len(figures) < MIN_FIGURES:
            problems.append(
                f"{page.name} shows {len(figures)} figure(s), expected at least {MIN_FIGURES}: "
                "do the notebook's plots render inline (no MPLBACKEND=Agg in the environment)?"
            )
        problems.extend(figure_width_problems(page.name, html_dir, figures))
        problems.extend(offline_and_launch_problems(page.name, html_dir, html))
        problems.extend(live_result_problems(page.name, html))
        for marker in ERROR_MARKERS:
            if marker in html:
                problems.append(
                    f"{page.name} contains {marker!r}: a cell failed while the book was built"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    html_dir = Path(args[0]) if args else ROOT / "_build" / "html"
    problems = check(html_dir)
    for problem in problems:
        print(f"book check: {problem}", file=sys.stderr)
    if not problems:
        print(
            f"book check: {html_dir} has every chapter with its figures and live results above chance"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
