"""The artifact store every worker of a study shares: checkpoints, generators, sample grids.

A directory (a shared mount across machines) or ``s3://bucket/prefix`` through Optuna's
Boto3 store. Checkpoints are written under ids ganhpo chooses and tracked in the trial's user
attributes (``checkpoint``), so an old one can be removed when a new one is written; final
generators and sample grids are recorded in their trial as Optuna's ``upload_artifact`` records
them, so optuna-dashboard lists them with their trial.

A store is made once, when its study is created (``ganhpo study create``), which writes a
*marker* into it and records the marker's id in the study. Everywhere else (a worker, on any
machine) a store is only opened: a directory that is not there is refused rather than created
(it would be an empty folder on that machine's own disk, and a trial handed over to another
machine could not find its checkpoints), and so is a store without the study's marker (another
study's, or a different folder mounted at the study's path).

Every operation of an S3 store that fails for the store's reasons (its endpoint unreachable, a
bucket missing, credentials refused) raises :class:`StoreUnavailable`, an :class:`OSError`: as
for a directory on a broken mount, the environment is at fault, not the trial. A worker waits
for a store that went away (:class:`PatientStore`) before it gives its trial back.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from ganhpo.errors import ConfigError

__all__ = [
    "ARTIFACTS_ENV",
    "DEFAULT_ARTIFACTS",
    "STORE_MARKER_ATTR",
    "ArtifactStore",
    "PatientStore",
    "StoreUnavailable",
    "check_store_marker",
    "dashboard_artifact_id",
    "list_artifacts",
    "mark_store",
    "mimetype_of",
    "new_artifact_id",
    "open_artifact_store",
    "open_study_store",
    "read_artifact",
    "remove_artifact",
    "resolve_artifacts",
    "write_artifact",
]

logger = logging.getLogger(__name__)

ARTIFACTS_ENV = "GANHPO_ARTIFACTS"
DEFAULT_ARTIFACTS = "ganhpo-artifacts"  # beside the SQLite default, in the working directory

# The study user attribute holding the id of its store's marker (see mark_store).
STORE_MARKER_ATTR = "ganhpo:store_marker"
STORE_MARKER_KIND = "store-marker"

# An S3 client gives up on an unreachable endpoint within about a minute (3 tries of at most
# 10 s to connect), so a worker on a cut network hands its trial back instead of hanging; the
# read timeout leaves a slow upload of a large checkpoint its time.
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 120
S3_MAX_ATTEMPTS = 3

ArtifactStore = Any  # optuna.artifacts' stores share a protocol: open_reader, write, remove


class StoreUnavailable(OSError):
    """An artifact store operation failed for the store's reasons (an S3 endpoint that cannot
    be reached, a missing bucket, refused credentials). An :class:`OSError`, as a broken
    mount's errors are, so that a worker hands its trial back instead of failing it."""


class PatientStore:
    """A store whose operations wait out an outage: one that raises :class:`StoreUnavailable`
    is tried again, with pauses doubling up to 30 s, for up to ``patience`` seconds from its
    first failure (or until ``stopping()`` says the worker was asked to stop), then raises.
    Every operation of a worker's store is safe to repeat (ids are chosen before the write).
    So a trial waits for a store down for a minute, its heartbeats going on, instead of being
    handed back, and its worker does not stop."""

    def __init__(
        self,
        store: ArtifactStore,
        patience: float,
        stopping: Callable[[], bool] = lambda: False,
        location: str = "",
    ) -> None:
        self.store = store
        self.patience = patience
        self._stopping = stopping
        self._location = location

    def _patiently(self, what: str, op: Callable[[], Any]) -> Any:
        since: float | None = None
        pause = 1.0
        while True:
            try:
                result = op()
            except StoreUnavailable as e:
                now = time.monotonic()
                if since is None:
                    since = now
                    logger.warning(
                        "the artifact store %s is unavailable (%s); retrying for up to %.0f s",
                        self._location,
                        e,
                        self.patience,
                    )
                if now - since + pause > self.patience or self._stopping():
                    raise
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, 30.0)
                continue
            if since is not None:
                logger.warning(
                    "the artifact store is back after %.0f s (%s)", time.monotonic() - since, what
                )
            return result

    def open_reader(self, artifact_id: str) -> BinaryIO:
        def read() -> BinaryIO:  # whole, so that a read that fails midway is tried again
            with self.store.open_reader(artifact_id) as f:
                return io.BytesIO(f.read())

        return self._patiently(f"reading {artifact_id}", read)  # type: ignore[no-any-return]

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        data = content_body.read()
        self._patiently(
            f"writing {artifact_id}", lambda: self.store.write(artifact_id, io.BytesIO(data))
        )

    def remove(self, artifact_id: str) -> None:
        self._patiently(f"removing {artifact_id}", lambda: self.store.remove(artifact_id))

    def list_ids(self, prefix: str) -> list[str]:
        return self._patiently(f"listing {prefix}*", lambda: self.store.list_ids(prefix))  # type: ignore[no-any-return]


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


