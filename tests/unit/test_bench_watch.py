"""The watch benchmark's matching of arrivals with commits (bench/watch.py), without any process."""

from __future__ import annotations

import pytest

from bench.watch import StreamResult, drift, match_arrivals, split_round_robin

COMMITS = {("a", 3): 10.0, ("a", 4): 11.0, ("b", 3): 20.0}


def test_every_watcher_sees_every_event() -> None:
    streams = [
        StreamResult("a", [(3, 10.002), (4, 11.001)]),
        StreamResult("a", [(3, 10.005), (4, 11.003)]),
        StreamResult("b", [(3, 20.004)]),
    ]
    matched = match_arrivals(COMMITS, streams)
    assert matched.samples_ms == pytest.approx([2.0, 1.0, 5.0, 3.0, 4.0])
    # Per event, the last of its job's watchers: a/3 at 5 ms, a/4 at 3 ms, b/3 at 4 ms.
    assert sorted(matched.last_ms) == pytest.approx([3.0, 4.0, 5.0])
    assert (matched.expected, matched.missed, matched.duplicates, matched.unexpected) == (5, 0, 0, 0)


def test_missed_duplicate_and_unexpected_events_are_counted_apart() -> None:
    streams = [
        StreamResult("a", [(2, 9.0), (3, 10.001), (3, 10.002)]),  # 2: before the phase; 3 twice; 4 never
        StreamResult("a", [(3, 10.003), (4, 11.002)]),
        StreamResult("b", []),
    ]
    matched = match_arrivals(COMMITS, streams)
    assert matched.samples_ms == pytest.approx([1.0, 3.0, 2.0])
    # a/4 and b/3 did not reach every watcher of their job: no "every watcher" time for them.
    assert matched.last_ms == pytest.approx([3.0])
    assert (matched.expected, matched.missed, matched.duplicates, matched.unexpected) == (5, 2, 1, 1)


def test_split_round_robin_deals_evenly() -> None:
    assert split_round_robin(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert split_round_robin([1], 1) == [[1]]


def test_drift_compares_the_first_and_last_quarter() -> None:
    commits = {("a", seq): float(seq) for seq in range(1, 9)}  # one commit a second over 8 s
    arrivals = [(seq, seq + 0.001 * seq) for seq in range(1, 9)]  # each later than the one before
    matched = match_arrivals(commits, [StreamResult("a", arrivals)])
    assert drift(matched, 1.0, 8.0) == pytest.approx((1.5, 7.5))
