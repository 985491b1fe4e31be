"""Strip outputs, execution counts and personal metadata from the course notebooks.

    python scripts/clean_notebooks.py            # clean notebooks/*.ipynb in place
    python scripts/clean_notebooks.py --check    # exit 1 and list the notebooks that need it

Notebooks are stored without outputs: the executed versions live in the built book.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}
# Cell metadata the book uses; everything else (collapsed, scrolled, execution timings) goes.
KEPT_CELL_METADATA = ("tags", "mystnb", "editable", "slideshow")


def clean(notebook: dict) -> dict:
    notebook["metadata"] = {"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO}
    for cell in notebook.get("cells", []):
        cell["metadata"] = {
            k: v for k, v in cell.get("metadata", {}).items() if k in KEPT_CELL_METADATA
        }
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return notebook


def dumps(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="only report, change nothing")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    paths = args.paths or sorted((root / "notebooks").glob("*.ipynb"))
    dirty = []
    for path in paths:
        original = path.read_text()
        cleaned = dumps(clean(json.loads(original)))
        if cleaned != original:
            dirty.append(path)
            if not args.check:
                path.write_text(cleaned)
    if args.check and dirty:
        print("Notebooks with outputs or extra metadata (run `python scripts/clean_notebooks.py`):")
        print("\n".join(f"  {p}" for p in dirty))
        return 1
    for path in dirty:
        print(f"cleaned {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
