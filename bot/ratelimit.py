"""Per-user sliding-window rate limit (N updates per S seconds), in memory."""

from __future__ import annotations

import time
from collections import deque


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
    if count < 1 or seconds <= 0:
        raise ValueError(f"rate limit needs COUNT >= 1 and SECONDS > 0: {text!r}")
    return count, seconds


class RateLimiter:
    def __init__(self, count: int, seconds: float, clock=time.monotonic):
        self.count, self.seconds, self.clock = count, seconds, clock
        self._hits: dict[int, deque] = {}
        self._warned: dict[int, float] = {}  # user -> when the window that was warned about ends

    @property
    def enabled(self) -> bool:
        return self.count > 0

    def hit(self, user_id: int) -> tuple[bool, bool, float]:
        """Count one update. Returns (allowed, warn, retry_after): warn is True once per blocked window."""
        if not self.enabled:
            return True, False, 0.0
        now = self.clock()
        hits = self._hits.setdefault(user_id, deque())
        while hits and hits[0] <= now - self.seconds:
            hits.popleft()
        if len(hits) < self.count:
            hits.append(now)
            if len(self._hits) > 10_000:  # keep memory bounded on a busy bot
                self._forget_idle(now)
            return True, False, 0.0
        retry_after = hits[0] + self.seconds - now
        warn = self._warned.get(user_id, 0.0) <= now
        if warn:
            self._warned[user_id] = hits[0] + self.seconds
        return False, warn, retry_after

    def _forget_idle(self, now: float) -> None:
        for user in [u for u, h in self._hits.items() if not h or h[-1] <= now - self.seconds]:
            self._hits.pop(user, None)
            self._warned.pop(user, None)
