"""Typed errors. Transient errors may succeed on retry; terminal ones will not.

The CLI maps each class to an exit code (see `harvester.cli`), so a cron job can tell them apart.
"""

from __future__ import annotations


class CscaleError(Exception):
    """Base of every error cscale raises on purpose; its message is one line meant for the operator."""

    exit_code = 6


class TransientError(CscaleError):
    """A failure that may go away on retry (network, throttling, a concurrent writer)."""


class TerminalError(CscaleError):
    """A failure that will not go away by retrying the same call."""


class InputError(TerminalError):
    """The input (a file, a URL, a config value) cannot be read or is not what it claims to be."""

    exit_code = 3


class StoreError(TerminalError):
    """The snapshot store cannot be read or written (permissions, missing bucket, corrupt manifest)."""

    exit_code = 4


class StoreNotFound(StoreError):
    """The store root holds no snapshot yet."""


class VersionNotFound(StoreError):
    """The requested snapshot version does not exist or was garbage-collected."""


class ConcurrentCommitError(TransientError):
    """Another writer committed the version this commit wanted; re-plan against the new version and retry."""

    exit_code = 5

    def __init__(self, message: str, *, base_version: int, wanted_version: int) -> None:
        super().__init__(message)
        self.base_version = base_version
        self.wanted_version = wanted_version
