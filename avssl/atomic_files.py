"""Writing files so that a crash or ``kill -9`` at any moment leaves the previous version intact.

The new content goes to a hidden partial file next to the target (same directory, so the same
filesystem), is flushed to disk, gets the user's normal file mode and then replaces the target in
one ``os.replace``. A process killed mid-write cannot clean up after itself; its partial file is
removed by `remove_partial_files` when the next run starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_MARK = ".partial-"


def _default_file_mode() -> int:
    """What ``open(path, "w")`` would give: 0o666 minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(target: str | Path) -> Iterator[Path]:
    """Yields a path to write the new content to; on a clean exit it atomically becomes `target`.

    On an exception (KeyboardInterrupt included) the partial file is removed and `target` is left
    as it was.

    Examples:
        >>> with atomic_write("out/last.ckpt") as partial:
        ...     torch.save(state, partial)
    """
    target = Path(target)
    partial = target.parent / f".{target.name}{PARTIAL_MARK}{os.getpid()}"
    try:
        yield partial
        _fsync(partial)
        os.chmod(partial, _default_file_mode())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync(target.parent)  # the rename itself survives a power loss


def remove_partial_files(directory: str | Path) -> list[Path]:
    """Deletes what killed writers left in `directory`; returns the deleted paths."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    leftovers = [p for p in directory.glob(f".*{PARTIAL_MARK}*") if p.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers
