"""Per-client rate limit (token bucket) and the bounded number of concurrent TorchServe calls.

Both are per gunicorn worker process: the rate limit a client sees is `rate` per worker it lands on
(gunicorn spreads connections, so with W workers a client may get up to W x rate). Sharing them
across processes would put a lock on every request's path; the state file is for rarely changed state.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_clients: int = 10000):
        self.rate, self.burst, self.max_clients = rate, max(1, burst), max_clients
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, time)
        self.lock = threading.Lock()

    def check(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self.lock:
            tokens, then = self.buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self.buckets[client] = (tokens, now)  # most recent last: the oldest are evicted first
            while len(self.buckets) > self.max_clients:
                self.buckets.popitem(last=False)
        return wait


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))
