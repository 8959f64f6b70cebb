"""Signature checks spread over the machine's cores.

libsodium releases the GIL while it verifies, so threads verify in parallel. The
engine hands each batch of peer messages' signatures to :meth:`ThreadedVerifier.verify_many`
at once; a large batch is cut into one share per worker thread plus one for the
calling thread (the pump, which would otherwise only wait), a small one is verified
inline. The results are exactly those of :func:`~qudag_node.core.crypto.verify_each`,
and like every verifier it remembers the recent ones in a cache of its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from qudag_node.core.crypto import CACHE_SIZE, SequentialVerifier, SignatureCheck, verify_each

#: Below this many checks, handing work to a thread costs more than it saves.
INLINE_BELOW = 32


def worker_count() -> int:
    """Threads to add to the caller's: one per further core, at most three."""
    return min(os.cpu_count() or 1, 4) - 1


class ThreadedVerifier(SequentialVerifier):
    """A :class:`~qudag_node.core.crypto.Verifier` that owns ``workers`` threads (none:
    everything inline) and spreads a batch of checks the cache does not know over them.
    Threads start on first use; :meth:`close` stops them.
    """

    def __init__(
        self, workers: int, inline_below: int = INLINE_BELOW, cache_size: int = CACHE_SIZE
    ) -> None:
        super().__init__(cache_size)
        self._workers = workers
        self._inline_below = inline_below
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="verify") if workers > 0 else None
        )

    def _compute(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        if self._pool is None or len(checks) < self._inline_below:
            return verify_each(checks)
        share = -(-len(checks) // (self._workers + 1))  # ceiling: the caller's share
        futures = [
            self._pool.submit(verify_each, checks[start : start + share])
            for start in range(share, len(checks), share)
        ]
        results = verify_each(checks[:share])
        for future in futures:
            results += future.result()
        return results

    def close(self) -> None:
        """Stop the worker threads (after the checks they were given)."""
        if self._pool is not None:
            self._pool.shutdown()
