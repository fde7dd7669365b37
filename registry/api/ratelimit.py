"""Per-token submission rate limit (a sliding one-minute window, per API process)."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque

from registry.errors import RateLimited

_lock = threading.Lock()
_events: dict[str, deque[float]] = defaultdict(deque)


def check_submit_rate(who: str, per_minute: int) -> None:
    now = time.monotonic()
    with _lock:
        q = _events[who]
        while q and now - q[0] > 60:
            q.popleft()
        if len(q) >= per_minute:
            retry = max(1, math.ceil(60 - (now - q[0])))
            raise RateLimited(f"at most {per_minute} job submissions per minute for {who!r}", retry_after=retry)
        q.append(now)


def reset() -> None:
    with _lock:
        _events.clear()
