"""`datamill-worker`: validate settings, then run taskiq workers on worker.tasks:broker."""

from __future__ import annotations

import argparse

from taskiq.cli.worker.args import WorkerArgs
from taskiq.cli.worker.run import run_worker

from server.core.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="datamill-worker", description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--max-async-tasks", type=int, default=4, help="concurrent jobs per process (default 4)")
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=None,
        help="seconds to finish jobs on SIGTERM before giving them back (default DATAMILL_WORKER_SHUTDOWN_SECONDS)",
    )
    args = parser.parse_args(argv)
    settings = load_settings()  # fail fast, with a clear message, before forking workers
    grace = settings.worker_shutdown_seconds if args.shutdown_timeout is None else args.shutdown_timeout
    worker_args = WorkerArgs.from_cli(
        [
            "worker.tasks:broker",
            "--workers",
            str(args.workers),
            "--max-async-tasks",
            str(args.max_async_tasks),
            "--max-prefetch",
            "0",
            "--wait-tasks-timeout",
            str(grace),
            # Room for the shutdown hook that gives unfinished jobs back.
            "--shutdown-timeout",
            str(grace + 10),
            "--no-configure-logging",
        ]
    )
    return run_worker(worker_args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
