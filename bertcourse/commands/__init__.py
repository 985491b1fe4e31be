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

from .options import debug_requested, report_errors

__all__ = ["COMMANDS", "main"]

# name -> (module, what it does); every module has main(argv) -> exit code.
COMMANDS = {
    "pretrain": ("bertcourse.commands.pretrain", "BERT from scratch, exported for transformers"),
    "finetune": ("bertcourse.commands.finetune", "text classification from a CSV/TSV file"),
    "bench": ("bertcourse.bench", "throughput of the course's model against transformers"),
    "student": ("bertcourse.commands.student", "the student edition of the notebooks"),
}


def user_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(a reader's mistakes, a run that diverged): what the commands report on one line.

    ValueError covers the package's ConfigError and CheckpointMismatchError; OSError a file that
    is missing, already there, unreadable or not a directory (and CorpusUnavailableError);
    UnicodeDecodeError a file that is not UTF-8 text.
    """
    from safetensors import SafetensorError  # deferred: `bench` and `--help` need no torch

    from ..training import TrainingDivergedError  # deferred: as above

    return (ValueError, OSError, UnicodeDecodeError, SafetensorError), (TrainingDivergedError,)


def main(argv: list[str] | None = None) -> int:
    """Run a command. A mistake in the options or the input files ends it with one line,
    `error: ...`, and status 2 (argparse's own usage errors too); --debug anywhere among the
    arguments, or BERTCOURSE_DEBUG=1, shows the traceback instead."""
    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv))
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
    errors, diverged = user_errors()
    return report_errors(lambda: command.main(argv[1:]), debug, errors, diverged)
