"""Prometheus metrics of a real server and a real two-process worker, scraped over HTTP."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from client import Client
from datamill.v1 import job_pb2
from server.dev import worker_process
from server.devstack import free_port
from tests.e2e.conftest import Stack
from tests.e2e.helpers import RawWatch, schema, wait_for


def scrape(listen: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at http://listen/metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_server_and_worker_metrics_follow_a_job(stack_factory: Any) -> None:
    server_listen, worker_listen = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    stack: Stack = stack_factory(
        settings={"DATAMILL_METRICS_LISTEN": server_listen, "DATAMILL_METRICS_INTERVAL_SECONDS": "0.2"}, workers=0
    )
    worker_env = {**stack.env, "DATAMILL_METRICS_LISTEN": worker_listen}
    stack.workers.append(worker_process(worker_env, stack.logs / "worker.log", processes=2).start())
    wait_for(lambda: _reachable(worker_listen), timeout=30, what="the worker's metrics")

    with Client.connect(stack.target) as client:
        job = client.generate("metered", schema=schema(5_000))
        final = client.wait(job.id)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.error.message
        for _ in range(3):
            client.get_job(job.id)
        watch = RawWatch(stack.target)
        try:
            watch.subscribe(job.id)
            watch.next_event()
            open_streams = wait_for(
                lambda: value(scrape(server_listen), "datamill_grpc_open_streams", method="WatchJob") == 1,
                what="one open WatchJob stream",
            )
            assert open_streams
        finally:
            watch.close()

    server = wait_for(
        lambda: (s := scrape(server_listen)) and value(s, "datamill_grpc_open_streams", method="WatchJob") == 0 and s,
        what="the WatchJob stream to close",
    )
    assert value(server, "datamill_grpc_requests_total", method="Generate", code="OK") == 1
    assert value(server, "datamill_grpc_requests_total", method="GetJob", code="OK") == 3
    assert value(server, "datamill_grpc_seconds_count", method="GetJob") == 3
    assert value(server, "datamill_jobs_created_total", kind="GENERATE") == 1
    # Live jobs are counted every DATAMILL_METRICS_INTERVAL_SECONDS: the job was RUNNING, and it is now neither.
    wait_for(
        lambda: _live_jobs(server_listen) == [0, 0],
        what="the live-jobs gauge to reach zero",
    )
    assert (value(server, "datamill_db_pool_connections", state="open") or 0) >= 1
    assert value(server, "datamill_db_pool_waiting") == 0

    worker = wait_for(
        lambda: (
            (s := scrape(worker_listen))
            and value(s, "datamill_jobs_finished_total", kind="GENERATE", outcome="SUCCEEDED") == 1
            and s
        ),
        what="the worker's finished job",
    )
    assert value(worker, "datamill_job_attempts_total", kind="GENERATE") == 1
    assert value(worker, "datamill_rows_total", kind="GENERATE") == 5_000
    assert value(worker, "datamill_job_queue_wait_seconds_count", kind="GENERATE") == 1
    assert value(worker, "datamill_job_run_seconds_count", kind="GENERATE", outcome="SUCCEEDED") == 1


def _reachable(listen: str) -> bool:
    try:
        scrape(listen)
    except OSError:
        return False
    return True


def _live_jobs(listen: str) -> list[float | None]:
    samples = scrape(listen)
    return [value(samples, "datamill_jobs", state=state) for state in ("QUEUED", "RUNNING")]
