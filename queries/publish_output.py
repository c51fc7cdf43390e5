"""Where a published catalog goes (I/O edge): a local folder or `s3://bucket/prefix`.

Every write is atomic for readers: locally a temporary file renamed over the target (no fsync per file, one
`os.sync()` before the root catalog makes the children durable before the root points at them); on S3 a single
PUT. Every path is checked to stay under the output root, whatever an id looked like.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from harvester.errors import InputError, StoreError
from harvester.storage import LocalStorage, S3Storage, Storage, check_writable_folder

MEDIA_PARQUET = "application/vnd.apache.parquet"


class UnsafePath(InputError):
    """A path that would leave the output root (cscale never builds one: this is the last line of defence)."""


def check_relative(rel: str) -> str:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"refusing to write {rel!r}: not a plain relative path under the output root")
    return rel


class Output(Protocol):
    url: str

    def write(self, rel: str, data: bytes, content_type: str = "application/json", *, fresh: bool = False) -> None: ...
    def read(self, rel: str) -> bytes | None: ...
    def download(self, rel: str, local: Path) -> bool: ...
    def upload(self, local: Path, rel: str, content_type: str) -> None: ...
    def copy_part(self, storage: Storage, key: str, rel: str) -> None: ...
    def delete(self, rels: Iterable[str]) -> int: ...
    def barrier(self) -> None: ...
    def check_writable(self) -> None: ...


def open_output(url: str, *, s3_client: Any = None) -> Output:
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InputError(f"--out {url!r} has no bucket")
        return S3Output(parsed.netloc, parsed.path.strip("/"), client=s3_client)
    if parsed.scheme in ("", "file"):
        return LocalOutput(Path(parsed.path if parsed.scheme == "file" else url))
    raise InputError(f"unsupported --out {url!r}: use a folder or s3://bucket/prefix")


class LocalOutput:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.url = str(self.root)
        self._dirs: set[Path] = set()  # folders already created and checked to resolve under the root

    def _path(self, rel: str) -> Path:
        path = self.root / check_relative(rel)
        parent = path.parent
        if parent not in self._dirs:
            parent.mkdir(parents=True, exist_ok=True)
            # A symlinked folder inside the output could point elsewhere: check where it really is, once.
            if not parent.resolve().is_relative_to(self.root):
                raise UnsafePath(f"refusing to write {rel!r}: its folder resolves outside {self.root}")
            self._dirs.add(parent)
        return path

    def check_writable(self) -> None:
        check_writable_folder(self.root, "output")

    def write(self, rel: str, data: bytes, content_type: str = "application/json", *, fresh: bool = False) -> None:
        """`fresh`: no published document links to this path yet (a new item), so a reader cannot see it half
        written and a crash leaves it in the pending list: write it in place, sparing a rename."""
        path = self._path(rel)
        tmp = str(path) if fresh else f"{path.parent}/.{uuid.uuid4().hex[:16]}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if fresh else os.O_EXCL), 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        if not fresh:
            os.replace(tmp, path)

    def read(self, rel: str) -> bytes | None:
        try:
            return (self.root / check_relative(rel)).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def download(self, rel: str, local: Path) -> bool:
        source = self.root / check_relative(rel)
        if not source.exists():
            return False
        shutil.copyfile(source, local)
        return True

    def upload(self, local: Path, rel: str, content_type: str) -> None:
        path = self._path(rel)
        tmp = path.with_name(f".{uuid.uuid4().hex[:16]}.tmp")
        shutil.copyfile(local, tmp)
        os.replace(tmp, path)

    def copy_part(self, storage: Storage, key: str, rel: str) -> None:
        """Parts are immutable: a hard link costs nothing and survives gc of the store; else a copy."""
        path = self._path(rel)
        tmp = path.with_name(f".{uuid.uuid4().hex[:16]}.tmp")
        if isinstance(storage, LocalStorage):
            source = Path(storage.uri(key))
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
        elif isinstance(storage, S3Storage):
            from harvester.storage import s3_client

            source_key = f"{storage.prefix}/{key}" if storage.prefix else key
            s3_client().download_file(storage.bucket, source_key, str(tmp))
        else:  # pragma: no cover - the two storages above are all there is
            raise StoreError(f"cannot copy parts from {storage.url}")
        os.replace(tmp, path)
        tmp.unlink(missing_ok=True)  # renaming a hard link over another link of the same file leaves both

    def delete(self, rels: Iterable[str]) -> int:
        removed = 0
        folders: set[Path] = set()
        for rel in rels:
            path = self.root / check_relative(rel)
            try:
                path.unlink()
                removed += 1
                folders.add(path.parent)
            except FileNotFoundError:
                pass
        # Folders emptied by the removal go too (deepest first), never the root itself.
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            while folder != self.root and folder.is_relative_to(self.root):
                try:
                    folder.rmdir()
                except OSError:
                    break
                self._dirs.discard(folder)
                folder = folder.parent
        return removed

    def barrier(self) -> None:
        os.sync()


class S3Output:
    """Published files in a bucket. Bucket checks, reads and error mapping are the store's own (S3Storage);
    writes here add the Content-Type a static catalog needs."""

    def __init__(self, bucket: str, prefix: str, *, client: Any = None) -> None:
        self.storage = S3Storage(bucket, prefix, client=client)
        self.bucket = bucket
        self.prefix = prefix
        self.url = self.storage.url
        self.client = self.storage.client

    def key(self, rel: str) -> str:
        rel = check_relative(rel)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _error(self, exc: Exception, action: str) -> StoreError:
        return self.storage.error(exc, action)

    def check_writable(self) -> None:
        self.storage.check_writable()

    def write(self, rel: str, data: bytes, content_type: str = "application/json", *, fresh: bool = False) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"write {rel}") from None

    def read(self, rel: str) -> bytes | None:
        return self.storage.read(check_relative(rel))

    def download(self, rel: str, local: Path) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(self.bucket, self.key(rel), str(local))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise self._error(exc, f"read {rel}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"read {rel}") from None

    def upload(self, local: Path, rel: str, content_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:  # a managed transfer: large files go multipart, the object still appears whole at the end
            self.client.upload_file(str(local), self.bucket, self.key(rel), ExtraArgs={"ContentType": content_type})
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"upload {rel}") from None

    def copy_part(self, storage: Storage, key: str, rel: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"ContentType": MEDIA_PARQUET}
        try:
            if isinstance(storage, S3Storage):  # server-side copy: same endpoint and credentials as the store
                source = {"Bucket": storage.bucket, "Key": f"{storage.prefix}/{key}" if storage.prefix else key}
                self.client.copy(source, self.bucket, self.key(rel), ExtraArgs=extra)
            else:
                self.client.upload_file(storage.uri(key), self.bucket, self.key(rel), ExtraArgs=extra)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"copy part {key}") from None

    def delete(self, rels: Iterable[str]) -> int:
        keys = [self.key(rel) for rel in rels]
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
        return len(keys)

    def barrier(self) -> None:
        """A completed PUT is durable and visible: nothing to flush."""
