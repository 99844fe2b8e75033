"""Per-key rate limits (Replicate: 600 creates/min and 3000 other requests/min) with the ``limits`` package.

In memory by default (one process); ``FLUXSERVE_RATE_LIMIT_STORAGE=redis://…`` shares the counters
between API replicas.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from fluxserve.errors import TooManyRequests


class RateLimiter:
    """Two sliding-window limits per key: creating predictions, and everything else.

    A sliding window *counter* (this window's count plus the previous window's, weighted by how much of it
    still overlaps) costs O(1) per request. The exact moving window keeps one timestamp per request and
    serialises every request of a key on a lock: benchmarks/load.py -n 300 on SQLite gave 733-835 req/s with it
    and 1,008-1,018 with the counter (benchmarks/README.md).
    """

    def __init__(self, create_limit: str, other_limit: str, storage_url: str = "memory://") -> None:
        self._create: RateLimitItem = parse(create_limit)
        self._other: RateLimitItem = parse(other_limit)
        self._limiter = SlidingWindowCounterRateLimiter(storage_from_string(f"async+{storage_url}"))

    async def check(self, key_id: str, *, creating: bool) -> None:
        """Count one request; raise :class:`TooManyRequests` (429) when the key is over its limit."""
        item = self._create if creating else self._other
        if await self._limiter.hit(item, key_id):
            return
        stats = await self._limiter.get_window_stats(item, key_id)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise TooManyRequests(
            f"Request was throttled. Expected available in {retry_after} second{'s' if retry_after != 1 else ''}.",
            headers={
                "Retry-After": str(retry_after),
                "ratelimit-limit": str(item.amount),
                "ratelimit-remaining": str(stats.remaining),
                "ratelimit-reset": str(retry_after),
            },
        )
