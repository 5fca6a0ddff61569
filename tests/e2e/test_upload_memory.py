"""Upload at scale: memory stays flat in the server and the worker, and other RPCs keep answering.

The figures are bounds well below the file's size, not timings: a server or
worker that held the file (or a part per chunk) would exceed them.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import Client, UploadOptions
from datamill.v1 import job_pb2
from tests.e2e.conftest import Stack
from tests.e2e.helpers import process_children, reset_peak_rss, status_bytes

pytestmark = pytest.mark.timeout(180)

MiB = 1024 * 1024


def _write_csv(path: Path, size: int) -> int:
    """A CSV of about `size` bytes, written in blocks (never held in memory); returns its row count."""
    rows = 0
    with path.open("w") as out:
        out.write("id,token,amount,flag\n")
        while out.tell() < size:
            block = os.urandom(16 * 10_000).hex()
            lines = [
                f"{rows + i},{block[i * 32 : i * 32 + 32]},{(rows + i) * 0.25},{'true' if i % 3 else 'false'}\n"
                for i in range(10_000)
            ]
            out.write("".join(lines))
            rows += 10_000
    return rows


def test_a_large_upload_and_import_keep_server_and_worker_memory_flat(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "large.csv"
    rows = _write_csv(path, 256 * MiB)
    size = path.stat().st_size
    server = stack.server.pid
    (worker,) = process_children(stack.workers[0].pid)  # the taskiq worker process that runs the job
    # A small upload first, so that one-time costs (part buffers, gRPC stream buffers, lazy imports) are paid
    # before the baseline: what is measured is growth with the file's size.
    warm = tmp_path / "warm.csv"
    _write_csv(warm, 24 * MiB)
    with Client.connect(stack.target, timeout=30) as client:
        client.wait(client.upload(warm, "warm", options=UploadOptions(skip_malformed_rows=False)).job.id)
    server_idle, worker_idle = status_bytes(server, "VmRSS"), status_bytes(worker, "VmRSS")
    reset_peak_rss(server)
    reset_peak_rss(worker)
    with Client.connect(stack.target, timeout=30) as client:
        completed = client.upload(path, "large", options=UploadOptions(skip_malformed_rows=False))
        server_peak = status_bytes(server, "VmHWM")
        job = client.wait(completed.job.id)
    worker_peak = status_bytes(worker, "VmHWM")
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.ingest.row_count == rows
    server_growth, worker_growth = server_peak - server_idle, worker_peak - worker_idle
    print(f"file {size / MiB:.0f} MiB: server +{server_growth / MiB:.0f} MiB, worker +{worker_growth / MiB:.0f} MiB")
    # Three 8 MiB part buffers and gRPC's own, whatever the size.
    assert server_growth < 80 * MiB
    # Parsing blocks and COPY batches, whatever the size.
    assert worker_growth < 160 * MiB
    assert worker_growth < size / 2


def test_concurrent_uploads_do_not_hold_up_other_rpcs(stack: Stack, tmp_path: Path) -> None:
    files = []
    for index in range(4):
        path = tmp_path / f"concurrent{index}.csv"
        _write_csv(path, 40 * MiB)
        files.append(path)
    done = threading.Event()
    latencies: list[float] = []

    def probe() -> None:
        with grpc.insecure_channel(stack.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while not done.is_set():
                started = time.perf_counter()
                health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    def upload(path: Path) -> Any:
        with Client.connect(stack.target, timeout=30) as client:
            return client.upload(path, path.stem)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(len(files)) as pool:
            results = list(pool.map(upload, files))
    finally:
        done.set()
        prober.join()
    assert [r.size_bytes for r in results] == [p.stat().st_size for p in files]
    assert len(latencies) >= 10  # the probe ran while the uploads did
    # The event loop never waits on the object store or on hashing: a check is answered at once.
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
