"""Exponential backoff with jitter, for retrying peers and names.

Pure: the caller passes in the failure count and the random jitter, so the same
arguments always give the same delay.
"""

from __future__ import annotations

import math

from qudag_node.core.errors import UsageError


def backoff_delay(failures: int, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures (``failures >= 1``).

    The envelope doubles from ``base`` with each failure up to ``cap``:
    ``min(cap, base * 2 ** (failures - 1))``. ``jitter``, drawn by the caller from
    [0, 1), scales it by ``0.5 + jitter``, so the delay lies between half and one and
    a half times the envelope and never exceeds ``1.5 * cap``. Any number of failures
    is fine: huge counts give the capped envelope without overflowing.
    """
    _check(failures, base, cap, jitter)
    try:
        doubled = math.ldexp(base, failures - 1)
    except OverflowError:
        doubled = math.inf
    envelope = min(cap, doubled)
    return envelope * (0.5 + jitter)


def _check(failures: int, base: float, cap: float, jitter: float) -> None:
    """Raise :class:`UsageError` unless the arguments meet :func:`backoff_delay`'s contract."""
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
        raise UsageError(f"backoff failures must be an integer >= 1, not {failures!r}")
    if not (math.isfinite(base) and base > 0):
        raise UsageError(f"backoff base must be a positive finite number, not {base!r}")
    if not (math.isfinite(cap * 1.5) and cap >= base):
        raise UsageError(f"backoff cap must be finite and at least the base, not {cap!r}")
    if not 0 <= jitter < 1:
        raise UsageError(f"backoff jitter must lie in [0, 1), not {jitter!r}")
