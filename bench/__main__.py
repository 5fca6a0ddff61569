"""`python -m bench`: run the benchmarks, print their tables, write bench/results/<UTC timestamp>.json.

A benchmark is a module with `run(options: Options) -> Section`; add it to
BENCHMARKS to have it run here (`--only NAME` picks some). `python -m bench upload`
runs the Upload benchmark instead, and `python -m bench export` the Export
benchmark; each has options of its own (`python -m bench upload -h`). `python -m
bench all` (`make bench`) runs every benchmark with its defaults, one after the
other on the same machine, and writes one JSON file with every section.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import common, control, export, generate, scaling, upload, watch
from bench.common import Options, Section

BENCHMARKS: dict[str, Callable[[Options], Section]] = {
    generate.NAME: generate.run,
    control.NAME: control.run,
    watch.NAME: watch.run,
    scaling.NAME: scaling.run,
}
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 200_000


def _positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [upload.NAME]:
        return _main_upload(args[1:])
    if args[:1] == [export.NAME]:
        return _main_export(args[1:])
    if args[:1] == ["all"]:
        return _main_all(args[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        epilog=f"python -m bench {upload.NAME} [-h] [--size-mib N] [--repeats N]: the Upload benchmark;"
        f" python -m bench {export.NAME} [-h] [--rows N] [--quick] [--repeats N] [--s3]: the Export benchmark",
    )
    parser.add_argument("--rows", type=_positive, help=f"rows of the main measurements (default {DEFAULT_ROWS:,})")
    parser.add_argument("--quick", action="store_true", help=f"a smaller run: {QUICK_ROWS:,} rows unless --rows")
    parser.add_argument("--repeats", type=_positive, default=5, help="rounds of each measurement (default 5)")
    parser.add_argument(
        "--only", choices=sorted(BENCHMARKS), action="append", help="run only this benchmark (repeatable)"
    )
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR, help="where the JSON file goes")
    parsed = parser.parse_args(args)

    rows = parsed.rows or (QUICK_ROWS if parsed.quick else DEFAULT_ROWS)
    options = Options(rows=rows, repeats=parsed.repeats, quick=parsed.quick)
    return _run(
        lambda: [BENCHMARKS[name](options) for name in parsed.only or BENCHMARKS],
        {"rows": options.rows, "repeats": options.repeats, "quick": options.quick},
        results_dir=parsed.results_dir,
        report=common.print_report,
    )


def _main_all(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench all", description="Every benchmark with its defaults.")
    parser.add_argument("--quick", action="store_true", help="the smaller runs of each (a smoke test, not figures)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR, help="where the JSON file goes")
    parsed = parser.parse_args(argv)
    quick = parsed.quick
    options = Options(rows=QUICK_ROWS if quick else DEFAULT_ROWS, repeats=2 if quick else 3, quick=quick)
    upload_options = upload.UploadBenchOptions(
        size_bytes=(64 if quick else upload.DEFAULT_SIZE_MIB) * common.MIB,
        repeats=1 if quick else upload.DEFAULT_REPEATS,
    )
    export_options = export.ExportBenchOptions(
        rows=export.QUICK_ROWS if quick else export.DEFAULT_ROWS,
        repeats=1 if quick else export.DEFAULT_REPEATS,
        quick=quick,
        s3=False,
        results_dir=parsed.results_dir,
    )

    def measure() -> list[Section]:
        sections = [BENCHMARKS[name](options) for name in BENCHMARKS]
        return [*sections, upload.run(upload_options), export.run(export_options)]

    def report(sections: Sequence[Section], machine: dict[str, Any]) -> None:
        common.print_report([s for s in sections if s.name != upload.NAME], machine)
        for section in sections:
            if section.name == upload.NAME:
                upload.print_report(section, machine)
        common.print_summary(sections)

    return _run(
        measure,
        {"all": True, **common.options_json(options), "upload": upload_options.to_json()},
        results_dir=parsed.results_dir,
        report=report,
    )


def _main_upload(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench {upload.NAME}", description=upload.__doc__)
    parser.add_argument(
        "--size-mib",
        type=_positive,
        default=upload.DEFAULT_SIZE_MIB,
        help=f"size of the file in MiB (default {upload.DEFAULT_SIZE_MIB:,})",
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=upload.DEFAULT_REPEATS,
        help=f"rounds of each measurement (default {upload.DEFAULT_REPEATS})",
    )
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR, help="where the JSON file goes")
    parsed = parser.parse_args(argv)

    options = upload.UploadBenchOptions(size_bytes=parsed.size_mib * common.MIB, repeats=parsed.repeats)
    return _run(
        lambda: [upload.run(options)],
        options.to_json(),
        results_dir=parsed.results_dir,
        report=lambda sections, facts: upload.print_report(sections[0], facts),
    )


def _main_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m bench {export.NAME}",
        description=export.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rows",
        type=_positive,
        help=f"rows of the main dataset (default {export.DEFAULT_ROWS:,}); the second has {export.BIG_FACTOR}× as many",
    )
    parser.add_argument("--quick", action="store_true", help=f"a smaller run: {export.QUICK_ROWS:,} rows unless --rows")
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=export.DEFAULT_REPEATS,
        help=f"rounds of each measurement (default {export.DEFAULT_REPEATS})",
    )
    parser.add_argument("--s3", action="store_true", help="export into SeaweedFS (S3) instead of the local store")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR, help="where the JSON file goes")
    parsed = parser.parse_args(argv)

    rows = parsed.rows or (export.QUICK_ROWS if parsed.quick else export.DEFAULT_ROWS)
    options = export.ExportBenchOptions(
        rows=rows, repeats=parsed.repeats, quick=parsed.quick, s3=parsed.s3, results_dir=parsed.results_dir
    )
    return _run(
        lambda: [export.run(options)], options.to_json(), results_dir=parsed.results_dir, report=common.print_report
    )


def _run(
    measure: Callable[[], list[Section]],
    options: dict[str, Any],
    *,
    results_dir: Path,
    report: Callable[[Sequence[Section], dict[str, Any]], None],
) -> int:
    """Run the benchmarks of `measure`, print the report and write the JSON file."""
    started = datetime.now(UTC)
    machine = common.machine_info()
    began = time.perf_counter()
    sections = measure()
    for section in sections:
        machine.update(section.environment)
    machine["load_average_end"] = common.load_average()

    report(sections, machine)
    path = common.write_json(
        {
            "started": started.isoformat(),
            "wall_seconds": round(time.perf_counter() - began, 3),
            "options": options,
            "machine": machine,
            "sections": [section.to_json() for section in sections],
        },
        started,
        results_dir,
    )
    common.console.print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
