"""Per-user rate limit (N updates per S seconds, a moving window), on the `limits` library's in-memory storage.

`limits` keeps the window (MovingWindowRateLimiter + MemoryStorage, which also drops idle users on its own);
this module adds only what the bot says about it: one notice per blocked window, with the seconds until the
oldest counted update leaves the window.
"""

from __future__ import annotations

import time

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


def parse_rate(text: str) -> tuple[int, float]:
    """"20/60" -> (20, 60.0): at most 20 updates per 60 s per user; "0" switches the limit off."""
    text = str(text).strip()
    if text in ("0", "off", "none", ""):
        return 0, 0.0
    try:
        count, seconds = text.split("/", 1)
        count, seconds = int(count), float(seconds)
    except ValueError:
        raise ValueError(f"rate limit must look like COUNT/SECONDS (e.g. 20/60) or 0 to switch it off: {text!r}")\
            from None
    if count < 1 or seconds < 1 or not seconds.is_integer():
        raise ValueError(f"rate limit needs COUNT >= 1 and a whole number of SECONDS >= 1: {text!r}")
    return count, seconds


class RateLimiter:
    def __init__(self, count: int, seconds: float):
        self.count, self.seconds = count, seconds
        self._warned: dict[int, float] = {}  # user -> when the window that was warned about ends (time.time())
        if self.enabled:
            self._item = RateLimitItemPerSecond(count, int(seconds))
            self._window = MovingWindowRateLimiter(MemoryStorage())

    @property
    def enabled(self) -> bool:
        return self.count > 0

    def hit(self, user_id: int) -> tuple[bool, bool, float]:
        """Count one update. Returns (allowed, warn, retry_after): warn is True once per blocked window."""
        if not self.enabled:
            return True, False, 0.0
        key = str(user_id)
        if self._window.hit(self._item, key):
            return True, False, 0.0
        reset = self._window.get_window_stats(self._item, key).reset_time  # the oldest counted hit + the window
        now = time.time()  # the clock `limits` keeps its windows by
        warn = self._warned.get(user_id, 0.0) <= now
        if warn:
            self._warned[user_id] = reset
            if len(self._warned) > 10_000:  # keep memory bounded on a busy bot
                self._warned = {u: t for u, t in self._warned.items() if t > now}
        return False, warn, max(reset - now, 0.0)
