"""Reading a product's metadata file out of the archive (I/O edge).

Folder products: one GET of the metadata object. Zipped products (`.SAFE.zip`, `.zip`): the zip's central
directory and the one member are read with HTTP range requests of 64 KiB (two to four, whatever the size of the
zip), so a 5 GB SLC costs a few hundred KB. Uncompressed tars (Landsat): member headers are read one range request at a
time until the MTL is found. Compressed tars and netCDF files are not read (their metadata needs the whole file
or an HDF5 reader): the item then has no geometry and says why.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from archive.errors import archive_error
from archive.metadata import MAX_METADATA_BYTES, Metadata, MetadataError, pick_metadata, read_metadata

BLOCK = 64 * 1024  # range-request granularity: a central directory or a manifest.safe fits in one or two
MAX_TAR_MEMBERS = 400


@dataclass(frozen=True, slots=True)
class ProductFile:
    """One object of a product: its key, size, and its path inside the product ('' for a single-object one)."""

    key: str
    size: int
    path: str


@dataclass(frozen=True, slots=True)
class MetadataResult:
    metadata: Metadata | None
    path: str | None  # the metadata file read, relative to the product
    error: str | None  # reason code when there is no metadata


def fetch_metadata(client: Any, bucket: str, files: Sequence[ProductFile], mission: str) -> MetadataResult:
    """Find and read the product's metadata file; never raises for bad data (the reason comes back)."""
    if len(files) == 1 and not files[0].path:
        return _guarded(lambda: _from_single_object(client, bucket, files[0], mission), None)
    chosen = pick_metadata((f.path for f in files), mission)
    if chosen is None:
        return MetadataResult(None, None, "no_metadata_file")
    path, reader = chosen
    file = next(f for f in files if f.path == path)
    if file.size > MAX_METADATA_BYTES:
        return MetadataResult(None, path, "metadata_too_large")

    def read() -> MetadataResult:
        data = _get(client, bucket, file.key, None) if file.size else b""
        return MetadataResult(read_metadata(data, reader, name=path), path, None)

    return _guarded(read, path)


def _guarded(read: Callable[[], MetadataResult], path: str | None) -> MetadataResult:
    try:
        return read()
    except MetadataError as exc:
        return MetadataResult(None, path, exc.reason)
    except _ObjectGone:
        return MetadataResult(None, path, "object_gone")


class _ObjectGone(Exception):
    """The object was deleted between listing and reading (the next run drops it)."""


def _from_single_object(client: Any, bucket: str, file: ProductFile, mission: str) -> MetadataResult:
    name = file.key.rsplit("/", 1)[-1].lower()
    if file.size == 0:
        return MetadataResult(None, None, "empty_object")
    if name.endswith(".zip"):
        return _from_zip(RangeReader(client, bucket, file.key, file.size), mission)
    if name.endswith(".tar"):
        return _from_tar(RangeReader(client, bucket, file.key, file.size), mission)
    if name.endswith((".tar.gz", ".tgz")):
        return MetadataResult(None, None, "compressed_tar_not_read")
    if name.endswith((".nc", ".nc4")):
        return MetadataResult(None, None, "netcdf_not_read")
    return MetadataResult(None, None, "no_metadata_file")


def _from_zip(reader: RangeReader, mission: str) -> MetadataResult:
    path = None
    try:
        with zipfile.ZipFile(reader) as archive:
            infos = {i.filename: i for i in archive.infolist() if not i.is_dir()}
            chosen = pick_metadata(infos, mission)
            if chosen is None:
                return MetadataResult(None, None, "no_metadata_file")
            path, kind = chosen
            if infos[path].file_size > MAX_METADATA_BYTES:
                return MetadataResult(None, path, "metadata_too_large")
            data = archive.read(path)
        return MetadataResult(read_metadata(data, kind, name=path), path, None)
    except (zipfile.BadZipFile, zlib.error, struct.error, EOFError, NotImplementedError, ValueError) as exc:
        if isinstance(exc, MetadataError):
            return MetadataResult(None, path, exc.reason)
        return MetadataResult(None, path, "corrupt_zip")


def _from_tar(reader: RangeReader, mission: str) -> MetadataResult:
    path = None
    try:
        with tarfile.open(fileobj=reader, mode="r:") as archive:
            for count, member in enumerate(archive):
                if count >= MAX_TAR_MEMBERS:
                    break
                chosen = pick_metadata([member.name], mission) if member.isfile() else None
                if chosen is not None:
                    path, kind = chosen
                    if member.size > MAX_METADATA_BYTES:
                        return MetadataResult(None, path, "metadata_too_large")
                    handle = archive.extractfile(member)
                    data = handle.read() if handle else b""
                    return MetadataResult(read_metadata(data, kind, name=path), path, None)
        return MetadataResult(None, None, "no_metadata_file")
    except (tarfile.TarError, EOFError, ValueError) as exc:
        if isinstance(exc, MetadataError):
            return MetadataResult(None, path, exc.reason)
        return MetadataResult(None, path, "corrupt_tar")


def _get(client: Any, bucket: str, key: str, byte_range: tuple[int, int] | None) -> bytes:
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if byte_range is not None:
        params["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
    try:
        response = client.get_object(**params)
        data: bytes = response["Body"].read()
    except Exception as exc:  # after botocore's retries: the archive is unreadable, not just this product
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "InvalidRange", "416"):
            raise _ObjectGone(key) from None
        raise archive_error(exc, f"read s3://{bucket}/{key}") from None
    return data


class RangeReader(io.RawIOBase):
    """A read-only, seekable file over one S3 object, fetched in cached blocks by range requests."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, *, cache_blocks: int = 8) -> None:
        super().__init__()
        self.client, self.bucket, self.key, self.size = client, bucket, key, size
        self.position = 0
        self.requests = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._cache_blocks = cache_blocks

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        pieces = []
        while self.position < end:
            index = self.position // BLOCK
            block = self._block(index)
            start = self.position - index * BLOCK
            piece = block[start : min(len(block), end - index * BLOCK)]
            if not piece:
                break
            pieces.append(piece)
            self.position += len(piece)
        return b"".join(pieces)

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is None:
            start = index * BLOCK
            block = _get(self.client, self.bucket, self.key, (start, min(self.size, start + BLOCK) - 1))
            self.requests += 1
            self._blocks[index] = block
            if len(self._blocks) > self._cache_blocks:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(index)
        return block
