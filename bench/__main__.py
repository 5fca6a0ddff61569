"""`python -m bench`: run the benchmarks, print one table, write bench/results/<UTC timestamp>.json.

A benchmark is a module with `run(options: Options) -> Section`; add it to
BENCHMARKS to have it run here.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import common, generate
from bench.common import Options, Section

BENCHMARKS: dict[str, Callable[[Options], Section]] = {
    generate.NAME: generate.run,
}
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 200_000


def _positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rows", type=_positive, help=f"rows of the main measurements (default {DEFAULT_ROWS:,})")
    parser.add_argument("--quick", action="store_true", help=f"a smaller run: {QUICK_ROWS:,} rows unless --rows")
    parser.add_argument("--repeats", type=_positive, default=5, help="rounds of each measurement (default 5)")
    parser.add_argument(
        "--only", choices=sorted(BENCHMARKS), action="append", help="run only this benchmark (repeatable)"
    )
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR, help="where the JSON file goes")
    args = parser.parse_args(argv)

    rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    options = Options(rows=rows, repeats=args.repeats, quick=args.quick)
    started = datetime.now(UTC)
    machine = common.machine_info()
    began = time.perf_counter()
    sections = [BENCHMARKS[name](options) for name in args.only or BENCHMARKS]
    for section in sections:
        machine.update(section.environment)
    machine["load_average_end"] = common.load_average()

    common.print_report(sections, machine)
    path = common.write_json(
        {
            "started": started.isoformat(),
            "wall_seconds": round(time.perf_counter() - began, 3),
            "options": {"rows": options.rows, "repeats": options.repeats, "quick": options.quick},
            "machine": machine,
            "sections": [section.to_json() for section in sections],
        },
        started,
        args.results_dir,
    )
    common.console.print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
