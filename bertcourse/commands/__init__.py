"""Command line: `python -m bertcourse <command>`.

Commands sit on top of the library: they parse options, read and write files
and print, and the library never imports them.

- `pretrain`: BERT from scratch on a corpus, exported for transformers;
- `finetune`: text classification from a CSV/TSV file;
- `bench`: throughput of the course's model against transformers (`bertcourse.bench`, which
  also runs as `python -m bertcourse.bench`);
- `student`: the student edition of the notebooks.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

# name -> (module, what it does); every module has main(argv) -> exit code.
COMMANDS = {
    "pretrain": ("bertcourse.commands.pretrain", "BERT from scratch, exported for transformers"),
    "finetune": ("bertcourse.commands.finetune", "text classification from a CSV/TSV file"),
    "bench": ("bertcourse.bench", "throughput of the course's model against transformers"),
    "student": ("bertcourse.commands.student", "the student edition of the notebooks"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        known = ", ".join(COMMANDS)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"Unknown command {argv[0]!r}; commands: {known}.", file=sys.stderr)
            return 2
        lines = [f"  {name:<9} {what}" for name, (_, what) in COMMANDS.items()]
        print("usage: python -m bertcourse <command> [options]\ncommands:\n" + "\n".join(lines))
        return 0
    # Imported when named: each command needs other heavy libraries (transformers, matplotlib).
    command = importlib.import_module(COMMANDS[argv[0]][0])
    return command.main(argv[1:])