def open_artifact_store(location: str, *, create: bool = False) -> ArtifactStore:
    """The store at a location from :func:`resolve_artifacts`.

    A directory that does not exist is created only with ``create`` (when a study is made);
    otherwise it is refused with a :class:`~ganhpo.errors.ConfigError` saying what to mount.
    """
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(
                f"artifact store {location!r} names no bucket; use s3://bucket/prefix"
            )
        store = _S3Store(bucket)
        return _PrefixedStore(store, prefix.strip("/")) if prefix.strip("/") else store
    path = Path(location)
    if not path.is_dir():
        if not create:
            raise ConfigError(
                f"artifact store {path} does not exist on this machine; mount the study's "
                f"shared folder at {path} (or pass --artifacts with where it is mounted here), "
                "or give the study a store every machine reaches ('ganhpo study set-store NAME "
                "--artifacts s3://BUCKET/PREFIX')"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"artifact directory {path} cannot be created ({e}); pass --artifacts DIR"
            ) from e
    return _DirectoryStore(path)


def mark_store(store: ArtifactStore, *, study: str, location: str) -> str:
    """Write a new marker of ``study`` into its store; returns its id, which the study records
    under :data:`STORE_MARKER_ATTR`."""
    from ganhpo import __version__

    body = {"study": study, "location": location, "ganhpo": __version__}
    return write_artifact(store, json.dumps(body).encode(), kind=STORE_MARKER_KIND)


def check_store_marker(store: ArtifactStore, location: str, marker_id: str, *, study: str) -> None:
    """Raise a :class:`~ganhpo.errors.ConfigError` unless ``store`` holds ``study``'s marker:
    it is then not the store the study was created with."""
    try:
        read_artifact(store, marker_id)
    except (ArtifactNotFound, FileNotFoundError):
        raise ConfigError(
            f"the artifact store {location} is not the one study {study!r} was created with "
            f"(its marker {marker_id} is not there); mount the study's store there or pass "
            "--artifacts with where it is reachable from this machine; if the study's store was "
            f"lost or moved, 'ganhpo study set-store {study} --artifacts DIR|s3://...' makes "
            "another one its store"
        ) from None


def open_study_store(location: str, marker_id: str | None, *, study: str) -> ArtifactStore:
    """A study's store for a worker: it must exist (it is never created here) and hold the
    study's marker (``marker_id``; None for a study made before markers, or through the Python
    API without one: then only its existence is checked)."""
    store = open_artifact_store(location)
    if marker_id is not None:
        check_store_marker(store, location, marker_id, study=study)
    return store


class _DirectoryStore(FileSystemArtifactStore):
    """Optuna's directory store, which can also list its ids."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.path = path

    def list_ids(self, prefix: str) -> list[str]:
        return [p.name for p in self.path.glob(f"{prefix}*") if p.is_file()]


def _boto3_client() -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        raise ConfigError("an s3:// artifact store needs boto3: pip install 'ganhpo[s3]'") from e
    # Endpoint (AWS_ENDPOINT_URL, e.g. a MinIO server), region and credentials come from the
    # environment and ~/.aws as for any boto3 client.
    config = Config(
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
    )
    return boto3.client("s3", config=config)


def _unavailable(e: Exception, what: str, bucket: str) -> StoreUnavailable:
    return StoreUnavailable(f"S3 store s3://{bucket}: {what} failed: {type(e).__name__}: {e}")


class _S3Store:
    """Optuna's Boto3 store (so optuna-dashboard can read it), whose every operation raises
    :class:`StoreUnavailable` (chained from botocore's error) when the store fails, and
    :class:`~optuna.artifacts.exceptions.ArtifactNotFound` only for a missing object."""

    def __init__(self, bucket: str) -> None:
        from optuna.artifacts import Boto3ArtifactStore

        self.bucket = bucket
        self._store = Boto3ArtifactStore(bucket, client=_boto3_client())
        self.client = self._store.client

    def _errors(self) -> tuple[type[Exception], ...]:
        import boto3.exceptions
        import botocore.exceptions

        return (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                boto3.exceptions.Boto3Error)  # fmt: skip

    def open_reader(self, artifact_id: str) -> BinaryIO:
        try:
            # Read whole here: a connection lost while reading the body fails here too.
            with contextlib.closing(self._store.open_reader(artifact_id)) as body:
                return io.BytesIO(body.read())
        except ArtifactNotFound as e:
            cause = e.__cause__
            code = getattr(cause, "response", {}).get("Error", {}).get("Code")
            if code == "NoSuchBucket":  # Optuna takes every 404 for a missing object
                raise _unavailable(cause, f"reading {artifact_id}", self.bucket) from cause  # type: ignore[arg-type]
            raise
        except self._errors() as e:
            raise _unavailable(e, f"reading {artifact_id}", self.bucket) from e

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        try:
            self._store.write(artifact_id, content_body)
        except self._errors() as e:
            raise _unavailable(e, f"writing {artifact_id}", self.bucket) from e

    def remove(self, artifact_id: str) -> None:
        try:
            self._store.remove(artifact_id)
        except self._errors() as e:
            raise _unavailable(e, f"removing {artifact_id}", self.bucket) from e

    def list_ids(self, prefix: str) -> list[str]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            return [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        except self._errors() as e:
            raise _unavailable(e, f"listing {prefix}*", self.bucket) from e


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


def dashboard_artifact_id() -> str:
    """A fresh id for an artifact the study records (a trial's or the study's own): a bare
    UUID, as Optuna's own; optuna-dashboard serves ids of hex digits and dashes only."""
    return str(uuid.uuid4())


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
