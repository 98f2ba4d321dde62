"""Write outputs atomically: a temporary path in the destination folder, renamed into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from facecvt.core.errors import FacecvtError


def check_destination(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse to overwrite an existing output unless forced; make sure the folder exists."""
    path = Path(path)
    if path.exists() and not force:
        raise FacecvtError(f"{path} already exists; pass --force to overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise FacecvtError(f"output folder {parent} does not exist; create it first")
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the suffix (converters look at it, e.g. `.mlpackage`).
    On any exception, KeyboardInterrupt included, the temporary file or folder is removed.
    """
    final = check_destination(path, force)
    parent = final.parent if str(final.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the writer creates it (a file or a folder)
    try:
        yield tmp
        if not tmp.exists():
            raise FacecvtError(f"nothing was written for {final}")
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_outputs(paths, force: bool = False):
    """Like atomic_output for several files that must appear together (e.g. OUT.pb + OUT.pbtxt)."""
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_output(p, force)) for p in paths]
        yield tmps
