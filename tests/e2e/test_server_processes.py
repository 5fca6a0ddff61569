"""DATAMILL_SERVER_PROCESSES: several server processes share the listen port, under a supervisor.

Checked on real processes: the kernel spreads new connections over both processes (their established sockets
on the port, read from /proc), jobs submitted through either run to the end, SIGTERM stops the set cleanly, and
a process that dies takes the supervisor down with exit status 1 instead of leaving it serving on half.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import grpc
import pytest

from client import Client
from client._requests import to_schema
from datamill.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.e2e.conftest import Stack
from tests.e2e.helpers import process_children, schema, wait_for

pytestmark = pytest.mark.e2e

PROCESSES = 2
CHANNELS = 24  # all on one process by chance: 2 × 2^-24


def _server_processes(stack: Stack) -> list[int]:
    pids = process_children(stack.server.pid)
    assert len(pids) == PROCESSES, pids
    return pids


def _established_on_port(pid: int, port: int) -> int:
    """Established TCP connections of process `pid` whose local port is `port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def test_connections_spread_over_the_processes_and_jobs_run(stack_factory: object) -> None:
    stack: Stack = stack_factory(settings={"DATAMILL_SERVER_PROCESSES": str(PROCESSES)})  # type: ignore[operator]
    pids = _server_processes(stack)
    port = int(stack.target.rpartition(":")[2])
    # A subchannel pool per channel: otherwise grpc shares one connection between channels to the same target.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(stack.target, options=options) for _ in range(CHANNELS)]
    try:
        job_ids = []
        for index, channel in enumerate(channels):
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            request = job_service_pb2.GenerateRequest(dataset_name=f"spread_{index}", schema=to_schema(schema(50)))
            job_ids.append(stub.Generate(request, timeout=10).job.id)
        connections = {pid: _established_on_port(pid, port) for pid in pids}
        assert sum(connections.values()) >= CHANNELS, connections
        assert all(count > 0 for count in connections.values()), connections
        with Client.connect(stack.target) as client:
            for job_id in job_ids:
                final = wait_for(lambda j=job_id: _terminal(client, j), timeout=60, what=f"job {job_id} to end")
                assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final
    finally:
        for channel in channels:
            channel.close()
    assert stack.server.stop() == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_dead_process_stops_the_set_with_status_1(stack_factory: object) -> None:
    settings = {"DATAMILL_SERVER_PROCESSES": str(PROCESSES)}
    stack: Stack = stack_factory(settings=settings, workers=0)  # type: ignore[operator]
    first, second = _server_processes(stack)
    os.kill(first, signal.SIGKILL)
    assert stack.server.proc is not None
    assert stack.server.proc.wait(timeout=30) == 1
    assert not Path(f"/proc/{second}").exists()  # stopped and reaped before the supervisor exited


def _terminal(client: Client, job_id: str) -> job_pb2.Job | None:
    job = client.get_job(job_id)
    ended = (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)
    return job if job.state in ended else None
