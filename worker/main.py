"""`datamill-worker`: validate settings, then run taskiq workers on worker.tasks:broker."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile

from taskiq.cli.worker.args import WorkerArgs
from taskiq.cli.worker.run import run_worker

from server.core.settings import load_settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as server.core.metrics.MULTIPROC_ENV, which must not be imported first


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
    if settings.metrics_listen:
        _serve_metrics(settings.metrics_listen)
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


def _serve_metrics(listen: str) -> None:
    """Serve the sum of the worker processes' metrics from this parent process.

    prometheus-client's multiprocess mode is chosen by PROMETHEUS_MULTIPROC_DIR when server.core.metrics is first
    imported, so it is set here, before taskiq starts the processes that import it. The directory is this run's own:
    samples of an earlier run must not be summed in.
    """
    directory = tempfile.mkdtemp(prefix="datamill-worker-metrics-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = directory
    from server.core.metrics import serve_worker_metrics  # noqa: PLC0415  # after the variable is set

    serve_worker_metrics(listen)


if __name__ == "__main__":
    raise SystemExit(main())
