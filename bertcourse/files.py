"""Writing files so that a crash never leaves half of one.

At the bottom of the package's dependencies (standard library only), so every
module that saves something (vocabularies, the corpus cache, checkpoints,
logs) uses the same atomic write.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "read_utf8",
    "atomic_save_file",
    "atomic_directory",
    "file_mode",
]


def read_utf8(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """A text file's contents; a file that is not UTF-8 is refused naming it, the line and the fix."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{path} is not UTF-8 text: byte {data[error.start]:#04x} on line {line} "
            f"({error.reason}). Save it as UTF-8 (most editors offer it under 'Save as', or "
            f"`iconv -f latin1 -t utf-8 {path.name}`), or remove that character."
        ) from None


def file_mode(directory: bool = False) -> int:
    """The mode open() (or mkdir) gives a new file (or folder): 0o666 (0o777) less the umask.

    A temporary file or folder is created private (0o600, 0o700) whatever the umask; a saved
    one must not stay so.
    """
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def atomic_save_file(write: Callable[[str], object], path: str | os.PathLike) -> None:
    """Call write(tmp_path), then rename onto `path`: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_directory(write: Callable[[Path], object], path: str | os.PathLike) -> Path:
    """Call write(tmp_dir), then put the finished folder in `path`'s place (replacing it).

    A crash while writing leaves the old folder (or none) and a hidden `.NAME.*.tmp` folder,
    never a folder with some new files and some old ones.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        write(tmp)
        os.chmod(tmp, file_mode(directory=True))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
