"""Output files (the ground floor: any layer writes through here): checked before any work, written whole or not at all, errors in one line.

Why: an output path that can only fail at the end (a missing folder, a directory, an existing file
of another kind, an immutable file) used to fail after hours of training, with a traceback and
nothing saved. :func:`check_output_file` runs before the first step; :func:`atomic_write` writes a
temporary file in the same folder and renames it over the target, so a reader never sees a half
file and an earlier file is never merged into (``--save_features`` once appended to an old file);
any ``OSError`` (ENOSPC, EPERM from ``chattr +i``, EROFS, ...) becomes one line saying what was kept.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from bpm.errors import BpmError

#: The first 8 bytes of every HDF5 file.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_output_file(path: str | Path, flag: str, hdf5: bool = False) -> Path:
    """Refuse, in one line naming ``flag``, an output file that could not be written at the end.

    The folder must exist and accept a new file; ``path`` must not be a folder; with ``hdf5`` an
    existing file must be HDF5 (replacing an unrelated file of the same name is refused).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise BpmError(f"{flag} {path}: is a folder; expected a file name")
    if not folder.is_dir():
        raise BpmError(f"{flag} {path}: the folder {folder} does not exist; create it first")
    if hdf5 and path.exists():
        if not path.is_file() or not _has_hdf5_signature(path):
            raise BpmError(f"{flag} {path}: exists and is not an HDF5 file; refusing to replace it "
                           "(remove it or choose another name)")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise BpmError(f"{flag} {path}: cannot write in {folder} ({exc.strerror or exc})") from exc
    return path


def _has_hdf5_signature(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


def atomic_write(path: str | Path, write: Callable[[Path], None], what: str, kept: str | None = None) -> Path:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then rename it over ``path``.

    ``what`` names the file in errors ("features file"); ``kept`` says what survives a failure
    (default: the previous file, or nothing).
    """
    path = Path(path)
    existed = path.exists()
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        left = kept or ("the previous file is unchanged" if existed else "nothing was written")
        raise BpmError(f"{path}: could not write {what} ({exc.strerror or exc}); {left}") from exc
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str, what: str, kept: str | None = None) -> Path:
    """:func:`atomic_write` for a text file (``config.json``, ``results.json``)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text), what, kept)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
