"""Locks between the processes of one machine: an exclusive ``flock`` on a file.

Used where processes sharing a home queue for one job: promotions (``pipeline``) and the model
cache's downloads (``supervisor``). The lock file is opened when the lock is made, so a caller
can tell a file it cannot open (and fall back) from a failure inside the locked block.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from types import TracebackType


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), held inside one ``with`` block.

    One use: leaving the block lets the lock go and closes the file.

    Args:
        path: The lock file; its folder must exist.

    Raises:
        OSError: When ``path`` cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self._handle = open(path, "a")  # noqa: SIM115 - closed on exit

    def __enter__(self) -> FileLock:
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
        finally:
            self._handle.close()
