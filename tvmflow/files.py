"""Writing files without losing any: atomic writes, and no overwriting what tvmflow did not write.

Every file tvmflow writes goes through :func:`write_atomic` or :func:`atomic_path`: the data
goes to a temp file in the destination's directory, which is renamed into place only once it
is complete, so an interrupted write leaves the old file (or nothing), never half a file.
Neither writes into the data shipped with tvmflow (:func:`tvmflow.workspace.check_writable`).

:func:`check_overwrite` refuses to replace an existing file that tvmflow did not write unless
the user said ``--force``; :func:`move_aside` keeps an old file under a new name instead of
deleting it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tvmflow.errors import TvmflowError
from tvmflow.workspace import check_writable


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def umask_mode(mode: int) -> int:
    """``mode`` less the process umask (what ``open()`` would give; mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


@contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """A temp path next to ``path`` for a writer (a linker, ``np.save``...); renamed onto
    ``path`` when the block ends normally, removed when it raises (Ctrl-C included)."""
    path = Path(path)
    check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, umask_mode(mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_path(path, mode) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def check_overwrite(path: str | Path, *, ours: bool, force: bool, what: str = "file",
                    why: str | None = "tvmflow did not write it") -> None:
    """Refuse to replace the existing ``path`` unless tvmflow wrote it (``ours``) or the user
    said ``--force``; ``why`` ends the message."""
    path = Path(path)
    if force or ours or not (path.exists() or path.is_symlink()):
        return
    raise TvmflowError(f"{what} {path} already exists" + (f" and {why}" if why else "")
                       + "; not overwriting it",
                       hint="choose another output path, or add --force to replace it")


def move_aside(path: str | Path) -> Path:
    """Rename ``path`` to ``<name>.old-<UTC time>`` (``-2``, ``-3``... when taken); returns the
    new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest, n = path.with_name(f"{path.name}.old-{stamp}"), 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.old-{stamp}-{n}")
    os.replace(path, dest)
    return dest
