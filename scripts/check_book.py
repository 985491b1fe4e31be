"""Check the built book as a reader would see it: every chapter page exists and shows its figures.

    python scripts/check_book.py [_build/html]

A chapter whose plots silently failed to render (a non-inline matplotlib backend,
say) still builds without warnings; this catches it. Exit 1 with the list of problems.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Chapter pages must show at least this many rendered figures (PNG outputs of the notebook).
MIN_FIGURES = 2
ERROR_MARKERS = ("Traceback (most recent call last)",)


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
        print(f"book check: {html_dir} has every chapter with its figures")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
