"""Command line: `python -m bertcourse <command>`.

Commands: `bench` (throughput against transformers), `pretrain` (BERT from
scratch on a corpus, exported for transformers), `student` (the student
edition of the notebooks), `finetune` (text classification from a CSV/TSV file).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "bench": "bertcourse.bench",
        "finetune": "bertcourse.finetune",
        "pretrain": "bertcourse.train",
        "student": "bertcourse.student",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        known = ", ".join(commands)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"Unknown command {argv[0]!r}; commands: {known}.", file=sys.stderr)
            return 2
        print(f"usage: python -m bertcourse <command> [options]\ncommands: {known}")
        return 0
    import importlib

    return importlib.import_module(commands[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
