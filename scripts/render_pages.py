"""Render pages of the built book to PNG with headless Chromium, to look at them as a reader would.

    make book && python scripts/render_pages.py                 # key pages, light mode -> _build/screenshots
    python scripts/render_pages.py --dark --pages notebooks/02_attention
    python scripts/render_pages.py --mathjax ~/mathjax/es5      # typeset formulas offline

The book serves its own MathJax (book/_ext/offline_mathjax.py), so formulas are typeset
offline; --mathjax is for a book built without it. Each page is captured from its top,
`--height` pixels tall. With --overflow, each page's code and output blocks wider than the
column (a horizontal scrollbar) are listed too.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY_PAGES = (
    "book/intro",
    "book/why_bert",
    "notebooks/01_tokenization",
    "notebooks/02_attention",
    "notebooks/04_encoder",
    "notebooks/05_real_weights",
    "book/misconceptions",
    "book/notation",
)
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(
        "No Chromium found: install it (Debian: `apt-get install chromium`; macOS: Google Chrome) "
        f"so that one of {', '.join(BROWSERS)} is on PATH."
    )


def prepared_copy(html_dir: Path, dark: bool, mathjax: Path | None) -> Path:
    """A copy of the built site with local MathJax and/or the dark theme forced, if asked."""
    copy = Path(tempfile.mkdtemp(prefix="bertcourse-pages-")) / "html"
    shutil.copytree(html_dir, copy)
    for page in copy.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        if mathjax is not None:
            text = text.replace(MATHJAX_CDN, (mathjax / "tex-mml-chtml.js").resolve().as_uri())
        if dark:  # the theme reads the mode from localStorage before it draws
            text = text.replace(
                "<head>",
                '<head><script>localStorage.setItem("mode","dark");'
                'localStorage.setItem("theme","dark");'
                'document.documentElement.dataset.mode="dark";'
                'document.documentElement.dataset.theme="dark";</script>',
                1,
            )
        page.write_text(text, encoding="utf-8")
    return copy


# Run in each page once it has loaded: the code and output blocks wider than the column (a
# horizontal scrollbar), written into the page for --dump-dom to read.
OVERFLOW_REPORT = """<script>window.addEventListener("load", () => setTimeout(() => {
  const wide = [...document.querySelectorAll(".bd-article pre")]
    .filter((pre) => pre.scrollWidth > pre.clientWidth + 1)
    .map((pre) => pre.textContent.split("\\n").reduce((a, b) => (b.length > a.length ? b : a), ""));
  const report = document.createElement("pre");
  report.id = "overflow-report";
  report.textContent = JSON.stringify(wide);
  document.body.appendChild(report);
}, 500));</script>"""


def overflowing_blocks(browser: str, page: Path, width: int) -> list[str]:
    """The longest line of each code or output block of `page` that does not fit its column."""
    copy = page.with_name(f".overflow-{page.name}")
    copy.write_text(
        page.read_text(encoding="utf-8").replace("</body>", OVERFLOW_REPORT + "</body>")
    )
    with tempfile.TemporaryDirectory(prefix="bertcourse-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--allow-file-access-from-files", "--virtual-time-budget=8000",
                   f"--user-data-dir={profile}", f"--window-size={width},1200", "--dump-dom",
                   copy.as_uri()]  # fmt: skip
        dom = subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    copy.unlink()
    found = re.search(r'<pre id="overflow-report">(.*?)</pre>', dom.stdout, re.S)
    if found is None:
        raise RuntimeError(f"{page.name}: the overflow report did not run")
    return json.loads(html.unescape(found.group(1)))


def render(browser: str, page: Path, output: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bertcourse-chromium-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--allow-file-access-from-files",
            "--virtual-time-budget=8000",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={output}",
            page.as_uri(),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="built book")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--pages", nargs="*", default=list(KEY_PAGES), help="e.g. book/intro")
    parser.add_argument("--dark", action="store_true", help="the dark theme")
    parser.add_argument("--mathjax", type=Path, help="a local MathJax es5 folder, for offline use")
    parser.add_argument("--width", type=int, default=1300)
    parser.add_argument("--height", type=int, default=2400)
    parser.add_argument(
        "--overflow", action="store_true",
        help="also list the code and output blocks wider than the column (exit 1 if any)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not (args.html / "index.html").is_file():
        raise SystemExit(f"No built book in {args.html}: run `make book` first.")
    if args.mathjax is not None and not (args.mathjax / "tex-mml-chtml.js").is_file():
        raise SystemExit(
            f"{args.mathjax} has no tex-mml-chtml.js (expected MathJax 3's es5 folder)."
        )
    browser = find_browser()
    site = prepared_copy(args.html, args.dark, args.mathjax)
    args.out.mkdir(parents=True, exist_ok=True)
    overflowing = 0
    for name in args.pages:
        page = site / f"{name}.html"
        if not page.is_file():
            print(f"skipped {name}: no {name}.html in the built book", file=sys.stderr)
            continue
        output = args.out / f"{name.replace('/', '_')}{'_dark' if args.dark else ''}.png"
        render(browser, page, output, args.width, args.height)
        print(f"{output}")
        if args.overflow:
            wide = overflowing_blocks(browser, page, args.width)
            overflowing += len(wide)
            for line in wide:
                print(f"  wider than the column ({len(line)} characters): {line.strip()[:70]}")
    shutil.rmtree(site.parent, ignore_errors=True)
    return 1 if overflowing else 0


if __name__ == "__main__":
    sys.exit(main())
