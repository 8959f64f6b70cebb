"""The disk guard: the data dir's free space against the floor, read at most every
DISK_CHECK_INTERVAL seconds, on a real filesystem."""

from __future__ import annotations

import os
from pathlib import Path

from qudag_node.disk import DISK_CHECK_INTERVAL, DiskGuard


class Clock:
    """A manual monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_floor_above_the_free_space_is_low_and_says_why(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free_mb = (st.f_bavail * st.f_frsize) >> 20
    guard = DiskGuard(tmp_path, free_mb + 1_000_000)
    assert guard.low()
    shortage = guard.shortage()
    assert shortage is not None
    assert shortage.endswith(f"free, need {free_mb + 1_000_000}")
    assert not DiskGuard(tmp_path, 0).low()
    assert DiskGuard(tmp_path, 0).shortage() is None


def test_a_reading_is_reused_within_the_interval(tmp_path: Path) -> None:
    clock = Clock()
    data = tmp_path / "data"
    data.mkdir()
    guard = DiskGuard(data, 0, clock)
    assert guard.free_bytes() is not None
    data.rmdir()  # its filesystem cannot be asked any more
    clock.now += DISK_CHECK_INTERVAL / 2
    assert guard.free_bytes() is not None  # the last reading, not asked again
    clock.now += DISK_CHECK_INTERVAL
    assert guard.free_bytes() is None
    assert not guard.low()  # unknown counts as enough: the writes themselves tell
    assert guard.detail() == "unknown free, need 0"
