"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST (raw or gzip)."""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ganhpo._files import atomic_write_bytes
from ganhpo.errors import DataError

__all__ = ["decode_idx", "encode_idx", "read_idx", "read_idx_shape", "write_idx"]

# The third header byte names the element type; MNIST-style datasets only use unsigned bytes.
_UBYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """The uint8 array stored in an IDX file (``.gz`` files are decompressed)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"cannot read {path} ({e}); the file is corrupt or truncated: "
            "delete it and download it again"
        ) from e
    return decode_idx(data, source=str(path))


def read_idx_shape(path: str | Path) -> tuple[int, ...]:
    """The shape of the array in an IDX file, from its header alone (the data is not read)."""
    path = Path(path)
    try:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as f:
            head = f.read(4)
            ndim = head[3] if len(head) == 4 else 0
            dims = f.read(4 * ndim)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path} ({e}); the file is corrupt or truncated") from e
    if head[:2] != b"\0\0" or head[2:3] != bytes([_UBYTE]) or ndim == 0 or len(dims) < 4 * ndim:
        raise DataError(f"{path} has no unsigned-byte IDX header; delete it and download it again")
    return tuple(struct.unpack(f">{ndim}I", dims))


def decode_idx(data: bytes, *, source: str = "IDX data") -> np.ndarray:
    """The uint8 array in the bytes of an (uncompressed) IDX file; ``source`` names it in errors."""
    redo = "delete it and download it again"
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DataError(f"{source} is not an IDX file (bad magic number); {redo}")
    if data[2] != _UBYTE:
        raise DataError(
            f"{source} stores elements of type code 0x{data[2]:02x}; "
            f"only unsigned-byte IDX files (0x{_UBYTE:02x}) are supported"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{source} has a broken IDX header; {redo}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{source} {problem}: {len(data)} bytes where its header {dims} implies "
            f"{expected}; {redo}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def encode_idx(array: np.ndarray) -> bytes:
    """The bytes of an uncompressed IDX file holding a uint8 array."""
    if array.dtype != np.uint8 or array.ndim == 0:
        raise ValueError(f"IDX files here hold uint8 arrays, got {array.dtype} {array.shape}")
    header = bytes([0, 0, _UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    The gzip stream stores no file name and mtime 0, so equal arrays give byte-identical files.
    """
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as f:
            f.write(data)
        data = buffer.getvalue()
    atomic_write_bytes(path, data)
