"""Atomic file output: nothing half-written is ever left where a reader expects a result.

Every file or directory the package writes for a user goes through one of these four helpers:
``atomic_write`` (any writer callable), ``atomic_write_text`` / ``atomic_write_json`` (the common
cases) and ``atomic_dir`` (a directory built in a temporary sibling, then renamed into place).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the suffix: some writers (matplotlib, numpy, sumo-gui) choose the format from it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from other users of the run dir
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any, *, indent: int | None = 2, sort_keys: bool = True,
                      default: Callable[[Any], Any] | None = str) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=default) + "\n")


@contextmanager
def atomic_dir(final: Path, *, exists: Literal["keep", "replace", "error"] = "keep") -> Iterator[Path]:
    """Yield a temporary sibling directory of ``final``; on success rename it to ``final``.

    On an exception the temporary directory is removed and ``final`` is untouched. If ``final``
    appeared meanwhile: ``keep`` keeps it (a concurrent build of the same cache key finished
    first), ``replace`` swaps it for the new one, ``error`` raises ``FileExistsError``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide results from other users
        if final.exists():
            if exists == "keep":
                shutil.rmtree(tmp, ignore_errors=True)
                return
            if exists == "error":
                raise FileExistsError(final)
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
