"""Where ganhpo caches things, and atomic writes so concurrent workers never see half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import platformdirs

__all__ = [
    "CACHE_DIR_ENV",
    "atomic_write",
    "atomic_write_bytes",
    "resolve_cache_dir",
    "safe_name",
]

# Environment variable naming the cache directory when no cache_dir is passed.
CACHE_DIR_ENV = "GANHPO_CACHE_DIR"


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The root of ganhpo's caches (statistics in ``stats/``, classifiers in ``classifiers/``).

    ``cache_dir`` when given, else ``$GANHPO_CACHE_DIR`` when set and non-empty, else the user
    cache directory of ganhpo (on Linux ``~/.cache/ganhpo``). Not created here.
    """
    if cache_dir is None or str(cache_dir) == "":
        cache_dir = os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("ganhpo")
    return Path(cache_dir).expanduser()


@contextmanager
def atomic_write(path: Path, *, replace: bool = True) -> Iterator[IO[bytes]]:
    """A binary file object whose contents appear at ``path`` all at once when the block ends.

    Written to a temporary file in the same directory (created if missing), flushed to disk,
    then renamed into place with ``os.replace``: readers see the old file or the new one, never
    half of one. With ``replace=False`` an existing ``path`` is kept and the new contents are
    dropped (the first writer wins). On an exception nothing is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _link_if_absent(Path(tmp), path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(data)


def _link_if_absent(tmp: Path, path: Path) -> None:
    """Give ``tmp``'s contents the name ``path`` unless ``path`` exists, atomically."""
    try:
        os.link(tmp, path)  # unlike os.replace, fails when path exists
    except FileExistsError:
        pass
    except OSError:
        # A filesystem without hard links: a racy existence check, then the atomic rename.
        if not path.exists():
            os.replace(tmp, path)


def safe_name(name: str) -> str:
    """``name`` with characters that are awkward in file names replaced by '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
