"""Where a snapshot store lives: a local folder or `s3://bucket/prefix` on any S3 endpoint (I/O edge).

Only the operations the store needs, each atomic: whole-object puts, exclusive create (the commit point of a
version) and compare-and-swap of the CURRENT pointer (local: a lock file + os.replace; S3: conditional puts with
If-None-Match / If-Match, which AWS, MinIO, Ceph and moto honour).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from harvester.errors import StoreError


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch


class Storage(Protocol):
    url: str

    def read(self, key: str) -> bytes | None: ...
    def read_tagged(self, key: str) -> tuple[bytes, str] | None: ...
    def write(self, key: str, data: bytes) -> None: ...
    def create_exclusive(self, key: str, data: bytes) -> bool: ...
    def swap(self, key: str, data: bytes, expected_tag: str | None) -> bool: ...
    def upload(self, local_path: Path, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def listing(self, prefix: str) -> Iterator[ObjectInfo]: ...
    def delete(self, keys: list[str]) -> None: ...
    def uri(self, key: str) -> str: ...
    def check_writable(self) -> None: ...


def open_storage(root: str, *, s3_client: Any = None) -> Storage:
    """A Storage for a root URL or path. S3 credentials and endpoint come from the usual AWS environment
    variables (AWS_ENDPOINT_URL for non-AWS endpoints); never from the command line."""
    parsed = urlparse(root)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"S3 store root {root!r} has no bucket")
        return S3Storage(parsed.netloc, parsed.path.strip("/"), client=s3_client)
    if parsed.scheme in ("", "file"):
        return LocalStorage(Path(parsed.path if parsed.scheme == "file" else root))
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise StoreError(f"HTTP store root {root!r} has no host")
        return HttpStorage(root)
    raise StoreError(f"unsupported store root {root!r}: use a local folder, s3://bucket/prefix or an http(s) URL")


def check_writable_folder(root: Path, what: str) -> None:
    """Create `root` if needed and prove a file can be created in it (a StoreError naming `what` otherwise)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"{what} {root} is not writable: {exc.strerror or exc}") from None


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def check_writable(self) -> None:
        check_writable_folder(self.root, "store root")

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        data = self.read(key)
        return None if data is None else (data, data.decode("utf-8", "replace"))

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic, complete content, fails if the name exists
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def swap(self, key: str, data: bytes, expected_tag: str | None) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read_tagged(key)
            if (current[1] if current else None) != expected_tag:
                return False
            self.write(key, data)
            return True

    def upload(self, local_path: Path, key: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(local_path, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(8 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, path)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def listing(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix)
        if not base.exists():
            return
        for dirpath, _, files in os.walk(base):
            for name in files:
                full = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    stat = full.stat()
                    yield ObjectInfo(str(full.relative_to(self.root)), stat.st_size, stat.st_mtime)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)


class S3Storage:
    def __init__(self, bucket: str, prefix: str, *, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self._client = client if client is not None else s3_client()

    @property
    def client(self) -> Any:
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def error(self, exc: Exception, action: str) -> StoreError:
        """One clear StoreError for a boto error (missing bucket, access denied, anything else with its code)."""
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        if code == "NoSuchBucket":
            return StoreError(f"S3 bucket {self.bucket!r} does not exist")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StoreError(f"access to s3://{self.bucket} denied while trying to {action}")
        return StoreError(f"S3 error while trying to {action} in {self.url}: {code}")

    def check_writable(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("404", "NoSuchBucket"):
                raise StoreError(f"S3 bucket {self.bucket!r} does not exist") from None
            raise self.error(exc, "check the bucket") from None

    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), str(response["ETag"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self.error(exc, f"read {key}") from None
        except BotoCoreError as exc:
            raise self.error(exc, f"read {key}") from None

    def read(self, key: str) -> bytes | None:
        tagged = self.read_tagged(key)
        return None if tagged is None else tagged[0]

    def write(self, key: str, data: bytes) -> None:
        self._put(key, data, {})

    def _put(self, key: str, data: bytes, condition: dict[str, str]) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise self.error(exc, f"write {key}") from None
        except BotoCoreError as exc:
            raise self.error(exc, f"write {key}") from None

    def create_exclusive(self, key: str, data: bytes) -> bool:
        return self._put(key, data, {"IfNoneMatch": "*"})

    def swap(self, key: str, data: bytes, expected_tag: str | None) -> bool:
        condition = {"IfNoneMatch": "*"} if expected_tag is None else {"IfMatch": expected_tag}
        return self._put(key, data, condition)

    def upload(self, local_path: Path, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.upload_file(str(local_path), self.bucket, self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self.error(exc, f"upload {key}") from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self.error(exc, f"look up {key}") from None

    def listing(self, prefix: str) -> Iterator[ObjectInfo]:
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"][strip:], int(obj["Size"]), obj["LastModified"].timestamp())
        except (ClientError, BotoCoreError) as exc:
            raise self.error(exc, f"list {prefix}") from None

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})


class HttpStorage:
    """A published store served over HTTP(S) (any static file server): read-only. CURRENT and manifests are read
    with requests; part files are read by DuckDB (httpfs) or by range requests. Listing is impossible over plain
    HTTP, so whatever needs it (`snapshots list`, gc) needs the store's own root."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def uri(self, key: str) -> str:
        from urllib.parse import quote

        return f"{self.url}/{quote(key, safe='/=')}"

    def _get(self, key: str, method: str = "GET") -> Any:
        import requests

        try:
            response = self.session.request(method, self.uri(key), timeout=self.timeout)
        except requests.RequestException as exc:
            raise StoreError(f"cannot reach {self.uri(key)}: {type(exc).__name__}") from None
        if response.status_code in (404, 410):
            return None
        if response.status_code >= 400:
            raise StoreError(f"{self.uri(key)} answered HTTP {response.status_code}")
        return response

    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        response = self._get(key)
        if response is None:
            return None
        return response.content, str(response.headers.get("ETag") or response.content.decode("utf-8", "replace"))

    def read(self, key: str) -> bytes | None:
        response = self._get(key)
        return None if response is None else bytes(response.content)

    def exists(self, key: str) -> bool:
        return self._get(key, "HEAD") is not None

    def supports_ranges(self, key: str) -> bool:
        """Whether the server answers range requests (python -m http.server does not)."""
        response = self._get(key, "HEAD")
        return response is not None and response.headers.get("Accept-Ranges", "").lower() == "bytes"

    def listing(self, prefix: str) -> Iterator[ObjectInfo]:
        raise StoreError(f"{self.url} is served over HTTP, which cannot list {prefix}; use the store's own root")

    def _read_only(self) -> StoreError:
        return StoreError(f"{self.url} is a read-only HTTP store")

    def write(self, key: str, data: bytes) -> None:
        raise self._read_only()

    def create_exclusive(self, key: str, data: bytes) -> bool:
        raise self._read_only()

    def swap(self, key: str, data: bytes, expected_tag: str | None) -> bool:
        raise self._read_only()

    def upload(self, local_path: Path, key: str) -> None:
        raise self._read_only()

    def delete(self, keys: list[str]) -> None:
        raise self._read_only()

    def check_writable(self) -> None:
        raise self._read_only()


def s3_client() -> Any:
    """A boto3 S3 client with standard retries (botocore still defaults to `legacy`)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 10}, s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None, config=config)


def arrow_filesystem(storage: Storage) -> tuple[Any, str]:
    """A pyarrow filesystem and a path prefix for reading the store's Parquet files in place."""
    import pyarrow.fs as pafs

    if isinstance(storage, S3Storage):
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        options: dict[str, Any] = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
        if endpoint:
            parsed = urlparse(endpoint)
            options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
        fs = pafs.S3FileSystem(**options, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=10))
        return fs, f"{storage.bucket}/{storage.prefix}".rstrip("/") + "/"
    assert isinstance(storage, LocalStorage)
    return pafs.LocalFileSystem(), str(storage.root) + "/"
