"""The free space of the data dir against ``QUDAG_MIN_FREE_DISK_MB``: below it, client
writes are refused (507) and the node reports not ready, keeping the rest of the disk
for what the consensus writes by itself."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

#: Seconds a reading of the data dir's free space is used before it is read again.
DISK_CHECK_INTERVAL = 0.25


class DiskGuard:
    """The free space of the data dir's filesystem against ``QUDAG_MIN_FREE_DISK_MB``.

    One ``statvfs`` call, made again at most every :data:`DISK_CHECK_INTERVAL` seconds,
    so that every client write can ask it. Below the floor the node refuses client
    writes (507) and reports not ready; the space left is the consensus's reserve, and
    writes resume by themselves once the free space is back above the floor.
    """

    def __init__(
        self,
        path: Path,
        min_free_mb: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._min_free = min_free_mb << 20
        self._min_free_mb = min_free_mb
        self._clock = clock
        self._free: int | None = None
        self._read_at = -math.inf

    def free_bytes(self) -> int | None:
        """Bytes available to the node, or None if the filesystem cannot be asked."""
        now = self._clock()
        if now - self._read_at >= DISK_CHECK_INTERVAL:
            self._read_at = now
            try:
                st = os.statvfs(self._path)
                self._free = st.f_bavail * st.f_frsize
            except OSError:
                self._free = None
        return self._free

    def low(self) -> bool:
        """Whether the free space is below the floor (an unreadable one counts as enough:
        the writes themselves then say whether the disk is full)."""
        free = self.free_bytes()
        return free is not None and free < self._min_free

    def detail(self) -> str:
        """The free space against the floor, in MiB, for readiness and errors."""
        free = self.free_bytes()
        shown = "unknown" if free is None else f"{free >> 20} MiB"
        return f"{shown} free, need {self._min_free_mb}"

    def shortage(self) -> str | None:
        """:meth:`detail` when the free space is below the floor, else None."""
        return self.detail() if self.low() else None
