"""Retry delays: exponential backoff with full jitter (AWS architecture blog)."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Delay before the attempt after `attempt` (1-based): uniform in [base/2, min(cap, base*2^(attempt-1))]."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return random.uniform(min(base / 2, ceiling), ceiling)
