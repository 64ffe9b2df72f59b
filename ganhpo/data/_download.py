"""Fetching dataset files from mirrors, verified by checksum and written atomically."""

from __future__ import annotations

import gzip
import hashlib
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from ganhpo._files import atomic_write_bytes

__all__ = ["DOWNLOAD_TIMEOUT_S", "DownloadFailed", "RemoteFile", "fetch"]

# Seconds one socket operation (connect, each read) may block: short, so that an offline
# machine fails within seconds instead of hanging; per read, so a slow link still finishes.
DOWNLOAD_TIMEOUT_S = 5.0


class DownloadFailed(Exception):
    """No mirror delivered a file with the expected checksum (the message says why)."""


@dataclass(frozen=True)
class RemoteFile:
    """A published ``.gz`` file and what its content must hash to.

    ``sha256`` is of the *decompressed* content (stable when a mirror re-compresses);
    ``gz_md5`` is of the ``.gz`` file as published, where only that is known.
    At least one of them is set.
    """

    filename: str
    sha256: str | None = None
    gz_md5: str | None = None

    def __post_init__(self) -> None:
        assert self.sha256 or self.gz_md5, f"{self.filename}: no checksum to verify against"

    def check(self, payload: bytes) -> str | None:
        """None when ``payload`` (the downloaded .gz bytes) is this file, else what is wrong."""
        if self.gz_md5 is not None:
            got = hashlib.md5(payload, usedforsecurity=False).hexdigest()
            if got != self.gz_md5:
                return f"md5 {got} instead of {self.gz_md5}"
        if self.sha256 is not None:
            try:
                content = gzip.decompress(payload)
            except (OSError, EOFError, zlib.error) as e:
                return f"not a valid gzip file ({e})"
            got = hashlib.sha256(content).hexdigest()
            if got != self.sha256:
                return f"decompressed sha256 {got} instead of {self.sha256}"
        return None


def fetch(
    remote: RemoteFile,
    mirrors: tuple[str, ...],
    directory: Path,
    *,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download ``remote`` from the first mirror that serves it intact into ``directory``.

    Returns the path written; raises :class:`DownloadFailed` naming every mirror's failure.
    """
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + remote.filename
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            failures.append(f"{url}: {reason}")
            continue
        problem = remote.check(payload)
        if problem is not None:
            failures.append(f"{url}: {problem}")
            continue
        try:
            directory.mkdir(parents=True, exist_ok=True)
            target = directory / remote.filename
            atomic_write_bytes(target, payload)
        except OSError as e:
            raise DownloadFailed(f"cannot write into {directory}: {e}") from e
        return target
    raise DownloadFailed("; ".join(failures))
