"""The artifact store every worker of a study shares: checkpoints, generators, sample grids.

A directory (a shared mount across machines) or ``s3://bucket/prefix`` through Optuna's
Boto3 store. Checkpoints are written under ids ganhpo chooses and tracked in the trial's user
attributes (``checkpoint``), so an old one can be removed when a new one is written; final
generators and sample grids are uploaded with :func:`optuna.artifacts.upload_artifact`, so
optuna-dashboard lists them with their trial.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore

from ganhpo.errors import ConfigError

__all__ = [
    "ARTIFACTS_ENV",
    "DEFAULT_ARTIFACTS",
    "ArtifactStore",
    "list_artifacts",
    "mimetype_of",
    "new_artifact_id",
    "open_artifact_store",
    "read_artifact",
    "remove_artifact",
    "resolve_artifacts",
    "write_artifact",
]

logger = logging.getLogger(__name__)

ARTIFACTS_ENV = "GANHPO_ARTIFACTS"
DEFAULT_ARTIFACTS = "ganhpo-artifacts"  # beside the SQLite default, in the working directory

ArtifactStore = Any  # optuna.artifacts' stores share a protocol: open_reader, write, remove


def resolve_artifacts(location: str | Path | None) -> str:
    """``--artifacts``, else ``$GANHPO_ARTIFACTS``, else ./ganhpo-artifacts; dirs made absolute."""
    value = str(location) if location else os.environ.get(ARTIFACTS_ENV) or DEFAULT_ARTIFACTS
    if value.startswith("s3://"):
        return value
    if "://" in value:
        raise ConfigError(
            f"artifact store {value!r} is not supported; use a directory or s3://bucket/prefix"
        )
    return str(Path(value).expanduser().resolve())


def open_artifact_store(location: str) -> ArtifactStore:
    """The store at a location from :func:`resolve_artifacts`."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(
                f"artifact store {location!r} names no bucket; use s3://bucket/prefix"
            )
        try:
            from optuna.artifacts import Boto3ArtifactStore
        except ImportError as e:  # pragma: no cover - boto3 missing
            raise ConfigError("an s3:// artifact store needs boto3: pip install boto3") from e

        class _S3Store(Boto3ArtifactStore):  # type: ignore[misc,valid-type]
            def list_ids(self, prefix: str) -> list[str]:
                pages = self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix
                )
                return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

        store = _S3Store(bucket)
        return _PrefixedStore(store, prefix.strip("/")) if prefix.strip("/") else store
    path = Path(location)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"artifact directory {path} cannot be created ({e}); pass --artifacts DIR"
        ) from e
    return _DirectoryStore(path)


class _DirectoryStore(FileSystemArtifactStore):
    """Optuna's directory store, which can also list its ids."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.path = path

    def list_ids(self, prefix: str) -> list[str]:
        return [p.name for p in self.path.glob(f"{prefix}*") if p.is_file()]


class _PrefixedStore:
    """A store whose artifact ids are placed under a key prefix (for S3 buckets)."""

    def __init__(self, store: ArtifactStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._store.open_reader(f"{self._prefix}/{artifact_id}")  # type: ignore[no-any-return]

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._store.write(f"{self._prefix}/{artifact_id}", content_body)

    def remove(self, artifact_id: str) -> None:
        self._store.remove(f"{self._prefix}/{artifact_id}")

    def list_ids(self, prefix: str) -> list[str]:
        keys = self._store.list_ids(f"{self._prefix}/{prefix}")
        return [k.removeprefix(f"{self._prefix}/") for k in keys]


# The MIME type of each kind of file attached to a trial, given explicitly: guessed from the
# name, a PyTorch ".pt" file is "application/vnd.snesdev-page-table" (the system's MIME table),
# which a browser cannot handle; a pickled state dict has no type of its own, so it is bytes.
MIMETYPES = {
    ".pt": "application/octet-stream",
    ".png": "image/png",
    ".json": "application/json",
    ".toml": "application/toml",
}


def mimetype_of(filename: str) -> str:
    """The MIME type to upload ``filename`` with (``application/octet-stream`` when unknown)."""
    return MIMETYPES.get(Path(filename).suffix.lower(), "application/octet-stream")


def new_artifact_id(kind: str) -> str:
    """A fresh artifact id, ``kind-<uuid>``."""
    return f"{kind}-{uuid.uuid4()}"


def write_artifact(
    store: ArtifactStore, data: bytes, *, kind: str, artifact_id: str | None = None
) -> str:
    """Store ``data`` under ``artifact_id`` (default: a new id of ``kind``) and return the id."""
    artifact_id = artifact_id or new_artifact_id(kind)
    store.write(artifact_id, io.BytesIO(data))
    return artifact_id


def read_artifact(store: ArtifactStore, artifact_id: str) -> bytes:
    """The bytes of an artifact."""
    with store.open_reader(artifact_id) as f:
        return f.read()  # type: ignore[no-any-return]


def remove_artifact(store: ArtifactStore, artifact_id: str) -> None:
    """Remove an artifact; one already gone is fine (another worker may have removed it)."""
    with contextlib.suppress(optuna.artifacts.exceptions.ArtifactNotFound, FileNotFoundError):
        store.remove(artifact_id)


def list_artifacts(store: ArtifactStore, prefix: str) -> list[str]:
    """The ids of the artifacts in ``store`` that start with ``prefix`` (one listing)."""
    return list(store.list_ids(prefix))
