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
    parser.add_argument("--shutdown-timeout", type=float, default=10.0, help="seconds to finish tasks on SIGTERM")
    args = parser.parse_args(argv)
    load_settings()  # fail fast, with a clear message, before forking workers
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
            str(args.shutdown_timeout),
            "--shutdown-timeout",
            str(args.shutdown_timeout),
            "--no-configure-logging",
        ]
    )
    return run_worker(worker_args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
