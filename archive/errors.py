"""Errors of the archive indexer, mapped onto cscale's exit codes: an archive that cannot be read is an input
error (exit 3), like an unreadable file or URL; the snapshot store keeps its own StoreError (exit 4)."""

from __future__ import annotations

from harvester.errors import InputError


class ArchiveError(InputError):
    """The archive (bucket, prefix or inventory report) cannot be read."""


class ArchiveAccessError(ArchiveError):
    """The archive bucket refuses the request (missing bucket, access denied)."""


def archive_error(exc: Exception, action: str) -> ArchiveError:
    """One line for the operator from a botocore error raised after its retries."""
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    code = str(error.get("Code") or type(exc).__name__)
    if code in ("NoSuchBucket", "404", "NotFound"):
        return ArchiveAccessError(f"cannot {action}: the bucket does not exist ({code})")
    if code in ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return ArchiveAccessError(f"cannot {action}: access denied ({code}); check the credentials and bucket policy")
    message = str(error.get("Message") or exc).splitlines()[0][:200] if str(exc) else code
    return ArchiveError(f"cannot {action}: {code}: {message}")
