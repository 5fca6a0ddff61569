"""Crash points, for the fault tests: a worker that reaches an armed point dies at once by SIGKILL.

`DATAMILL_TEST_CRASH_AT` lists points as `KIND:PHASE` (e.g. `EXPORT:midway`),
where PHASE is one of PHASES. With `DATAMILL_TEST_CRASH_MARKER_DIR` set, each
point fires once across all processes (the first to create its marker file
dies; later ones go on), so the retry of a job can succeed. Unset, as in
production, a crash point is one set lookup.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

#: Where a job can be killed: right after its claim, after its first durable piece of
#: work (a chunk, a COPY under way, a stored part), and inside the success transaction.
PHASES = ("claimed", "midway", "before_done")


def crash_point(armed: frozenset[str], marker_dir: Path | None, kind: str, phase: str) -> None:
    point = f"{kind}:{phase}"
    if point not in armed:
        return
    if marker_dir is not None:
        try:
            (marker_dir / point.replace(":", "-")).open("x").close()
        except FileExistsError:
            return  # fired already
    os.kill(os.getpid(), signal.SIGKILL)
