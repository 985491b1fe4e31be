"""Writing files so that a crash never leaves half of one.

At the bottom of the package's dependencies (standard library only), so every
module that saves something (vocabularies, the corpus cache, checkpoints,
logs) uses the same atomic write.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "atomic_save_file",
]


def atomic_save_file(write: Callable[[str], object], path: str | os.PathLike) -> None:
    """Call write(tmp_path), then rename onto `path`: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
